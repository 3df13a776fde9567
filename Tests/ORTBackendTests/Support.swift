import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import ONNXRuntime
import ORTBackend
import Testing

/// Hot swapping real ONNX Runtime sessions, run one at a time for the same reasons as the hot-swap suite (process
/// memory measured, many threads, a two-core machine).
@Suite("Hot swap with ONNX Runtime", .serialized)
struct ORTSwapSuite {}

/// Loads models into real ONNX Runtime sessions.
let ortLoader: ORTModelLoader = {
    do { return ORTModelLoader(environment: try ORTEnvironment(library: ORTLibrary.load())) } catch {
        fatalError("ONNX Runtime could not be loaded (run scripts/setup): \(error)")
    }
}()
