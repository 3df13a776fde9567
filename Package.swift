// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "YOLOSwap",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "yoloswap", targets: ["yoloswap"]),
        .library(name: "YOLO", targets: ["YOLO"]),
        .library(name: "ONNXRuntime", targets: ["ONNXRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // MARK: C modules (headers only; nothing third-party is committed)
        /// ORT's C API header, fetched by scripts/setup into .ort/include. No link: the library is dlopen'ed.
        .systemLibrary(name: "CONNXRuntime", path: "Sources/CONNXRuntime"),
        .systemLibrary(
            name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(
            name: "CSPNG", path: "Sources/CSPNG", pkgConfig: "spng", providers: [.apt(["libspng-dev"])]),
        /// libjpeg's decompression API (jpeglib.h, Debian's libjpeg62-turbo-dev) behind a small C shim that turns its
        /// longjmp error exits into return codes, which Swift cannot do itself. Used for decoding a JPEG in two bands.
        .target(name: "CJPEG", path: "Sources/CJPEG", linkerSettings: [.linkedLibrary("jpeg")]),

        // MARK: Libraries
        .target(
            name: "ONNXRuntime", dependencies: ["CONNXRuntime"],
            linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "ImageCodecs", dependencies: ["CTurboJPEG", "CSPNG", "CJPEG"]),
        /// Pure-Swift YOLO pipeline: letterbox, model signature, output decoders, NMS, drawing. No ORT types.
        .target(name: "YOLO", dependencies: ["ImageCodecs"]),
        /// The ORT implementation of YOLO's `InferenceBackend`, and model loading from verified bytes.
        .target(
            name: "ORTBackend",
            dependencies: [
                "YOLO", "ONNXRuntime",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),

        /// Slots, verified background loads, atomic switch, drain-then-release, rollback, persisted state.
        .target(
            name: "HotSwap",
            dependencies: [
                "YOLO", "ORTBackend",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        /// Ed25519 model signatures: key files, `MODEL.sig`, and a `ModelVerifier` for the load pipeline.
        .target(
            name: "ModelSigning",
            dependencies: ["HotSwap", .product(name: "Crypto", package: "swift-crypto")]),
        /// Tamper-evident audit log: hash-chained rows in SQLite.
        .target(
            name: "AuditLog",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),

        /// The HTTP service: Hummingbird app, routes, DTOs, auth, audit and metrics wiring, error → HTTP mapping.
        .target(
            name: "Server",
            dependencies: [
                "HotSwap", "YOLO", "ImageCodecs", "ModelSigning", "AuditLog",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ]),

        // MARK: Executable
        .executableTarget(
            name: "yoloswap",
            dependencies: [
                "YOLO", "ORTBackend", "ONNXRuntime", "ImageCodecs", "HotSwap", "ModelSigning", "AuditLog", "Server",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // MARK: Tests
        /// What the test targets share: the repository's files (found from Package.swift), temporary directories,
        /// running a program to completion. Foundation only, so any test target can use it.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "ImageCodecsTests", dependencies: ["ImageCodecs", "TestSupport"]),
        .testTarget(name: "ONNXRuntimeTests", dependencies: ["ONNXRuntime", "TestSupport"]),
        .testTarget(name: "YOLOTests", dependencies: ["YOLO", "ImageCodecs", "TestSupport"]),
        .testTarget(
            name: "HotSwapTests",
            dependencies: ["HotSwap", "YOLO", "ORTBackend", "ONNXRuntime", "ImageCodecs", "TestSupport"]),
        .testTarget(name: "ModelSigningTests", dependencies: ["ModelSigning", "HotSwap", "ORTBackend", "TestSupport"]),
        .testTarget(name: "AuditLogTests", dependencies: ["AuditLog", "TestSupport"]),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "Server", "HotSwap", "YOLO", "ONNXRuntime", "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["YOLO", "ImageCodecs", "ONNXRuntime", "ORTBackend", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
