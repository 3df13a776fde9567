import Foundation
import ImageCodecs
import Primitives
import YOLO

/// Runs one load through verifying → loading → validating → warming, entirely on background threads.
///
/// Nothing here touches a slot: the result is a ready `ModelInstance` or a `LoadFailure`, and everything a failed
/// load allocated is freed when the pipeline returns (after any Run in flight has been aborted and has ended).
struct LoadPipeline: Sendable {
    let loader: any ModelLoader
    let verifier: (any ModelVerifier)?
    let executor: InferenceExecutor
    let configuration: HotSwapConfiguration
    let onRelease: @Sendable (ModelRelease) -> Void
    /// Checks the memory budget for a model of this digest and size on the devices `execution` needs, counting what
    /// other loads under way have reserved and `freed` (per device: what the load's hook is about to free) as free,
    /// and reserves the model's estimate until the returned reservation is released.
    /// Throws `LoadFailure.overMemoryBudget` / `.overDeviceMemoryBudget` when it does not fit.
    let reserveBudget: @Sendable (_ sha256: String, _ byteCount: Int, _ execution: ModelExecution, _ path: String,
                                  _ freed: [ComputeDevice: Int]) throws(LoadFailure) -> MemoryReservation
    /// Records the measured host memory cost of a digest run on a target.
    let recordCost: @Sendable (_ sha256: String, _ target: ExecutionTarget, _ bytes: Int) -> Void

