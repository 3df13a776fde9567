import Foundation
import HotSwap
import Hummingbird
import HummingbirdCore
import Logging
import OpenInference
import Primitives
import ServiceLifecycle
import Streams

/// Builds the HTTP application and the services that run beside it.
public enum YOLOSwapServer {
    /// The Hummingbird application: problem-details errors, bearer authentication, the API routes.
    /// - Parameters:
    ///   - desired: the reconciler behind `/v1/desired` (shared with the desired-state file watcher); a new one when
    ///     nil.
    ///   - streams: the video streams behind `/v1/streams`; a new registry under the configuration's stream policy
    ///     when nil.
    ///   - engine: the Open Inference Protocol behind `/v2` (shared with the gRPC service, for one set of statistics); a
    ///     new one when nil.
    public static func makeApplication(
        control: ControlPlane, configuration: ServerConfiguration, metricsText: (@Sendable () -> String)?,
        logger: Logger, desired: DesiredStateReconciler? = nil, streams: StreamRegistry? = nil,
        engine: OpenInferenceEngine? = nil,
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: YOLOSwapRequestContext.self)
        let authenticator = TokenAuthenticator(configuration.tokens)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: AuthMiddleware(authenticator: authenticator, control: control))
        let api = APIRoutes(control: control, configuration: configuration, authenticator: authenticator,
            metricsText: metricsText, configuredSlots: configuration.slots.keys.sorted(),
            desired: desired ?? DesiredStateReconciler(control: control),
            streams: streams ?? makeStreamRegistry(control: control, configuration: configuration, logger: logger),
            viewers: ViewerAdmission(total: configuration.maxViewers, perPrincipal: configuration.maxViewersPerToken))
        api.register(on: router)
        V2Routes(api: api, engine: engine ?? OpenInferenceEngine(manager: control.manager,
            requestTimeout: .milliseconds(configuration.requestTimeoutMilliseconds), observer: control))
            .register(on: router)
        return Application(
            router: router,
            // A connection that sends nothing for this long is closed, and so is one whose request, once begun, does
            // not arrive in full within the read timeout: neither a silent nor a trickling client holds a connection.
            server: .http1(configuration: .init(
                additionalChannelHandlers: [
                    RequestReadTimeoutHandler(limit: .seconds(Int64(configuration.readTimeoutSeconds)))
                ],
                idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)))),
            // Past the connection limit, new connections wait in the listen backlog until one closes.
            configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                serverName: "yoloswap",
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections, logger: logger)),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
    }

    /// The video streams behind `/v1/streams`, under the configuration's stream policy: their frames count in the
    /// slots' releases (`ControlPlane` observes them); `publisher` is the `mqtt` output (the fleet agent's
    /// `streamOutput`), if the service has an MQTT connection.
    public static func makeStreamRegistry(control: ControlPlane, configuration: ServerConfiguration, logger: Logger,
                                          publisher: (any StreamPublisher)? = nil) -> StreamRegistry {
        StreamRegistry(policy: configuration.streamPolicy, maxStreams: configuration.maxStreams,
            maxPixels: configuration.streamMaxPixels, keepAliveInterval: configuration.streamKeepAlive, logger: logger,
            observer: control, publisher: publisher, slots: { [manager = control.manager] in manager.slot($0) })
    }

    /// Starts the streams of `streams.run`, each audited as `stream.start` by `system`. One that cannot start (its
    /// slot does not exist, its file has gone) is logged and audited as refused; the others start regardless.
    public static func startConfiguredStreams(_ specs: [StreamSpec], registry: StreamRegistry, control: ControlPlane,
                                              logger: Logger) async {
        for spec in specs {
            let name = spec.name ?? "-"
            do {
                let slot = try control.slotName(explicit: spec.slot, product: nil)
                // Off the cooperative pool, as the route creates them.
                let request = spec.request(slot: slot)
                let stream = try await StreamRoutes.creating.run { try registry.create(request) }
                await control.auditStream("stream.start", stream.currentStatus, by: ControlPlane.system, from: nil,
                    reason: "configured in streams.run")
            } catch StreamError.shuttingDown {
                // The service began to stop while its slots came up: nothing to start, nothing refused.
                logger.info("configured stream not started: shutting down", metadata: ["stream": "\(name)"])
                return
            } catch {
                let reason = (error as? StreamError)?.description ?? Problem.from(error).detail
                logger.error("configured stream not started", metadata: ["stream": "\(name)", "error": "\(reason)"])
                try? await control.audit(ControlPlane.system, nil, "stream.start", spec.slot, result: "refused",
                    reason: "stream \(name) (configured in streams.run): \(reason)", started: Date())
            }
        }
    }

    /// Brings every slot up: the committed state is restored (re-verified by SHA-256); configured slots without a
    /// committed state load their configured model (audited as a `load` by `system`). Failures are logged and leave
    /// the slot not ready.
    /// - Throws: `ControlError.stateUnreadable` when the committed state cannot be read: no model is loaded (the
    ///   configured ones would overwrite it), and the service does not start.
    public static func startSlots(control: ControlPlane, configuration: ServerConfiguration, logger: Logger)
        async throws
    {
        let manager = control.manager
        let startedAt = Date()
        // Ready once the active models are back; the standbys follow in their slots' queues.
        let repository = control.repository
        let restored = try await manager.restore(standbysInBackground: true) { record in
            repository.contains(record.path) ? nil : "it lies outside the model repository"
        }
        for event in restored {
            await control.auditRestore(event)
            logger.info("slot restored", metadata: ["slot": "\(event.slot)", "result": "\(event.result.rawValue)",
                "model": "\(event.to?.id ?? "-")", "reason": "\(event.reason ?? "")"])
        }
        for (name, slot) in configuration.slots.sorted(by: { $0.key < $1.key }) {
            if await manager.isShuttingDown { break }
            if manager.slot(name)?.roles.active != nil { continue }
            if manager.slot(name) == nil { _ = try? await manager.createSlot(name) }
            // A change like any other: a first start's model, or the one that replaces a committed model that could
            // not be restored, is in the audit log.
            let started = Date()
            await control.auditConfiguredLoad(slot: name, model: slot.model, version: slot.version,
                sha256: slot.sha256, result: "intent", reason: "activate the configured model", started: started)
            do {
                let path = try await control.repository.resolve(slot.model)
                let status = try await manager.loadAndActivate(LoadRequest(slot: name, path: path,
                    version: slot.version, expectedSHA256: slot.sha256, allowSchemaChange: true))
                await control.auditConfiguredLoad(slot: name, model: slot.model, version: status.identity?.version,
                    sha256: status.identity?.sha256, result: "succeeded", reason: nil, started: started)
            } catch {
                let reason = Problem.from(error).detail
                await control.auditConfiguredLoad(slot: name, model: slot.model, version: slot.version,
                    sha256: slot.sha256, result: "failed", reason: reason, started: started)
                logger.error("slot has no model", metadata: ["slot": "\(name)", "model": "\(slot.model)",
                    "error": "\(reason)"])
            }
        }
        // Stopping already (its loads cancelled as the shutdown began, `LoadCancellationService`): not started — no
        // release resumed, /readyz not 200, no configured stream begun while the other services stop.
        if await manager.isShuttingDown { return }
        await control.resumeReleases()
        let closed = await control.reconcileInterruptedIntents(before: startedAt)
        if closed > 0 {
            logger.warning("audit: intents left open by the previous run closed", metadata: ["count": "\(closed)"])
        }
        // Again, in the manager's turn: a shutdown may have begun while the releases resumed.
        await manager.unlessShuttingDown { control.markStarted() }
    }
}

