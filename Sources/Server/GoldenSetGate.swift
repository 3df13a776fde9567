import Evaluation
import HotSwap
import Logging
import Primitives
import Releases

/// The release's golden-set gate (`CandidateGate`): before a candidate takes any traffic, it is run on the release's
/// `golden_set` — a COCO instances file inside the model repository, its images beside it — and scored with COCO's
/// AP@[.5:.95] (module `Evaluation`); with `golden_gate.max_drop_vs_baseline` the baseline is scored on the same set.
/// A candidate below `golden_gate.min_map`, or that far below the baseline, is refused with both figures; a release
/// without `golden_set` passes untouched. The figures are logged either way.
///
/// Thread-safety: stateless; the scoring runs on its own queue (it reads images and runs the models), one gate at a
/// time, never on the cooperative pool; a release aborted meanwhile, or stopped by a shutdown, stops it at the next image. The models are counted
/// in-flight while they are scored, so neither can be released under it.
struct GoldenSetGate: CandidateGate {
    let repository: ModelRepository
    let logger: Logger
    private let queue = BlockingQueue(label: "golden-set-gate")
    /// The largest golden set read in the serving process (decoding takes about five times the file's size);
    /// `yoloswap eval` reads up to `COCODataset.maxFileBytes`.
    static let maxFileBytes = 64 << 20

    init(repository: ModelRepository, logger: Logger) {
        self.repository = repository
        self.logger = logger
    }

    func refusal(candidate: ModelInstance, baseline: ModelInstance?, spec: ReleaseSpec,
                 isCancelled: @escaping @Sendable () -> Bool) async -> String? {
        guard let relative = spec.golden_set else { return nil }
        let path: String
        do { path = try await repository.resolve(relative) } catch {
            return "golden set: \(Problem.from(error).detail)"
        }
        let rules = GoldenSetRules(
            minMAP: spec.golden_gate?.min_map, maxDropVsBaseline: spec.golden_gate?.max_drop_vs_baseline)
        let scoreBaseline = rules.maxDropVsBaseline != nil ? baseline : nil
        let outcome: Result<(GoldenSet.Result, GoldenSet.Result?), any Error> = await queue.run {
            Result {
                let set = try GoldenSet(contentsOf: path, confined: true, maxFileBytes: Self.maxFileBytes)
                return (try Self.score(candidate, on: set, isCancelled),
                    try scoreBaseline.map { try Self.score($0, on: set, isCancelled) })
            }
        }
        switch outcome {
        case .failure(let error):
            return repository.hidingRoot("\(error)")
        case .success(let (candidateResult, baselineResult)):
            let figures = "candidate mAP \(Self.format(candidateResult.evaluation.map))"
                + (baselineResult.map { ", baseline mAP \(Self.format($0.evaluation.map))" } ?? "")
            logger.info("golden set scored", metadata: [
                "golden_set": "\(relative)", "figures": "\(figures)",
                "seconds": "\(candidateResult.seconds + (baselineResult?.seconds ?? 0))",
            ])
            return rules.breach(candidate: candidateResult.evaluation, baseline: baselineResult?.evaluation)
                .map { "\($0) on golden set \(relative) (\(figures))" }
        }
    }

    /// Scores one model, counted in-flight meanwhile.
    private static func score(_ model: ModelInstance, on set: GoldenSet, _ isCancelled: () -> Bool) throws
        -> GoldenSet.Result
    {
        try model.whileCountedInFlight { try set.evaluate(model.detector, isCancelled: isCancelled) }
    }

    private static func format(_ value: Double?) -> String {
        value.map { String(format: "%.4f", $0) } ?? "undefined"
    }
}