    /// Runs the load.
    /// - Parameters:
    ///   - op: the operation (request, stage, cancellation).
    ///   - execution: the provider, device and session settings the model runs with (resolved by the manager).
    ///   - active: the schema of the slot's active model, to check compatibility against (nil: none).
    ///   - beforeLoading: runs once the model has passed verification, before the budget check and the session
    ///     (the manager releases a standby that the switch would displace, so that memory is free first).
    ///   - freedBeforeLoading: what `beforeLoading` frees, per device, when it is known: the budget is then checked
    ///     and the model's memory reserved before the hook, counting that as free, so that a model that cannot fit
    ///     even then is refused before the hook takes anything away, and what it frees stays this load's.
    ///   - reserved: memory already reserved for this load (`MemoryLedger.hold`), used instead of a budget check.
    ///   - onReserved: given the reservation made before the hook (with `freedBeforeLoading`), which the model holds
    ///     until it takes its role; a failed load's is released as the pipeline returns unless the caller keeps it
    ///     (a failed resource-preserving load turns it into its restore's, `MemoryReservation.resize`).
    func run(_ op: LoadOperation, execution: ModelExecution, active: ModelSchema?,
             freedBeforeLoading: [ComputeDevice: Int]? = nil, reserved: MemoryReservation? = nil,
             onReserved: @Sendable (MemoryReservation) -> Void = { _ in },
             beforeLoading: @Sendable () async -> Void = {})
        async throws(LoadFailure) -> ModelInstance
    {
        let request = op.request
        let path = request.path
        let clock = ContinuousClock()
        func check() throws(LoadFailure) {
            if op.isCancelled { throw .cancelled(path: path, reason: "superseded or cancelled") }
        }
        func background<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws(LoadFailure) -> T {
            try await offPool(path, work)
        }

        // verifying: the file's digest (streamed: no whole-file buffer), checked before any ORT allocation. The
        // loader reads the bytes later only if it needs them, and then only bytes with this digest.
        try check()
        op.enter(.verifying)
        var t = clock.now
        let (file, keyID): (ModelFile, String?) = try await background { [verifier] in
            let file: ModelFile
            do { file = try ModelFile(verifying: path) } catch let error as ModelFileError {
                if case .unreadable(_, let reason) = error { throw LoadFailure.unreadable(path: path, reason: reason) }
                throw LoadFailure.unreadable(path: path, reason: error.description)
            }
            if let expected = request.expectedSHA256, expected != file.sha256 {
                throw LoadFailure.digestMismatch(path: path, expected: expected, actual: file.sha256)
            }
            var keyID: String?
            if let verifier {
                do { keyID = try verifier.verify(path: path, sha256: file.sha256, version: request.version) }
                catch { throw LoadFailure.signatureRejected(path: path, reason: "\(error)") }
            }
            if request.requireSignature && keyID == nil {
                throw LoadFailure.signatureRejected(path: path,
                    reason: "not signed by a trusted key, and this load requires a signature")
            }
            return (file, keyID)
        }
        let digest = file.sha256
        let name = request.name ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let identity = ModelIdentity(name: name, version: request.version ?? String(digest.prefix(12)),
            sha256: digest, path: path)
        op.update {
            $0.identity = identity
            $0.signatureKeyID = keyID
            $0.timings.verify = (clock.now - t).milliseconds
        }
        try check()
        // Held by the model until it takes a role in its slot (and counts as in use there); a failed load frees it
        // as it returns. Meanwhile other loads' checks count the reservation. A load whose hook frees memory first
        // reserves before the hook, counting that memory as free: reserved after it, the memory the hook freed could
        // go to another slot's load meanwhile — the old model gone, the new one refused, the slot left empty.
        var early = reserved
        if early == nil, let freed = freedBeforeLoading {
            let reservation = try reserveBudget(digest, file.byteCount, execution, path, freed)
            onReserved(reservation)
            early = reservation
        }
        await beforeLoading()
        // Superseded while the hook ran (a drain can take a while): not worth a session.
        try check()
        let reservation: MemoryReservation
        if let early { reservation = early } else {
            reservation = try reserveBudget(digest, file.byteCount, execution, path, [:])
        }

        // loading: a new session (its own inference context) for the verified file.
        op.enter(.loading)
        t = clock.now
        let (loaded, rssBefore): (PendingDetector, Int) = try await background { [loader] in
            let rssBefore = ProcessMemory.residentBytes() ?? 0
            let backend: any InferenceBackend
            do {
                backend = try loader.makeBackend(for: file, label: path, execution: execution,
                    cancellation: op.runCancellation)
            } catch {
                // Whatever the loader threw once the load was cancelled (a killed optimizer) is the cancellation's.
                if op.isCancelled { throw LoadFailure.cancelled(path: path, reason: "superseded or cancelled") }
                if case .changedSinceVerification(_, let verified, let now) = error as? ModelFileError {
                    throw LoadFailure.digestMismatch(path: path, expected: verified, actual: now)
                }
                throw LoadFailure.runtime(path: path, reason: "\(error)")
            }
            let detector: Detector
            do { detector = try Detector(backend: backend) } catch {
                throw LoadFailure.unsupportedModel(path: path, reason: "\(error)")
            }
            // What creating the session freed (the parsed graph, ORT's load-time buffers) goes back to the OS before
            // the warm-up grows the new session's arena on top of it.
            ProcessMemory.trim()
            return (PendingDetector(detector), rssBefore)
        }
        do {
            return try await finish(op, loaded, rssBefore: rssBefore, identity: identity, file: file, keyID: keyID,
                execution: execution, active: active, reservation: reservation, since: t)
        } catch {
            // The session goes with the failure: freed on a load thread (ORT's ReleaseSession joins its threads and
            // frees its arena), not on Swift's cooperative pool where the last reference would otherwise drop.
            do { try await executor.run { loaded.release() } } catch { loaded.release() }
            throw error
        }
    }

    /// `work` on a load thread; its `LoadFailure` as it is, an executor shut down as the load cancelled.
    private func offPool<T: Sendable>(_ path: String, _ work: @escaping @Sendable () throws -> T)
        async throws(LoadFailure) -> T
    {
        do { return try await executor.run(work) } catch let failure as LoadFailure { throw failure } catch {
            if case .shutDown = error as? ExecutorError { throw .cancelled(path: path, reason: "shutting down") }
            throw .runtime(path: path, reason: "\(error)")
        }
    }