/// The slots' lifetime as a service: brings them up when the group starts (until then `/readyz` answers 503; a
/// graceful shutdown during start-up cancels the loads under way), and at graceful shutdown — after the HTTP server,
/// which the group stops first, has drained — shuts the manager down (loads cancelled, workers stopped, models
/// released) and writes the audit entries still pending.
///
/// Put it before the HTTP application in the `ServiceGroup`: services stop in reverse order.
public struct SlotService: Service {
    let control: ControlPlane
    let configuration: ServerConfiguration
    let logger: Logger
    let afterStart: (@Sendable () async -> Void)?

    /// - Parameter afterStart: runs once the slots are up, unless this service has been told to stop (the configured
    ///   streams start there; the services after it in the group may already be stopping).
    public init(control: ControlPlane, configuration: ServerConfiguration, logger: Logger,
                afterStart: (@Sendable () async -> Void)? = nil) {
        self.control = control
        self.configuration = configuration
        self.logger = logger
        self.afterStart = afterStart
    }

    public func run() async throws {
        let manager = control.manager
        try await withGracefulShutdownHandler {
            try await YOLOSwapServer.startSlots(control: control, configuration: configuration, logger: logger)
            if control.hasStarted, !Task.isCancelled, !Task.isShuttingDownGracefully, await !manager.isShuttingDown,
               let afterStart
            {
                await afterStart()
            }
        } onGracefulShutdown: {
            // A signal only: loads under way (restores, configured models) end cancelled and the start-up returns;
            // `shutdown()` below cancels again and waits. (`LoadCancellationService` cancels them first.)
            Task { await manager.cancelLoads(reason: "shutting down") }
        }
        try? await gracefulShutdown()
        logger.info("releasing models")
        // A release's candidate still loading is cut off, not waited for (one in its golden-set gate stops scoring at
        // the next image); either way its record is left as it was, to be resumed at the next start.
        await manager.cancelLoads(reason: "shutting down")
        await control.stopReleases()
        await manager.shutdown()
        await control.drain()
    }
}

