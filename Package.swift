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
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
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
        /// libmosquitto, the Eclipse Mosquitto project's MQTT client library.
        .systemLibrary(
            name: "CMosquitto", path: "Sources/CMosquitto", pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]),

        // MARK: Libraries (each imports only what it declares; the graph runs one way, top to bottom)
        /// What every module may share: `Locked`, the hex codec, streaming SHA-256 of a file, `Duration` helpers,
        /// a queue for blocking work.
        .target(name: "Primitives", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(
            name: "ONNXRuntime", dependencies: ["CONNXRuntime"],
            linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "ImageCodecs", dependencies: ["CTurboJPEG", "CSPNG", "CJPEG"]),
        /// Linux inotify (Glibc) behind a small Swift type: a directory watched on its own thread, debounced changes
        /// of named entries as an `AsyncStream` (a ConfigMap volume's atomic swaps, an editor's rename).
        .target(name: "FileWatch", dependencies: ["Primitives"]),
        /// An MQTT 3.1.1 / 5 client over libmosquitto: TLS, credentials, QoS 1, persistent sessions, reconnection with
        /// backoff, last will; its network loop on a thread of its own, messages and events as `AsyncStream`s.
        .target(name: "MQTT", dependencies: ["CMosquitto", "Primitives"]),
        /// Video decoding by the `ffmpeg` program as a child process: RGB24 frames over a pipe, each frame's size and
        /// pts from its `showinfo` filter; sources (files, network, V4L2), bounded frame sizes, the child always reaped.
        .target(name: "VideoDecoding", dependencies: ["ImageCodecs", "Primitives"]),
        /// Pure-Swift YOLO pipeline: letterbox, model schema, output decoders, NMS, drawing. No ORT types.
        .target(name: "YOLO", dependencies: ["ImageCodecs", "Primitives"]),
        /// Slots, verified background loads, atomic switch, drain-then-release, rollback, persisted state. Defines
        /// the loader and verifier protocols it needs; knows nothing of ONNX Runtime.
        .target(
            name: "HotSwap",
            dependencies: [
                "YOLO", "ImageCodecs", "Primitives",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        /// The ORT implementation of YOLO's `InferenceBackend` and of HotSwap's `ModelLoader`; the optimized-model
        /// cache.
        .target(
            name: "ORTBackend",
            dependencies: [
                "HotSwap", "YOLO", "ONNXRuntime", "Primitives",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        /// Video streams detected frame by frame on a slot's active model through swaps: the runner, back-pressure,
        /// reconnects, the source policy, results and preview subscriptions.
        .target(
            name: "Streams",
            dependencies: [
                "HotSwap", "YOLO", "ImageCodecs", "VideoDecoding", "Primitives",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        /// Ed25519 model signatures: key files, `MODEL.sig`, and a verifier of a model file's digest.
        .target(
            name: "ModelSigning",
            dependencies: ["Primitives", .product(name: "Crypto", package: "swift-crypto")]),
        /// COCO-format ground truth and COCO's detection metrics (mAP@[.5:.95], per-class AP), as pycocotools
        /// computes them; golden sets (a data set a `Detector` is run on and scored).
        .target(name: "Evaluation", dependencies: ["YOLO", "Primitives"]),
        /// The fleet's wire protocol over MQTT: topics, operator-signed envelopes (Ed25519, ModelSigning's key files),
        /// commands, desired-state documents and results, and the guard against stale and replayed messages.
        .target(
            name: "Fleet",
            dependencies: ["ModelSigning", "Primitives", .product(name: "Crypto", package: "swift-crypto")]),
        /// Tamper-evident audit log: hash-chained rows in SQLite.
        .target(
            name: "AuditLog",
            dependencies: [
                "Primitives",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),
        /// Safe releases to real traffic: a candidate beside the active model, routed by canary, shadow or A/B;
        /// per-variant figures (HDR histograms), detection agreement, sliding-window gates, persisted records.
        .target(
            name: "Releases",
            dependencies: [
                "HotSwap", "YOLO", "Primitives",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        /// The Open Inference Protocol (KServe v2 / Triton) over the slots, free of any transport: tensors, the two
        /// input conventions (raw tensor, encoded image), metadata, configuration, statistics. HTTP (`Server`) and gRPC
        /// speak it.
        .target(name: "OpenInference", dependencies: ["HotSwap", "YOLO", "Primitives"]),
        /// The HTTP service: Hummingbird app, routes, DTOs, auth, audit and metrics wiring, error → HTTP mapping.
        .target(
            name: "Server",
            dependencies: [
                "HotSwap", "YOLO", "ImageCodecs", "AuditLog", "Primitives", "FileWatch", "Releases", "Evaluation",
                "MQTT", "Fleet", "ModelSigning", "Streams", "OpenInference",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "MultipartKit", package: "multipart-kit"),
            ],
            // The web console, compiled into the binary (`PackageResources`): nothing to ship beside it.
            resources: [
                .embedInCode("Console/index.html"), .embedInCode("Console/console.js"),
                .embedInCode("Console/console.css"),
            ]),
        /// The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, wire-compatible with Triton's
        /// grpc_service.proto): generated messages and service (Generated/, from scripts/generate-grpc), the service
        /// over `OpenInference` and the `Server`'s control plane, its server as a `Service`. The HTTP service does not
        /// depend on it.
        .target(
            name: "OpenInferenceGRPC",
            dependencies: [
                "OpenInference", "Server", "HotSwap", "Primitives",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        /// Test doubles for the layers above ONNX Runtime: a fake backend and loader, gates, a slow state store.
        /// Lets the HotSwap, Server and ModelSigning tests build and run without ORT.
        .target(name: "HotSwapTesting", dependencies: ["HotSwap", "YOLO", "Primitives"]),
        /// The bodies of the libFuzzer targets (one per parser of untrusted bytes), as plain code: the fuzz build
        /// drives them with libFuzzer, the test suite replays the committed corpus through them (see Fuzzing below).
        .target(
            name: "FuzzHarnesses",
            dependencies: [
                "ImageCodecs", "YOLO", "Server", "ModelSigning",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Fuzz/Sources/FuzzHarnesses"),

        // MARK: Executable
        .executableTarget(
            name: "yoloswap",
            dependencies: [
                "YOLO", "ORTBackend", "ONNXRuntime", "ImageCodecs", "HotSwap", "ModelSigning", "AuditLog", "Server",
                "Primitives", "Evaluation", "Releases", "Fleet", "MQTT", "Streams", "VideoDecoding", "OpenInference",
                "OpenInferenceGRPC",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // MARK: Tests
        /// What the test targets share: the repository's files (found from Package.swift), the fixture models and
        /// photos, temporary directories, running a program to completion, polling with a deadline.
        .target(name: "TestSupport", dependencies: ["Primitives"], path: "Tests/TestSupport"),
        .testTarget(name: "ImageCodecsTests", dependencies: ["ImageCodecs", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "ONNXRuntimeTests", dependencies: ["ONNXRuntime", "Primitives", "TestSupport"]),
        .testTarget(name: "YOLOTests", dependencies: ["YOLO", "ImageCodecs", "Primitives", "TestSupport"]),
        // HotSwap, ModelSigning, AuditLog and Server tests build and run without ONNX Runtime.
        .testTarget(
            name: "HotSwapTests",
            dependencies: ["HotSwap", "HotSwapTesting", "YOLO", "Primitives", "TestSupport"]),
        .testTarget(
            name: "ModelSigningTests",
            dependencies: [
                "ModelSigning", "HotSwap", "YOLO", "TestSupport",
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        .testTarget(name: "AuditLogTests", dependencies: ["AuditLog", "Primitives", "TestSupport"]),
        .testTarget(name: "FileWatchTests", dependencies: ["FileWatch", "Primitives", "TestSupport"]),
        /// The MQTT client against a real Mosquitto broker the tests start (TLS, password file).
        .testTarget(name: "MQTTTests", dependencies: ["MQTT", "Primitives", "TestSupport"]),
        .testTarget(name: "FleetTests", dependencies: ["Fleet", "ModelSigning"]),
        .testTarget(
            name: "ReleasesTests",
            dependencies: ["Releases", "HotSwap", "HotSwapTesting", "YOLO", "Primitives", "TestSupport"]),
        .testTarget(
            name: "ServerTests",
            dependencies: [
                "Server", "HotSwap", "HotSwapTesting", "AuditLog", "Primitives", "TestSupport", "Releases", "MQTT",
                "Fleet", "ModelSigning", "Streams",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]),
        /// Hot swapping real ONNX Runtime sessions, and the optimized-model cache.
        .testTarget(
            name: "ORTBackendTests",
            dependencies: [
                "ORTBackend", "HotSwap", "HotSwapTesting", "ONNXRuntime", "YOLO", "ImageCodecs", "Primitives",
                "TestSupport",
            ]),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "TestSupport", "YOLO", "HotSwapTesting"]),
        .testTarget(name: "FuzzReplayTests", dependencies: ["FuzzHarnesses", "Primitives", "TestSupport"]),
        /// Streams on real video (ffmpeg-generated) and real ONNX Runtime sessions swapped while they run.
        .testTarget(
            name: "StreamsTests",
            dependencies: [
                "Streams", "VideoDecoding", "ORTBackend", "HotSwap", "ONNXRuntime", "YOLO", "ImageCodecs",
                "Primitives", "TestSupport",
            ]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["YOLO", "ImageCodecs", "ONNXRuntime", "ORTBackend", "HotSwap", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)

// MARK: Fuzzing (only with YOLOSWAP_FUZZ=1; see README → Fuzzing and Fuzz/)
/// libFuzzer targets, one per parser that sees untrusted bytes: each drives its harness (`FuzzHarnesses`, above)
/// with libFuzzer. They link only when built with `-sanitize=fuzzer` (`make fuzz`), so they are declared only when
/// YOLOSWAP_FUZZ is set: the plain and test builds never see them.
if Context.environment["YOLOSWAP_FUZZ"] != nil {
    package.targets.append(.target(name: "FuzzSupport", path: "Fuzz/Sources/FuzzSupport"))
    let fuzzTargets = [
        "FuzzImageDecode", "FuzzFusedLetterbox", "FuzzMultipart", "FuzzSigningFiles", "FuzzConfiguration",
        "FuzzModelOutput",
    ]
    for target in fuzzTargets {
        package.targets.append(
            .executableTarget(
                name: target, dependencies: ["FuzzSupport", "FuzzHarnesses"], path: "Fuzz/Sources/\(target)"))
        package.products.append(.executable(name: target, targets: [target]))
    }
}
