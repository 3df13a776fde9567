import Foundation
import HotSwap
import ImageCodecs
import Primitives
import Releases
import YOLO

// The request path of a release: the sticky key, the detection with its variant counted, the candidate's failures
// answered by the baseline, and the shadow's mirrored copies (never waited for) compared with the answers.
extension ControlPlane {
    // MARK: Requests

    /// The sticky header the slot's release assigns variants by, if any.
    func releaseStickyHeader(slot: String) -> String? {
        guard let run = releaseRun(slot), !run.engine.phase.isTerminal else { return nil }
        return run.engine.spec.sticky_header
    }

    /// Counts an answer of a release's variant, mirrors it to a shadow candidate when chosen (never waiting for it),
    /// and carries out what the gates decide.
    func observeRelease(slot: String, detection: SlotDetection, input: DetectionInput, options: DetectionOptions,
                        key: String?) {
        guard let variant = detection.variant, let run = releaseRun(slot) else { return }
        let engine = run.engine
        handle(engine.record(variant: variant, VariantSample(detection.result)), of: run)
        ReleaseMetrics.answer(slot: slot, variant: variant, failed: false,
            milliseconds: detection.result.timings.total)
        guard engine.shouldMirror(key: key), let slotRef = manager.slot(slot) else { return }
        // Saturated: serving has requests waiting for a worker. The copy would only take a core from them.
        if slotRef.executor.queueDepth > 0 {
            engine.recordShed(saturated: true)
            ReleaseMetrics.mirror(slot: slot, outcome: "shed_saturated")
            return
        }
        let baseline = detection.result
        Task.detached(priority: .background) { [self] in
            await mirrorRun(run, slot: slotRef, baseline: baseline, input: input, options: options)
        }
    }

    /// Detects on the slot during (or outside) a release (what `POST /v1/detect` and `bench-release` run): counts the
    /// answer for its variant, mirrors it to a shadow candidate, and answers a request the candidate failed from the
    /// baseline (the failure is the release's to count, not the client's).
    public func detect(on slot: ModelSlot, bytes: [UInt8], options: DetectionOptions, context: RoutingContext,
                       deadline: ContinuousClock.Instant?) async throws -> SlotDetection {
        let slotName = slot.name
        do {
            let result = try await slot.detect(imageBytes: bytes, options: options, context: context,
                deadline: deadline)
            observeRelease(slot: slotName, detection: result, input: .encoded(bytes), options: options,
                key: context.key)
            return result
        } catch let routed as RoutedDetectionError {
            // An image that cannot be decoded is the client's error, whichever variant saw it.
            if case .decode = routed.error { throw routed.error }
            observeReleaseFailure(slot: slotName, variant: routed.variant, error: routed.error)
            guard !context.preferActive, routed.variant == releaseRun(slotName)?.engine.spec.candidateName
            else { throw routed.error }
            var retry = context
            retry.preferActive = true
            return try await detect(on: slot, bytes: bytes, options: options, context: retry, deadline: deadline)
        }
    }

    /// Counts a failed answer of a variant.
    func observeReleaseFailure(slot: String, variant: String, error: DetectionError) {
        guard let run = releaseRun(slot) else { return }
        // Typed, not read from the message: a model file named "…nano…" is no NaN.
        handle(run.engine.record(variant: variant, .failure(nonFinite: error.isNonFiniteOutput)), of: run)
        ReleaseMetrics.answer(slot: slot, variant: variant, failed: true, milliseconds: nil)
    }

