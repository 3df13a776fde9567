import ArgumentParser
import Foundation
import HotSwap
import ORTBackend
import Hummingbird
import Logging
import Metrics
import ONNXRuntime
import OpenInference
import OpenInferenceGRPC
import Primitives
import Prometheus
import Server
import ServiceLifecycle

/// `yoloswap serve`: the HTTP service, as a `Service` in a `ServiceGroup` that drains on SIGTERM / SIGINT.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the HTTP inference service with hot-swappable model slots.")

    @Option(help: "YAML configuration file (without one: the default slot with yolov3-tiny COCO on 127.0.0.1:8080).")
    var config: String?
    @Option(help: "Listen address (overrides the configuration and YOLOSWAP_HOST).") var host: String?
    @Option(help: "Listen port; 0 picks a free one (overrides the configuration and YOLOSWAP_PORT).") var port: Int?
    @Option(help: "Folder of the SQLite state and audit log (overrides state_dir).") var stateDir: String?
    @Option(help: "Folder models are loaded from (overrides model_repository).") var modelRepository: String?
    @Option(help: "Path to libonnxruntime.so (overrides ort_library).") var ortLibrary: String?
    @Option(help: "Desired-state document to apply and watch (a ConfigMap key; overrides desired_state).")
    var desiredState: String?
    @Option(help: "Write the bound port to this file once listening (for scripts and tests).") var portFile: String?
    @Option(help: "Write the gRPC endpoint's bound port to this file once listening (with a grpc section).")
    var grpcPortFile: String?

    func validate() throws {
        if let port, !ServerConfiguration.Limits.port.contains(port) {
            throw ValidationError("--port \(port) is not a port in 0...65535")
        }
    }

    func run() async throws {
        var logger = Logger(label: "yoloswap")
        logger.logLevel = ProcessInfo.processInfo.environment["YOLOSWAP_LOG_LEVEL"]
            .flatMap { Logger.Level(rawValue: $0) } ?? .info
        var configuration: ServerConfiguration
        if let config {
            configuration = try ServerConfiguration.load(path: config)
        } else {
            configuration = ServerConfiguration()
            configuration.anonymousDetect = true  // the built-in default has no tokens: detect stays usable
        }
        try configuration.applyEnvironment()
        let cwd = FileManager.default.currentDirectoryPath
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        if let stateDir { configuration.stateDirectory = URL(fileURLWithPath: stateDir, relativeTo:
            URL(fileURLWithPath: cwd + "/")).standardizedFileURL.path }
        if let modelRepository { configuration.modelRepository = URL(fileURLWithPath: modelRepository, relativeTo:
            URL(fileURLWithPath: cwd + "/")).standardizedFileURL.path }
        if let desiredState { configuration.desiredStatePath = URL(fileURLWithPath: desiredState, relativeTo:
            URL(fileURLWithPath: cwd + "/")).standardizedFileURL.path }
        // The gRPC endpoint's host, which `--host` may have set: an address it can listen on, checked before anything
        // starts.
        // A port file that cannot be written would leave whoever polls it waiting for good: refused at the start.
        if grpcPortFile != nil, configuration.grpc == nil {
            throw ValidationError("--grpc-port-file needs a grpc section in the configuration (no gRPC endpoint runs)")
        }
        for (option, path) in [("--port-file", portFile), ("--grpc-port-file", grpcPortFile)] {
            guard let path else { continue }
            let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
            guard access(folder, W_OK) == 0 else {
                throw ValidationError("\(option) \(path): its folder \(folder) cannot be written: "
                    + String(cString: strerror(errno)))
            }
        }
        if let grpcHost = configuration.grpcHost, !ServerConfiguration.GRPCSettings.isListenable(grpcHost) {
            throw ValidationError(GRPCHostError(host: grpcHost).description)
        }
        // Each connection is a descriptor: make room for the limit beside what the process itself keeps open
        // (models, databases, logs, the optimizer child's pipes), or keep the connections within the room there is.
        // The gRPC endpoint counts its connections apart, up to the same limit.
        let reserved = 256
        let endpoints = configuration.grpc == nil ? 1 : 2
        if let room = OpenFileLimit.raise(toAtLeast: configuration.maxConnections * endpoints + reserved),
           (room - reserved) / endpoints < configuration.maxConnections
        {
            let fitting = max((room - reserved) / endpoints, 1)
            logger.warning("server.max_connections lowered to fit the open-file limit (RLIMIT_NOFILE)", metadata: [
                "configured": "\(configuration.maxConnections)", "limit": "\(room)", "max_connections": "\(fitting)"])
            configuration.maxConnections = fitting
        }

        // Metrics: bootstrapped here, the only place that does.
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(10), .microseconds(100), .milliseconds(1), .milliseconds(2), .milliseconds(5),
            .milliseconds(10), .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(200),
            .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30),
        ]
        MetricsSystem.bootstrap(factory)

        try PrivateFiles.createDirectory(atPath: configuration.stateDirectory)
        let store = try StateStore(directory: configuration.stateDirectory)
        let services = try ServiceWiring.make(configuration: configuration, logger: logger)
        let library = try ORTLibrary.load(explicitPath: ortLibrary ?? configuration.ortLibrary)
        let cache = try configuration.optimizedCacheDirectory.map {
            try OptimizedModelCache.yoloswap(directory: $0, inChild: configuration.optimizeInChild)
        }
        if let reason = cache?.whyEntriesCannotBeWritten() {
            // Not fatal (every load still works, from the model file), but slower and costlier in memory.
            logger.warning("the optimized-model cache writes no entry: every load optimizes the model itself",
                metadata: ["reason": "\(reason)"])
        }
        let loader = ORTModelLoader(environment: try ORTEnvironment(library: library), cache: cache)
        let manager = ModelManager(configuration: configuration.hotSwap, loader: loader, verifier: services.verifier,
            store: store, logger: logger)
        let control = ControlPlane(manager: manager,
            repository: ModelRepository(root: configuration.modelRepository, stateDirectory: configuration.stateDirectory),
            routes: configuration.routes, audit: services.audit, logger: logger)
        let desired = DesiredStateReconciler(control: control)
        let portFile = self.portFile
        let portLogger = logger
        let host = configuration.host
        // One engine for /v2 and gRPC: one set of Triton statistics.
        let engine = OpenInferenceEngine(manager: manager,
            requestTimeout: .milliseconds(configuration.requestTimeoutMilliseconds), observer: control)
        let fleetAgent = try configuration.mqtt.map { mqtt in
            try FleetAgent(settings: mqtt, control: control, reconciler: desired,
                stateDirectory: configuration.stateDirectory, logger: logger)
        }
        let streams = YOLOSwapServer.makeStreamRegistry(control: control, configuration: configuration,
            logger: logger, publisher: fleetAgent?.streamOutput)
        let app = YOLOSwapServer.makeApplication(
            control: control, configuration: configuration,
            metricsText: { registry.emitToString() }, logger: logger, desired: desired, streams: streams,
            engine: engine,
            onServerRunning: { port in
                if let portFile { Self.writePort(port, to: portFile, logger: portLogger) }
                let banner = """
                    yoloswap serving on http://\(host):\(port)
                      detect:  curl -X POST --data-binary @models/images/bus.jpg -H 'Content-Type: image/jpeg' \
                    http://\(host):\(port)/v1/detect
                      health:  http://\(host):\(port)/healthz   ready: /readyz   metrics: /metrics   slots: /v1/slots

                    """
                // Not the service's business: a banner nobody can read (stdout closed, a full disk) is dropped.
                try? FileHandle.standardOutput.write(contentsOf: Data(banner.utf8))
            })
        // Services stop in reverse order: the loads under way cancelled, the video streams, the MQTT fleet agent
        // (publishing `offline`), the desired-state watcher and the sampler, then the HTTP server (draining its
        // requests), then the slots.
        var groupServices: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: SlotService(control: control, configuration: configuration, logger: logger,
                afterStart: { [configured = configuration.configuredStreams, logger] in
                    await YOLOSwapServer.startConfiguredStreams(configured, registry: streams, control: control,
                        logger: logger)
                })),
            .init(service: app), .init(service: MetricsSampler(manager: manager)),
        ]
        if let settings = configuration.grpc {
            let grpcPortFile = self.grpcPortFile
            groupServices.insert(.init(service: GRPCInferenceServer(
                settings: settings, host: configuration.grpcHost ?? configuration.host,
                service: InferenceService(engine: engine, control: control, configuration: configuration,
                    logger: logger),
                maxMessageBytes: configuration.maxBodyBytes,
                limits: GRPCConnectionLimits(maxConnections: configuration.maxConnections,
                    requestReadTimeout: .seconds(configuration.readTimeoutSeconds),
                    idleTimeout: .seconds(configuration.idleTimeoutSeconds)),
                logger: logger,
                onListening: { port in
                    if let grpcPortFile { Self.writePort(port, to: grpcPortFile, logger: portLogger) }
                })), at: 2)
        }
        if let path = configuration.desiredStatePath {
            groupServices.append(.init(service: DesiredStateFileService(path: path, reconciler: desired,
                logger: logger)))
        }
        if let fleetAgent { groupServices.append(.init(service: fleetAgent)) }
        // Late, so early to stop: the streams end (and their viewers' responses with them) before the other services.
        groupServices.append(.init(service: StreamService(registry: streams, control: control)))
        // Last of all, so first to stop: the loads under way end at once, not the shutdown waiting for them.
        groupServices.append(.init(service: LoadCancellationService(manager: control.manager)))
        let group = ServiceGroup(configuration: .init(
            services: groupServices,
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("server stopped")
    }

    /// Writes the bound port for scripts; a failure is logged (the start checked the folder, but the disk may be full).
    private static func writePort(_ port: Int, to path: String, logger: Logger) {
        do { try "\(port)\n".write(toFile: path, atomically: true, encoding: .utf8) } catch {
            logger.error("cannot write the port file", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }
}
