import Foundation
import Primitives

/// Memory costs per model digest and the budget check.
///
/// Thread-safety: guarded by a mutex.
final class MemoryLedger: Sendable {
    let budget: Int?
    private let measured = Locked<[String: Int]>([:])
    /// A model not measured yet is assumed to cost this many times its file size (weights plus ORT's buffers).
    static let unknownCostFactor = 2

    init(budget: Int?) { self.budget = budget }

    var costs: [String: Int] { measured.withLock { $0 } }

    func record(sha256: String, bytes: Int) { measured.withLock { $0[sha256] = bytes } }

    /// The measured cost of the digest, else `unknownCostFactor` × the file's size. Blocking (reads the file's size).
    func estimate(sha256: String?, path: String) -> Int {
        if let sha256, let known = measured.withLock({ $0[sha256] }) { return known }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        return size * Self.unknownCostFactor
    }

    func check(sha256: String, byteCount: Int, inUse: Int, path: String) throws(LoadFailure) {
        guard let budget else { return }
        let needed = measured.withLock { $0[sha256] } ?? byteCount * Self.unknownCostFactor
        if inUse + needed > budget {
            throw .overMemoryBudget(path: path, neededBytes: needed, budgetBytes: budget, inUseBytes: inUse)
        }
    }
}