    private func mirrorRun(_ run: ReleaseRun, slot: ModelSlot, baseline: DetectionResult, input: DetectionInput,
                           options: DetectionOptions) async {
        let engine = run.engine
        let candidate: SlotDetection?
        do {
            candidate = try await slot.detectOnStaged(input, options: options,
                executor: run.mirror)
        } catch is ExecutorError {
            engine.recordShed(saturated: false)
            ReleaseMetrics.mirror(slot: slot.name, outcome: "shed_queue_full")
            return
        } catch {
            let nonFinite = (error as? DetectionError)?.isNonFiniteOutput ?? false
            handle(engine.recordMirrorFailure(nonFinite: nonFinite), of: run)
            ReleaseMetrics.mirror(slot: slot.name, outcome: "failed")
            return
        }
        guard let candidate else { return }
        let (pair, decisions) = engine.recordPair(baseline: baseline, candidate: candidate.result)
        ReleaseMetrics.mirror(slot: slot.name, outcome: "mirrored")
        ReleaseMetrics.answer(slot: slot.name, variant: engine.spec.candidateName, failed: false,
            milliseconds: candidate.result.timings.total)
        // A copy that finished after the release ended is not kept: it is no longer the release's figures.
        if !pair.agrees, !engine.phase.isTerminal, let imageBytes = await Self.reviewableImage(input) {
            let id = UUID().uuidString.lowercased()
            let disagreement = Disagreement(id: id, time: Date(), content_type: Self.contentType(imageBytes),
                image_bytes: imageBytes.count, baseline: baseline.detections,
                candidate: candidate.result.detections, matched: pair.matched,
                unmatched_confusion: pair.confusion)
            // The store writes its files under its lock: off the cooperative pool.
            await Self.disagreementFiles.run { run.disagreements.add(disagreement, image: imageBytes) }
        }
        ReleaseMetrics.agreement(slot: slot.name, f1: engine.agreementF1)
        handle(decisions, of: run)
    }

    /// The image a disagreement keeps for review: the request's own bytes, or a video frame as a JPEG, encoded off the
    /// cooperative pool (nil when it cannot be encoded: the pair is still counted, only not kept).
    static func reviewableImage(_ input: DetectionInput) async -> [UInt8]? {
        switch input {
        case .encoded(let bytes): bytes
        case .decoded(let image): await reviewEncoder.run { try? ImageEncoder.jpeg(image, quality: 90) }
        }
    }

    /// Encodes disagreeing video frames for review, one at a time.
    private static let reviewEncoder = BlockingQueue(label: "yoloswap.review-encode")
    /// Where the disagreement stores' file writes and reads run.
    static let disagreementFiles = BlockingQueue(label: "yoloswap.disagreements")

    static func contentType(_ bytes: [UInt8]) -> String {
        if bytes.starts(with: [0xFF, 0xD8]) { return "image/jpeg" }
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "image/png" }
        return "application/octet-stream"
    }

    // MARK: Ground-truth feedback

    /// Keeps a release's answer for feedback; the id the answer carries (nil outside a release).
    func rememberForFeedback(slot: String, _ detection: SlotDetection) -> String? {
        guard let variant = detection.variant, let run = releaseRun(slot), !run.engine.phase.isTerminal else {
            return nil
        }
        return run.engine.rememberAnswer(variant: variant, detections: detection.result.detections)
    }

    /// Counts an inspector's true boxes for an answer given during a release.
    /// - Throws: `ReleaseError.notFound` when no release keeps that answer (unknown, judged already, or forgotten).
    func feedback(requestID: String, truths: [TrueBox]) throws -> FeedbackOutcome {
        for run in releaseRuns.withLock({ Array($0.values) }) {
            if let outcome = run.engine.feedback(requestID: requestID, truths: truths) { return outcome }
        }
        throw ReleaseError.notFound("no release keeps an answer '\(requestID)' awaiting feedback (a running "
            + "release keeps its last \(ReleaseEngine.feedbackAnswersKept) answers, up to "
            + "\(ReleaseEngine.feedbackDetectionsKept) detections together, each judged once)")
    }
}

/// Video streams and the Open Inference Protocol report their detections here: a release counts them and mirrors them
/// as it does `POST /v1/detect`'s.
extension ControlPlane: DetectionObserver {
    public func answered(slot: String, input: DetectionInput, options: DetectionOptions, key: String?,
                         detection: SlotDetection) {
        observeRelease(slot: slot, detection: detection, input: input, options: options, key: key)
    }

    public func failed(slot: String, variant: String, error: DetectionError) -> Bool {
        observeReleaseFailure(slot: slot, variant: variant, error: error)
        return variant == releaseRun(slot)?.engine.spec.candidateName
    }
}
