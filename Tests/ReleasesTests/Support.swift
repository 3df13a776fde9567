import Foundation
import HotSwap
import HotSwapTesting
import Primitives
import Releases
import TestSupport
import YOLO

/// A clock the test sets.
final class ManualClock: ReleaseClock {
    private let value: Locked<Date>
    init(_ date: Date) { value = Locked(date) }
    var now: Date { value.value }
    func advance(by seconds: Double) { value.withLock { $0 = $0.addingTimeInterval(seconds) } }
    func set(_ date: Date) { value.withLock { $0 = date } }
}

/// A slot with a real baseline (active) and candidate (staged) over fake backends: what a release routes between.
struct TwoModels {
    let manager: ModelManager
    let slot: ModelSlot
    let directory: TemporaryDirectory

    static func make() async throws -> TwoModels {
        let directory = try TemporaryDirectory(prefix: "releases")
        let base = directory.file("base.onnx"), cand = directory.file("cand.onnx")
        try Data("baseline".utf8).write(to: URL(fileURLWithPath: base))
        try Data("candidate".utf8).write(to: URL(fileURLWithPath: cand))
        var configuration = HotSwapConfiguration()
        configuration.warmupRuns = 1
        let manager = ModelManager(configuration: configuration, loader: FakeLoader())
        let slot = try await manager.createSlot("line")
        _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: base))
        _ = await (try await manager.load(LoadRequest(slot: "line", path: cand))).wait()
        return TwoModels(manager: manager, slot: slot, directory: directory)
    }

    var roles: SlotRoles { slot.roles }
}

func record(_ spec: ReleaseSpec, at date: Date, phase: ReleasePhase = .running) -> ReleaseRecord {
    var r = ReleaseRecord(id: "release-1", slot: "line", spec: spec, candidatePath: "/m/cand.onnx", startedBy: "test",
        createdAt: date)
    r.phase = phase
    r.trafficSince = date
    r.stepStartedAt = date
    return r
}

func detection(_ name: String, _ x: Double, _ y: Double, _ side: Double = 10, conf: Float = 0.9) -> Detection {
    Detection(classID: 0, className: name, confidence: conf, box: Box(x1: x, y1: y, x2: x + side, y2: y + side))
}

func result(_ detections: [Detection], ms: Double = 10) -> DetectionResult {
    var t = StageTimings()
    t.inference = ms
    return DetectionResult(imageSize: ImageSize(width: 100, height: 100), detections: detections, timings: t)
}