    /// The load from its session on: validating, warming, the measured cost; the model made of it.
    private func finish(_ op: LoadOperation, _ loaded: PendingDetector, rssBefore: Int, identity: ModelIdentity,
                        file: ModelFile, keyID: String?, execution: ModelExecution, active: ModelSchema?,
                        reservation: MemoryReservation, since start: ContinuousClock.Instant)
        async throws(LoadFailure) -> ModelInstance
    {
        let request = op.request
        let path = request.path
        let clock = ContinuousClock()
        var t = start
        func check() throws(LoadFailure) {
            if op.isCancelled { throw .cancelled(path: path, reason: "superseded or cancelled") }
        }
        op.update { $0.timings.load = (clock.now - t).milliseconds }
        try check()

        // validating: compatible with what the slot serves now?
        op.enter(.validating)
        t = clock.now
        if let active, !request.allowSchemaChange {
            let differences = loaded.detector.schema.incompatibilities(replacing: active)
            if !differences.isEmpty { throw .incompatible(path: path, differences: differences.map(\.description)) }
        }
        op.update { $0.timings.validate = (clock.now - t).milliseconds }

        // warming: N inferences that must produce well-formed outputs, within the timeout.
        op.enter(.warming)
        t = clock.now
        try await warmUp(loaded.detector, op: op)
        op.update { $0.timings.warmup = (clock.now - t).milliseconds }
        try check()

        // A CPU session holds at least its weights in this process: its cost is never less than the file, which RSS
        // growth can read as when other slots free memory over the same window. (A GPU session's weights are on the
        // GPU: no floor.)
        let floor = execution.target.device == .host ? file.byteCount : 0
        let cost: Int = try await offPool(path) {
            let cost = max(floor, (ProcessMemory.residentBytes() ?? 0) - rssBefore)
            // What the load allocated and freed (file chunks, ORT's load-time buffers, warm-up inputs) goes back to
            // the OS now rather than at the next release, so RSS between swaps is the models' own.
            ProcessMemory.trim()
            return cost
        }
        recordCost(identity.sha256, execution.target, cost)
        let deviceCost = execution.target.device == .host ? 0
            : MemoryLedger.deviceCost(byteCount: file.byteCount, execution: execution)
        return ModelInstance(identity: identity, detector: loaded.take(), memoryBytes: cost, signatureKeyID: keyID,
            execution: execution, deviceMemoryBytes: deviceCost, reservation: reservation, onRelease: onRelease)
    }