/// The video streams' lifetime as a service: at graceful shutdown the registry refuses new streams (503), every
/// stream is stopped (FFmpeg killed and reaped, each recorded in the audit log as `stream.stop` by `system`), which also
/// ends their results and preview viewers' responses, so that the HTTP server can drain; then the MQTT outputs get
/// up to 5 s to publish what they hold, the streams' ends included.
///
/// Put it after the HTTP application and the MQTT fleet agent in the `ServiceGroup`: services stop in reverse order,
/// so the streams stop first, while their outputs can still deliver the final events.
public struct StreamService: Service {
    let registry: StreamRegistry
    let control: ControlPlane

    public init(registry: StreamRegistry, control: ControlPlane) {
        self.registry = registry
        self.control = control
    }

    public func run() async throws {
        try? await gracefulShutdown()
        registry.close()
        // All at once: a shutdown waits for the slowest stream's stop, not for the sum of them.
        await withTaskGroup(of: Void.self) { group in
            for stream in registry.all where !stream.isFinished {
                group.addTask {
                    await stream.stop()
                    await control.auditStream("stream.stop", stream.currentStatus, by: ControlPlane.system, from: nil,
                        reason: "shutting down")
                }
            }
        }
        await registry.waitForOutputs(within: .seconds(5))
    }
}

/// Cancels the loads under way as soon as a graceful shutdown begins. Put it last in the `ServiceGroup`, so that it is
/// told first: the services before it wait for the loads they started (a `load?wait=true` request the HTTP server
/// drains, a desired-state apply, an MQTT command), and `SlotService`, which cancels them too, is told last — a
/// shutdown otherwise lasted a whole load and warm-up, past a container's termination grace. A load cancelled so has
/// its outcome recorded (`cancelled`); the committed state is untouched, and the next start restores it. Restores go
/// on (a resource-preserving load cancelled after its old model left brings it back, to serve through the drain).
public struct LoadCancellationService: Service {
    let manager: ModelManager

    public init(manager: ModelManager) { self.manager = manager }

    public func run() async throws {
        try? await gracefulShutdown()
        // Restores go on: a slot a failed swap emptied serves again while the requests drain.
        await manager.cancelLoads(reason: "shutting down", keepingRestores: true)
    }
}

/// Samples gauges every `interval` and counts swap events, for as long as the service group runs.
public struct MetricsSampler: Service {
    let manager: ModelManager
    let interval: Duration
    /// Reads `/proc` off the cooperative pool.
    private let procReader = BlockingQueue(label: "yoloswap.metrics")

    public init(manager: ModelManager, interval: Duration = .seconds(1)) {
        self.manager = manager
        self.interval = interval
    }

    public func run() async throws {
        let events = manager.events()
        await withTaskGroup(of: Void.self) { group in
            // Counts events until the sampling loop ends and cancels it.
            group.addTask { for await event in events { ServerMetrics.swapEvent(event) } }
            var info: [String: [(String, String)]] = [:]
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                let rss = await procReader.run { ProcessMemory.residentBytes() }
                ServerMetrics.sample(manager: manager, residentBytes: rss, previousInfo: &info)
                try? await Task.sleep(for: interval)
            }
            group.cancelAll()
        }
    }
}
