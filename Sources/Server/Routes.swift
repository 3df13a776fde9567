import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import NIOCore
import Primitives
import Streams
import YOLO

/// The HTTP API. Handlers parse, authorize and call the `ControlPlane`; nothing else.
struct APIRoutes: Sendable {
    let control: ControlPlane
    let configuration: ServerConfiguration
    let authenticator: TokenAuthenticator
    let metricsText: (@Sendable () -> String)?
    let configuredSlots: [String]
    let desired: DesiredStateReconciler
    let streams: StreamRegistry
    /// The long responses open (event streams, stream results and previews), capped.
    let viewers: ViewerAdmission

    static let productHeaders = [HTTPField.Name("X-Product")!, HTTPField.Name("X-Work-Order")!]
    /// The largest JSON request body (load, routes).
    static let maxJSONBytes = 1 << 20

    func register(on router: Router<YOLOSwapRequestContext>) {
        registerHealth(on: router)
        let v1 = router.group("v1")
        v1.post("detect") { request, context in try await detect(request, context) }
        registerSlots(on: v1)
        registerReleases(on: v1)
        registerOperations(on: v1)
        registerRoutesEventsAudit(on: v1)
        registerDesired(on: v1)
        registerConsoleAPI(on: v1)
        registerConsole(on: router)
        StreamRoutes(api: self, registry: streams).register(on: v1)
    }

