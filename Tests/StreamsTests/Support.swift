import Foundation
import HotSwap
import ONNXRuntime
import ORTBackend
import Streams
import TestSupport
import Testing
import Primitives
import VideoDecoding

/// Streams on real video and real ONNX Runtime sessions, one test at a time (they are CPU-bound; the machine may have
/// two cores).
@Suite("Video streams", .serialized)
struct StreamSuite {}

/// Loads models into real ONNX Runtime sessions, one intra-op thread each (the CLI's `--threads 1` gives the same
/// numbers).
let streamLoader: ORTModelLoader = {
    do {
        return ORTModelLoader(environment: try ORTEnvironment(library: ORTLibrary.load()),
            options: SessionOptions(intraOpThreads: 1))
    } catch {
        fatalError("ONNX Runtime could not be loaded (run scripts/setup): \(error)")
    }
}()

/// The yoloswap executable built beside the tests.
let yoloswapBinary: String = {
    let beside = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("yoloswap").path
    return FileManager.default.isExecutableFile(atPath: beside) ? beside : Repository.path(".build/debug/yoloswap")
}()

/// Collects a stream's results in order (the stream's sink).
final class ResultLog: Sendable {
    let results = Locked<[StreamFrameResult]>([])
    func append(_ result: StreamFrameResult) { results.withLock { $0.append(result) } }
    var all: [StreamFrameResult] { results.value }
}
