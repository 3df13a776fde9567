import Foundation
import HotSwap
import Hummingbird
import Logging
import ServiceLifecycle

/// Builds the HTTP application and the services that run beside it.
public enum YOLOSwapServer {
    /// The Hummingbird application: problem-details errors, bearer authentication, the API routes.
    public static func makeApplication(
        control: ControlPlane, configuration: ServerConfiguration, auditReader: (any AuditReader)?,
        metricsText: (@Sendable () -> String)?, logger: Logger,
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: YOLOSwapRequestContext.self)
        let authenticator = TokenAuthenticator(configuration.tokens)
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: AuthMiddleware(authenticator: authenticator))
        APIRoutes(control: control, configuration: configuration, authenticator: authenticator,
            auditReader: auditReader, metricsText: metricsText,
            configuredSlots: configuration.slots.keys.sorted()).register(on: router)
        return Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                serverName: "yoloswap"),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
            logger: logger)
    }

    /// Brings every slot up: the committed state is restored (re-verified by SHA-256); configured slots without a
    /// committed state load their configured model. Failures are logged and leave the slot not ready.
    public static func startSlots(control: ControlPlane, configuration: ServerConfiguration, logger: Logger) async {
        let manager = control.manager
        for event in await manager.restore() {
            logger.info("slot restored", metadata: ["slot": "\(event.slot)", "result": "\(event.result.rawValue)",
                "model": "\(event.to?.id ?? "-")", "reason": "\(event.reason ?? "")"])
        }
        for (name, slot) in configuration.slots.sorted(by: { $0.key < $1.key }) {
            if manager.slot(name)?.roles.active != nil { continue }
            if manager.slot(name) == nil { _ = try? await manager.createSlot(name) }
            do {
                let path = try control.repository.resolve(slot.model)
                _ = try await manager.loadAndActivate(LoadRequest(slot: name, path: path, version: slot.version,
                    expectedSHA256: slot.sha256, allowSchemaChange: true))
            } catch {
                logger.error("slot has no model", metadata: ["slot": "\(name)", "model": "\(slot.model)",
                    "error": "\(Problem.from(error).detail)"])
            }
        }
    }
}

/// Samples gauges every `interval` and counts swap events, for as long as the service group runs.
public struct MetricsSampler: Service {
    let manager: ModelManager
    let interval: Duration

    public init(manager: ModelManager, interval: Duration = .seconds(1)) {
        self.manager = manager
        self.interval = interval
    }

    public func run() async throws {
        let events = await manager.events()
        let consumer = Task { for await event in events { ServerMetrics.swapEvent(event) } }
        defer { consumer.cancel() }
        var info: [String: [(String, String)]] = [:]
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            ServerMetrics.sample(manager: manager, previousInfo: &info)
            try? await Task.sleep(for: interval)
        }
    }
}
