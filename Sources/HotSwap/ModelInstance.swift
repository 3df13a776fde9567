import Foundation
import Synchronization
import YOLO

/// Who a model is: where it came from, its version, and the SHA-256 of the exact bytes that were loaded.
///
/// Codable as `{"id", "name", "version", "sha256", "path"}` (`id` is written for readers and ignored when decoding).
public struct ModelIdentity: Sendable, Equatable, Hashable, Codable {
    enum CodingKeys: String, CodingKey { case id, name, version, sha256, path }

    /// Model name: the file name without extension unless given.
    public var name: String
    /// Version label: as given by the operator, else the first 12 hex digits of the SHA-256.
    public var version: String
    public var sha256: String
    /// Path the bytes were read from.
    public var path: String

    public init(name: String, version: String, sha256: String, path: String) {
        self.name = name
        self.version = version
        self.sha256 = sha256
        self.path = path
    }

    /// `name@version`.
    public var id: String { "\(name)@\(version)" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        version = try container.decode(String.self, forKey: .version)
        sha256 = try container.decode(String.self, forKey: .sha256)
        path = try container.decode(String.self, forKey: .path)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(name, forKey: .name)
        try container.encode(version, forKey: .version)
        try container.encode(sha256, forKey: .sha256)
        try container.encode(path, forKey: .path)
    }

    var record: ModelRecord { ModelRecord(path: path, sha256: sha256, version: version) }
}

/// Counts the requests running on a model. Shared by the model and the leases taken on it, so that a lease can
/// end (count down) after its strong reference to the model is gone.
final class InFlightCounter: Sendable {
    let value = Atomic<Int>(0)
    func increment() { value.add(1, ordering: .acquiringAndReleasing) }
    func decrement() { value.subtract(1, ordering: .acquiringAndReleasing) }
    var current: Int { value.load(ordering: .acquiring) }
}

/// What happened when a model was released; reported to observers (tests, metrics, logs).
public struct ModelRelease: Sendable {
    public var identity: ModelIdentity
    /// Requests in flight on the model when it was released (always 0 unless something is wrong).
    public var inFlightAtRelease: Int
    /// Name of the thread that released it.
    public var threadName: String
    public var releasedAt: Date
}

/// One loaded, verified, warmed-up model: an isolated inference context (its own ORT session and threads).
///
/// Immutable. Requests hold a lease (a strong reference plus an in-flight count) while they run; the model's
/// session is released in `deinit`, which `ModelReleaser` arranges to happen on its own thread once the in-flight
/// count is zero.
///
/// Thread-safety: all members are immutable or atomic; `detector.detect` may be called concurrently.
public final class ModelInstance: Sendable {
    public let identity: ModelIdentity
    public let detector: Detector
    /// RSS growth measured while this model loaded and warmed up, in bytes (an estimate of its memory).
    public let memoryBytes: Int
    /// Key id of the signature that verified it, if any.
    public let signatureKeyID: String?
    /// The provider and device its session runs on, and the session settings it was made with.
    public let execution: ModelExecution
    /// What it is taken to hold on its GPU, in bytes (0 on the CPU): the ledger's estimate (`MemoryLedger`).
    public let deviceMemoryBytes: Int
    public let loadedAt: Date
    let inFlight = InFlightCounter()
    private let onRelease: @Sendable (ModelRelease) -> Void
    /// The memory its load reserved in the budget, until the model takes a role in its slot (and counts as in use
    /// there) or is freed without one.
    let reservation: MemoryReservation?

    public var schema: ModelSchema { detector.schema }
    /// Requests running on this model now.
    public var inFlightCount: Int { inFlight.current }

    /// Runs `body` with this model counted in flight, so that the releaser cannot free it meanwhile: for work on the
    /// model outside its slot's workers (a release's golden-set evaluation). Call it only while the model holds a
    /// role in its slot — a request's lease is taken under the slot's lock for the same reason.
    public func whileCountedInFlight<T>(_ body: () throws -> T) rethrows -> T {
        inFlight.increment()
        defer { inFlight.decrement() }
        return try body()
    }

    init(identity: ModelIdentity, detector: Detector, memoryBytes: Int, signatureKeyID: String?,
         execution: ModelExecution = .init(), deviceMemoryBytes: Int = 0, reservation: MemoryReservation? = nil,
         onRelease: @escaping @Sendable (ModelRelease) -> Void) {
        self.reservation = reservation
        self.identity = identity
        self.detector = detector
        self.memoryBytes = memoryBytes
        self.signatureKeyID = signatureKeyID
        self.execution = execution
        self.deviceMemoryBytes = deviceMemoryBytes
        self.loadedAt = Date()
        self.onRelease = onRelease
    }

    deinit {
        onRelease(ModelRelease(identity: identity, inFlightAtRelease: inFlight.current,
            threadName: Thread.current.name ?? (Thread.isMainThread ? "main" : "unnamed"), releasedAt: Date()))
    }
}

/// The model that served a request, stamped on every result.
public struct ModelStamp: Sendable, Equatable, Codable {
    public var slot: String
    public var id: String
    public var version: String
    public var sha256: String
    /// The slot's generation when the request took its lease; it increases with every switch of that slot.
    public var generation: Int
    /// The execution provider the model ran on (`cpu`, `cuda:0`, `tensorrt:1`).
    public var provider: String
    /// The device that holds its session (`host`, `gpu:0`).
    public var device: String

    public init(slot: String, identity: ModelIdentity, generation: Int, target: ExecutionTarget = .cpu) {
        self.slot = slot
        self.id = identity.id
        self.version = identity.version
        self.sha256 = identity.sha256
        self.generation = generation
        self.provider = target.description
        self.device = target.device.description
    }
}
