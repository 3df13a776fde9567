import Foundation
import HTTPTypes
import HotSwap
import Hummingbird
import NIOCore
import Primitives
import Releases
import YOLO

/// `/v1/slots/{slot}/release…`: start, status, promote, pause, resume, abort, and the kept disagreements.
extension APIRoutes {
    func registerReleases(on v1: RouterGroup<YOLOSwapRequestContext>) {
        v1.post("slots/:slot/release") { request, context in
            let principal = try await requireOperator(request, context)
            let slot = try context.parameters.require("slot")
            let (wait, spec) = try await parsedChange(request, context) {
                (try boolParameter(request, "wait"), try await decode(ReleaseSpec.self, request, context))
            }
            let run = try await control.startRelease(slot: slot, spec: spec, by: principal,
                from: context.remoteAddress)
            if wait {
                await run.bringUp.withLock({ $0 })?.value
                let dto = releaseDTO(slot: slot, run: run)
                return try json(dto, status: dto.phase == ReleasePhase.failed.rawValue ? .unprocessableContent : .ok)
            }
            return try json(releaseDTO(slot: slot, run: run), status: .accepted)
        }
        v1.get("slots/:slot/release") { _, context in
            _ = try require(.viewer, context)
            let slot = try context.parameters.require("slot")
            _ = try control.releaseStatus(slot: slot)
            return try json(releaseDTO(slot: slot, run: control.releaseRun(slot)!), status: .ok)
        }
        for action in ["promote", "pause", "resume", "abort"] {
            v1.post("slots/:slot/release/\(action)") { request, context in
                let principal = try await requireOperator(request, context)
                let slot = try context.parameters.require("slot")
                let remote = context.remoteAddress
                switch action {
                case "promote": _ = try await control.promoteRelease(slot: slot, by: principal, from: remote)
                case "abort": _ = try await control.abortRelease(slot: slot, by: principal, from: remote)
                default:
                    _ = try await control.pauseRelease(slot: slot, by: principal, from: remote,
                        pause: action == "pause")
                }
                return try json(releaseDTO(slot: slot, run: control.releaseRun(slot)!), status: .ok)
            }
        }
        v1.post("feedback") { request, context in
            _ = try await requireOperator(request, context)
            // Extra keys taken: an inspector may send boxes copied from an answer (`class_id`, `confidence`); every
            // field the feedback needs is required, so a misspelt one is refused as missing.
            let body = try await decode(skippingUnknownKeys: FeedbackBody.self, request, context)
            try body.validate()
            return try json(try control.feedback(requestID: body.request_id, truths: body.boxes), status: .ok)
        }
        v1.get("slots/:slot/release/disagreements/:id") { request, context in
            // Images from the line: for the people who run the service.
            _ = try require(.operator, context)
            let slot = try context.parameters.require("slot")
            let (meta, image) = try await control.disagreement(slot: slot, id: try context.parameters.require("id"))
            if request.uri.queryParameters.get("part") == "image" {
                return Response(status: .ok, headers: [.contentType: meta.content_type],
                    body: .init(byteBuffer: ByteBuffer(bytes: image)))
            }
            return try json(DisagreementDTO(meta, image: image), status: .ok)
        }
    }

    func releaseDTO(slot: String, run: ReleaseRun) -> ReleaseDTO {
        ReleaseDTO(run.engine.status(energy: run.energy.reading()), disagreements: run.disagreements.ids,
            repository: control.repository)
    }
}

/// A release as the API shows it: paths relative to the model repository.
struct ReleaseDTO: Encodable {
    struct Step: Encodable {
        var index: Int
        var count: Int
        var percent: Double
        var started_at: Date?
        var samples: Int
        var complete: Bool
    }
    var id: String
    var slot: String
    var strategy: String
    var phase: String
    var model: String
    var candidate: ModelIdentity?
    var baseline: ModelIdentity?
    var started_by: String
    var created_at: Date
    var traffic_since: Date?
    var ended_at: Date?
    var reason: String?
    var breach: RuleBreach?
    var candidate_percent: Double
    var step: Step?
    var spec: ReleaseSpec
    var variants: [String: VariantStatus]
    var window: [String: Double]
    var agreement: AgreementStatus?
    var mirror: MirrorStatus?
    var energy: EnergyStatus
    var feedback: [String: FeedbackStatus]
    var counters_since: Date
    var disagreements: [String]
    var history: [ReleaseTransition]

    init(_ s: ReleaseStatus, disagreements: [String], repository: ModelRepository) {
        let r = s.record
        id = r.id
        slot = r.slot
        strategy = r.spec.strategy.rawValue
        phase = r.phase.rawValue
        model = repository.relative(r.candidatePath)
        candidate = r.candidate.map { var m = $0; m.path = repository.relative(m.path); return m }
        baseline = r.baseline.map { var m = $0; m.path = repository.relative(m.path); return m }
        started_by = r.startedBy
        created_at = r.createdAt
        traffic_since = r.trafficSince
        ended_at = r.endedAt
        reason = r.reason.map(repository.hidingRoot)
        breach = r.breach
        candidate_percent = s.candidate_percent
        if r.spec.strategy == .canary {
            let steps = r.spec.canarySteps
            step = Step(index: r.stepIndex, count: steps.count, percent: steps[min(r.stepIndex, steps.count - 1)]
                .percent, started_at: r.stepStartedAt, samples: s.step_samples, complete: r.stepsComplete)
        }
        spec = r.spec
        variants = s.variants
        window = s.window
        agreement = s.agreement
        mirror = s.mirror
        energy = s.energy
        feedback = s.feedback
        counters_since = s.counters_since
        self.disagreements = disagreements
        history = r.history
    }
}

/// `POST /v1/feedback`: an inspector's true boxes for an answer given during a release.
struct FeedbackBody: Codable {
    var request_id: String
    var boxes: [TrueBox]

    /// The longest class name taken: the figures keep every name they see (up to 4096 a variant) and every release
    /// status shows them.
    static let maxClassNameBytes = 256

    func validate() throws {
        guard boxes.count <= 10_000 else { throw Problem.badRequest("boxes: at most 10000 true boxes") }
        for (i, b) in boxes.enumerated() {
            let c = [b.box.x1, b.box.y1, b.box.x2, b.box.y2]
            guard c.allSatisfy(\.isFinite), b.box.x2 >= b.box.x1, b.box.y2 >= b.box.y1, !b.class_name.isEmpty,
                  b.class_name.utf8.count <= Self.maxClassNameBytes else {
                throw Problem.badRequest("boxes[\(i)]: a class_name of 1 to \(Self.maxClassNameBytes) bytes and finite "
                    + "x1 <= x2, y1 <= y2 are needed")
            }
        }
    }
}

/// `GET .../release/disagreements/{id}`: both detection sets and the image (base64).
struct DisagreementDTO: Encodable {
    var disagreement: Disagreement
    var image_base64: String

    init(_ d: Disagreement, image: [UInt8]) {
        disagreement = d
        image_base64 = Data(image).base64EncodedString()
    }
}