    /// `/healthz`, `/readyz`, `/metrics`.
    private func registerHealth(on router: Router<YOLOSwapRequestContext>) {
        router.get("healthz") { _, _ in HealthDTO(status: "ok") }
        router.get("readyz") { _, _ in try ready() }
        router.get("metrics") { _, context in
            if configuration.metricsRequireToken { _ = try require(.viewer, context) }
            guard let metricsText else { throw Problem.notFound("metrics are not enabled") }
            desired.refreshMetrics()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: ServerMetrics.addingHelp(to: metricsText()))))
        }
    }

    /// Reading slots and operations, and loading into a slot.
    private func registerSlots(on v1: RouterGroup<YOLOSwapRequestContext>) {
        v1.get("slots") { _, context in
            _ = try require(.viewer, context)
            var slots: [SlotDTO] = []
            for name in control.manager.slotNames { slots.append(try await control.slotDTO(name)) }
            return SlotListDTO(slots: slots)
        }
        v1.get("slots/:slot") { _, context in
            _ = try require(.viewer, context)
            return try await control.slotDTO(try context.parameters.require("slot"))
        }
        v1.post("slots/:slot/load") { request, context in
            let principal = try await requireOperator(request, context)
            let slot = try context.parameters.require("slot")
            // A bad value refused before anything starts.
            let (wait, body) = try await parsedChange(request, context) {
                (try boolParameter(request, "wait"), try await decode(LoadBody.self, request, context))
            }
            let load = try await control.load(slot: slot, body: body, by: principal, from: context.remoteAddress)
            let dto = { OperationDTO(load.operation, repository: control.repository) }
            if wait {
                let status = try await load.recordedOutcome()
                return try json(dto(), status: status.stage == .ready ? .ok : .unprocessableContent)
            }
            return try json(dto(), status: .accepted)
        }
        v1.get("operations/:id") { _, context in
            _ = try require(.viewer, context)
            let id = try context.parameters.require("id")
            guard let op = await control.manager.operation(id) else { throw Problem.notFound("no operation '\(id)'") }
            return OperationDTO(op, repository: control.repository)
        }
    }

    /// Switch, rollback, discard: each answers with the event it produced (paths relative to the repository).
    private func registerOperations(on v1: RouterGroup<YOLOSwapRequestContext>) {
        let hide = control.repository.hidingRoot
        v1.post("slots/:slot/switch") { request, context in
            let principal = try await requireOperator(request, context)
            let event = try await control.switchStaged(slot: try context.parameters.require("slot"), by: principal,
                from: context.remoteAddress)
            return try json(event.mappingPaths(hide), status: .ok)
        }
        v1.post("slots/:slot/rollback") { request, context in
            let principal = try await requireOperator(request, context)
            let event = try await control.rollback(slot: try context.parameters.require("slot"), by: principal,
                from: context.remoteAddress)
            return try json(event.mappingPaths(hide), status: .ok)
        }
        v1.delete("slots/:slot/staged") { request, context in
            let principal = try await requireOperator(request, context)
            let event = try await control.discardStaged(slot: try context.parameters.require("slot"), by: principal,
                from: context.remoteAddress)
            return try json(event.mappingPaths(hide), status: .ok)
        }
    }

    /// Product routes, the event log, the audit log.
    private func registerRoutesEventsAudit(on v1: RouterGroup<YOLOSwapRequestContext>) {
        v1.get("routes") { _, context in
            _ = try require(.viewer, context)
            return RoutesDTO(routes: control.routes)
        }
        v1.put("routes") { request, context in
            let principal = try await requireOperator(request, context)
            let body = try await parsedChange(request, context) { try await decode(RoutesDTO.self, request, context) }
            try await control.replaceRoutes(body.routes, by: principal, from: context.remoteAddress)
            return RoutesDTO(routes: control.routes)
        }
        v1.get("events") { request, context in
            _ = try require(.viewer, context)
            let q = request.uri.queryParameters
            let limit = try intParameter(q.get("limit"), name: "limit", default: 100, range: 1...1000)
            if let slot = q.get("slot") { try checkSlotFilter(slot) }
            let events = control.manager.recentEvents(slot: q.get("slot"), limit: limit)
            let hide = control.repository.hidingRoot
            return try json(EventListDTO(events: events.map { $0.mappingPaths(hide) }), status: .ok)
        }
        v1.get("audit/head") { _, context in
            _ = try require(.viewer, context)
            guard let audit = control.audit else { throw Problem.notFound("the audit log is not enabled") }
            guard let head = try await audit.head() else { throw Problem.notFound("the audit log is empty") }
            return try json(head, status: .ok)
        }
        v1.get("audit") { request, context in
            // Who did what to which model is for the people who run the service, not every viewer.
            _ = try require(.operator, context)
            guard let audit = control.audit else { throw Problem.notFound("the audit log is not enabled") }
            let q = request.uri.queryParameters
            let limit = try intParameter(q.get("limit"), name: "limit", default: 100, range: 1...10_000)
            var since: Date?
            if let text = q.get("since") {
                // Years 1…9999 (the audit log's own times lie well within).
                guard let date = ISO8601DateFormatter().date(from: text),
                    (-62_135_596_800...253_402_300_799).contains(date.timeIntervalSince1970)
                else {
                    throw Problem.badRequest("since must be an ISO 8601 time such as 2026-01-31T12:00:00Z")
                }
                since = date
            }
            let entries = try await audit.entries(slot: q.get("slot"), since: since, limit: limit)
            return try json(AuditListDTO(entries: entries), status: .ok)
        }
    }

    // MARK: Handlers

    private func ready() throws -> Response {
        guard control.hasStarted else {
            return try json(HealthDTO(status: "starting", slots: nil), status: .serviceUnavailable)
        }
        var states: [String: String] = [:]
        for name in configuredSlots {
            states[name] = control.manager.slot(name)?.roles.active == nil ? "no active model" : "ready"
        }
        let allReady = states.values.allSatisfy { $0 == "ready" }
        return try json(HealthDTO(status: allReady ? "ready" : "not ready", slots: states),
            status: allReady ? .ok : .serviceUnavailable)
    }

    private func detect(_ request: Request, _ context: YOLOSwapRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        // Every request that ends is counted, refused ones too (no token, an unknown route, a bad body, a body too
        // large or too late): under its slot once that is known, else under "unknown" (a name from the request
        // would add a series per name sent).
        var slotLabel = "unknown"
        do {
            return try await detect(request, context, started: started) { slotLabel = $0 }
        } catch {
            control.recordRequest(slot: slotLabel, model: nil, status: Int(Problem.from(error).status.code),
                milliseconds: (ContinuousClock.now - started).milliseconds)
            throw error
        }
    }

    /// `detect` once counted: `resolved` is told the slot's name once it is known.
    private func detect(_ request: Request, _ context: YOLOSwapRequestContext, started: ContinuousClock.Instant,
                        resolved: (String) -> Void) async throws -> Response {
        if context.principal == nil, !configuration.anonymousDetect { _ = try require(.viewer, context) }
        let q = request.uri.queryParameters
        let product = Self.productHeaders.lazy.compactMap { request.headers[$0] }.first
        let slotName = try control.slotName(explicit: q.get("slot"), product: product)
        guard let slot = control.manager.slot(slotName) else { throw ControlError.unknownSlot(slotName) }
        resolved(slotName)
        var options = DetectionOptions()
        options.confidence = Float(try doubleParameter(q.get("conf"), name: "conf", default: 0.25))
        options.iou = Float(try doubleParameter(q.get("iou"), name: "iou", default: 0.7))
        options.maxDetections = try intParameter(q.get("max_det"), name: "max_det", default: 300,
            range: 1...DetectionOptions.maxDetectionsLimit)
        if let classes = q.get("classes"), !classes.isEmpty {
            let ids = classes.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            // `classes=,` has no id: an empty filter would drop every detection, answered 200 with none.
            guard !ids.isEmpty, ids.allSatisfy({ ($0 ?? -1) >= 0 }) else {
                throw Problem.badRequest(
                    "classes must be comma-separated class ids, got '\(classes.prefix(utf8Bytes: 64))'")
            }
            options.classes = Set(ids.compactMap { $0 })
        }
        // The deadline counts from the request's arrival: reading the body spends it too.
        let deadline = started + .milliseconds(configuration.requestTimeoutMilliseconds)
        let bytes = try await readBody(by: deadline, timeoutMilliseconds: configuration.requestTimeoutMilliseconds) {
            [self] in try await imageBytes(request)
        }
        let key = control.releaseStickyHeader(slot: slotName).flatMap { HTTPField.Name($0) }
            .flatMap { request.headers[$0] }
        let result = try await control.detect(on: slot, bytes: bytes, options: options,
            context: RoutingContext(product: product, key: key), deadline: deadline)
        let total = (ContinuousClock.now - started).milliseconds
        control.recordRequest(slot: slotName, model: result.model.id, status: 200, milliseconds: total)
        let t = result.result.timings
        ServerMetrics.stages(slot: slotName, preprocess: t.preprocess, inference: t.inference,
            postprocess: t.postprocess, queue: result.queueMilliseconds)
        var answer = DetectResponseDTO(result, totalMilliseconds: total)
        answer.request_id = control.rememberForFeedback(slot: slotName, result)
        return try json(answer, status: .ok)
    }

    /// The image: the raw body (image/jpeg, image/png, application/octet-stream) or the multipart field `image`.
    private func imageBytes(_ request: Request) async throws -> [UInt8] {
        let contentType = request.headers[.contentType] ?? ""
        let mediaType = contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) }?
            .lowercased() ?? ""
        let raw = ["image/jpeg", "image/jpg", "image/png", "application/octet-stream"]
        guard raw.contains(mediaType) || mediaType == "multipart/form-data" else {
            throw Problem(.unsupportedMediaType, "Unsupported Media Type",
                detail: "send image/jpeg, image/png or multipart/form-data with a field 'image' (got "
                    + "'\(mediaType.prefix(utf8Bytes: 64))')")
        }
        let tooLarge = Problem(.contentTooLarge, "Content Too Large",
            detail: "the body is larger than the limit of \(configuration.maxBodyBytes) bytes")
        guard mediaType == "multipart/form-data" else {
            var buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
            } catch is NIOTooManyBytesError { throw tooLarge }
            let body = buffer.readBytes(length: buffer.readableBytes) ?? []
            guard !body.isEmpty else { throw Problem.badRequest("the request body is empty: send an image") }
            return body
        }
        // Parsed as it arrives, in bounded steps; the whole body is still read so that the size limit holds.
        let reader = try MultipartFieldReader(contentType: contentType, field: "image")
        var received = 0
        for try await chunk in request.body {
            received += chunk.readableBytes
            guard received <= configuration.maxBodyBytes else { throw tooLarge }
            try await reader.feed(chunk)
        }
        return try reader.content()
    }

    // MARK: Helpers

    /// `require(.operator, context)` for a call that changes the service: a refusal is recorded in the audit log.
    func requireOperator(_ request: Request, _ context: YOLOSwapRequestContext) async throws -> Principal {
        do { return try require(.operator, context) } catch let problem as Problem {
            await control.auditRefusal(context.principal, context.remoteAddress,
                action: "\(request.method.rawValue) \(request.uri.path)",
                reason: "\(problem.status.code) \(problem.detail)")
            throw problem
        }
    }

    /// Takes an operator's change request apart (`parse`: its query parameters, its body); a request refused as
    /// malformed (400, 413) is recorded in the audit log as a refused call, as a refused role is.
    func parsedChange<T>(_ request: Request, _ context: YOLOSwapRequestContext, _ parse: () async throws -> T)
        async throws -> T
    {
        do { return try await parse() } catch {
            let problem = Problem.from(error)
            await control.auditRefusal(context.principal, context.remoteAddress,
                action: "\(request.method.rawValue) \(request.uri.path)",
                reason: "\(problem.status.code) \(problem.detail)")
            throw error
        }
    }

    func require(_ role: Role, _ context: YOLOSwapRequestContext) throws -> Principal {
        guard let principal = context.principal else {
            if authenticator.isEmpty {
                throw Problem(.forbidden, "Forbidden",
                    detail: "no tokens are configured: this endpoint is disabled (add tokens to the configuration)")
            }
            throw Problem(.unauthorized, "Unauthorized", detail: "this endpoint needs a bearer token")
        }
        guard principal.role >= role else {
            throw Problem(.forbidden, "Forbidden",
                detail: "'\(principal.name)' has role \(principal.role.rawValue); this needs \(role.rawValue)")
        }
        return principal
    }

    /// A JSON body decoded as `T`, keys `T` does not know refused (`StrictJSON`): a misspelt option is an error, not a
    /// default.
    func decode<T: Codable>(_ type: T.Type, _ request: Request, _ context: YOLOSwapRequestContext)
        async throws -> T
    {
        let data = try await jsonBody(request)
        do { return try StrictJSON.decode(T.self, from: data) } catch {
            throw Problem.badRequest("invalid JSON body: \(Problem.describe(error))")
        }
    }

    /// A JSON body decoded as `T`, unknown keys skipped: for a type that lists them itself (`ConfiguredStreamEntry`,
    /// whose caller refuses them), or whose every field is required (`FeedbackBody`: a misspelt key is a missing one).
    func decode<T: Decodable>(skippingUnknownKeys type: T.Type, _ request: Request, _ context: YOLOSwapRequestContext)
        async throws -> T
    {
        let data = try await jsonBody(request)
        do { return try JSONNumbers.decode(T.self, from: data) } catch {
            throw Problem.badRequest("invalid JSON body: \(Problem.describe(error))")
        }
    }

    private func jsonBody(_ request: Request) async throws -> Data {
        var buffer: ByteBuffer
        do { buffer = try await request.body.collect(upTo: Self.maxJSONBytes) } catch is NIOTooManyBytesError {
            throw Problem(.contentTooLarge, "Content Too Large",
                detail: "a JSON body may have at most \(Self.maxJSONBytes) bytes")
        }
        return Data(buffer.readBytes(length: buffer.readableBytes) ?? [])
    }

    /// A JSON answer written by the project's one encoder.
    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status) throws -> Response {
        let data = try JSONEncoder.yoloswap.encode(value)
        return Response(status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    private func doubleParameter(_ text: String?, name: String, default value: Double) throws -> Double {
        guard let text else { return value }
        guard let parsed = Double(text), (0...1).contains(parsed) else {
            throw Problem.badRequest("\(name) must be a number in [0, 1], got '\(text.prefix(utf8Bytes: 64))'")
        }
        return parsed
    }

    /// A boolean query parameter: `true`/`false`, `1`/`0` in any case, and the bare name (`?dry_run`) for true;
    /// absent: `false`. Anything else is 400 — a `dry_run=True` taken as false would apply what the caller meant
    /// only to plan.
    func boolParameter(_ request: Request, _ name: String) throws -> Bool {
        guard let text = request.uri.queryParameters.get(name) else { return false }
        switch text.lowercased() {
        case "true", "1", "": return true
        case "false", "0": return false
        default:
            throw Problem.badRequest("\(name) must be true or false (or 1 or 0), got '\(text.prefix(utf8Bytes: 64))'")
        }
    }

    func intParameter(_ text: String?, name: String, default value: Int, range: ClosedRange<Int>) throws
        -> Int
    {
        guard let text else { return value }
        guard let parsed = Int(text), range.contains(parsed) else {
            throw Problem.badRequest(
                "\(name) must be an integer in \(range.lowerBound)...\(range.upperBound), got "
                    + "'\(text.prefix(utf8Bytes: 64))'")
        }
        return parsed
    }
}