    /// Runs the warm-up inferences on the background executor, racing the timeout; a timeout aborts the Runs in
    /// flight through ORT's terminate flag.
    ///
    /// `warmupRuns` Runs, the last `warmupConcurrency` of them at once (by default as many as the slot has workers;
    /// all one after another when that is 1, all at once when `warmupRuns` is smaller): the same CPU as Runs one
    /// after another, which matters for a slow model on a busy machine, where the load threads' nice 10 leaves them
    /// little. A session sizes its memory for a Run (ORT's arena, the planned memory pattern) by the Runs it has
    /// seen, so the round leaves it sized for Runs that overlap, as the workers' will (README → Performance, Hot
    /// swap).
    private func warmUp(_ detector: Detector, op: LoadOperation) async throws(LoadFailure) {
        let path = op.request.path
        let runs = configuration.warmupRuns
        // The last round: 0 only when there are no Runs at all.
        let concurrent = min(runs, max(1, configuration.warmupConcurrency ?? configuration.servingThreads))
        let sample = configuration.warmupImage
        // The warm-up's own signal: a timeout aborts the Run without marking the load cancelled (which would report
        // it as superseded instead of timed out); cancelling the load still aborts the Run.
        let cancellation = RunCancellation()
        op.runCancellation.onCancel { cancellation.cancel() }
        let timeout = op.request.warmupTimeout ?? configuration.warmupTimeout
        let executor = self.executor
        // The timeout counts from the warm-up's start on a load thread, not from its queueing: behind another slot's
        // long load, a model that warms up in milliseconds would otherwise time out without a Run.
        let (started, starting) = AsyncStream<Void>.makeStream()
        let outcome: Result<Void, LoadFailure> = await withTaskGroup(of: Result<Void, LoadFailure>?.self) { group in
            group.addTask {
                do {
                    try await executor.run {
                        starting.finish()
                        let image = Self.warmupImage(sample, for: detector)
                        for _ in 0..<(runs - concurrent) {
                            try Self.validateOutput(detector, image: image, cancellation: cancellation, path: path)
                        }
                        if concurrent > 0 {
                            try Self.atOnce(concurrent) {
                                try Self.validateOutput(detector, image: image, cancellation: cancellation, path: path)
                            }
                        }
                    }
                    return .success(())
                } catch let failure as LoadFailure {
                    return .failure(failure)
                } catch {
                    return .failure(cancellation.isCancelled && !op.isCancelled
                        ? .warmupTimeout(path: path, after: timeout)
                        : .warmupFailed(path: path, reason: "\(error)"))
                }
            }
            group.addTask {
                for await _ in started {}  // ends once the warm-up starts, or this task is cancelled
                try? await Task.sleep(for: timeout)
                return Task.isCancelled ? nil : .failure(.warmupTimeout(path: path, after: timeout))
            }
            // The timer answers nil when the load's task is cancelled (a shutdown): the warm-up's own answer decides.
            var first: Result<Void, LoadFailure>?
            while first == nil, let next = await group.next() { first = next }
            let outcome = first ?? .failure(.cancelled(path: path, reason: "shutting down"))
            if case .failure(.warmupTimeout) = outcome {
                cancellation.cancel()  // abort the Run in flight; the group waits for it to end
            }
            group.cancelAll()
            return outcome
        }
        if case .failure(let failure) = outcome {
            if op.isCancelled { throw .cancelled(path: path, reason: "superseded or cancelled") }
            throw failure
        }
    }

