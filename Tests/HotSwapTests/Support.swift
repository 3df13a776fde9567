import Foundation
import HotSwap
import HotSwapTesting
import TestSupport
import Testing

/// The hot-swap tests, run one at a time: several measure process memory, several create many threads, and the
/// machine they run on may have two cores. They use fake backends (`HotSwapTesting`): no ONNX Runtime.
@Suite("Hot swap", .serialized)
struct HotSwapSuite {}