    /// Runs `body` on `count` threads at once — the calling thread and `count - 1` new ones (8 MiB stacks, named
    /// `warm-up` and at the caller's nice value on Linux) — and returns when all have finished; throws the first error. Blocking:
    /// runs on the load executor.
    ///
    /// A thread the system will not create (a process or container at its thread limit) costs its Run's overlap, not
    /// the Run: that body runs on the calling thread afterwards, so the round always ends.
    private static func atOnce(_ count: Int, _ body: @escaping @Sendable () throws -> Void) throws {
        precondition(count >= 1, "a round of \(count) Runs")
        let firstError = Locked<(any Error)?>(nil)
        let run: @Sendable () -> Void = {
            do { try body() } catch { firstError.withLock { if $0 == nil { $0 = error } } }
        }
        #if os(Linux)
            // Linux keeps a nice value per thread, and a new thread starts at its creator's; set again as a safeguard
            // (the helpers must stay below the serving threads whatever created them).
            errno = 0
            let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
            let niceKnown = errno == 0
        #endif
        let helper: @Sendable () -> Void = {
            #if os(Linux)
                Thread.current.name = "warm-up"
                if niceKnown { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) }
            #endif
            run()
        }
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, 8 << 20)
        var threads: [pthread_t] = []
        var notCreated = 0
        for _ in 1..<count {
            let context = Unmanaged.passRetained(ThreadBody(helper)).toOpaque()
            var thread = pthread_t()
            let created = pthread_create(&thread, &attributes, { raw in
                Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue().body()
                return nil
            }, context)
            if created == 0 {
                threads.append(thread)
            } else {
                Unmanaged<ThreadBody>.fromOpaque(context).release()
                notCreated += 1
            }
        }
        run()
        // Not when a Run has failed already: the round has, and each of these would cost a whole Run.
        for _ in 0..<notCreated where firstError.value == nil { run() }
        for thread in threads { pthread_join(thread, nil) }
        if let error = firstError.value { throw error }
    }

    /// The image to warm up on: the configured sample, else (or when it does not decode) a grey image of the model's
    /// input size. Blocking (decodes): runs on the load executor.
    private static func warmupImage(_ sample: [UInt8]?, for detector: Detector) -> RGBImage {
        if let sample, let decoded = try? ImageDecoder.decode(sample) { return decoded }
        let size = detector.schema.inputSize
        return RGBImage(width: size.width, height: size.height, fill: (114, 114, 114))
    }

    /// One warm-up inference: the output must have the declared shape, finite values, scores in [0, 1] and (YOLOv10)
    /// class indices of the model's classes.
    static func validateOutput(_ detector: Detector, image: RGBImage, cancellation: RunCancellation, path: String)
        throws
    {
        // One thread: the letterbox's second one would run at normal priority, beside the serving threads.
        let (tensor, _) = detector.preprocess(image, inParallel: false)
        let output = try detector.backend.run(tensor, cancellation: cancellation)
        let schema = detector.schema
        let declared = schema.output.shape
        guard output.shape.count == declared.count,
            zip(output.shape, declared).allSatisfy({ $1 < 0 || $0 == $1 })
        else {
            throw LoadFailure.warmupFailed(
                path: path, reason: "output shape \(output.shape) differs from declared \(declared)")
        }
        // One image's boxes, whatever the declared (dynamic) batch: any other fails every request's decoding.
        guard output.shape.first == 1 else {
            throw LoadFailure.warmupFailed(path: path, reason: "output shape \(output.shape): a batch other than 1")
        }
        try output.withFloats { values in
            let b = output.shape[2]
            for i in 0..<values.count where !values[i].isFinite {
                throw LoadFailure.warmupFailed(path: path, reason: "output holds a non-finite value at index \(i)")
            }
            // Score columns: objectness and class probabilities (v5), class scores (v8), score (v10).
            let isScore: (Int) -> Bool
            switch schema.outputFormat {
            case .yolov5: isScore = { i in i % b >= 4 }
            case .yolov8: isScore = { i in i / b >= 4 }
            case .yolov10: isScore = { i in i % b == 4 }
            }
            for i in 0..<values.count where isScore(i) && !(0...1).contains(values[i]) {
                throw LoadFailure.warmupFailed(
                    path: path, reason: "score \(values[i]) at index \(i) lies outside [0, 1]")
            }
            // YOLOv10's class column is read as an index into the model's classes: every row's must be one.
            if schema.outputFormat == .yolov10, b > 0 {
                let classes = Float(schema.classCount)
                for i in stride(from: 5, to: values.count, by: b) {
                    let cls = values[i]
                    guard cls >= 0, cls < classes, cls == cls.rounded(.towardZero) else {
                        throw LoadFailure.warmupFailed(path: path,
                            reason: "class \(cls) in row \(i / b) is not one of the model's \(schema.classCount) classes")
                    }
                }
            }
        }
    }
}

/// A helper thread's work, handed through `pthread_create`'s context pointer.
private final class ThreadBody: Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A load's detector from its session's creation until the model takes it or the load fails: held here, not in a
/// local, so that a failed load can drop the last reference — and free the session — on a load thread.
///
/// Thread-safety: behind a lock.
final class PendingDetector: Sendable {
    private let held: Locked<Detector?>

    init(_ detector: Detector) { held = Locked(detector) }

    /// The detector, while held (a load uses it only before `take` or `release`).
    var detector: Detector {
        guard let detector = held.withLock({ $0 }) else { preconditionFailure("the pending detector was released") }
        return detector
    }

    /// The detector, no longer held here.
    func take() -> Detector {
        let detector = self.detector
        release()
        return detector
    }

    /// Drops the detector: its session is freed here, when no one else holds it.
    func release() {
        let detector = held.withLock { held in
            defer { held = nil }
            return held
        }
        _ = detector  // released at the end of this scope, outside the lock
    }
}
