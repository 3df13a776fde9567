import Foundation
import Primitives
import TestSupport
import Testing

@testable import ONNXRuntime

private let environment: ORTEnvironment = {
    do { return try ORTEnvironment(library: ORTLibrary.load()) } catch { fatalError("run scripts/setup: \(error)") }
}()

@Suite("ONNX Runtime binding")
struct ONNXRuntimeTests {
    @Test("the library loads from .ort/lib with a C API at least the header's")
    func loads() throws {
        let library = try ORTLibrary.load()
        #expect(library.version == "1.32.0")
        #expect(library.path.hasSuffix(".ort/lib/libonnxruntime.so.1") || library.path.contains("libonnxruntime"))
        #expect(try library.availableProviders().contains("CPUExecutionProvider"))
    }

    /// Older releases offer the C API but load external data a model names outside itself (an absolute path, a memory
    /// address) whatever the session options: 1.21.0 read a key file into a tensor, and crashed on a bad address.
    @Test("releases before 1.32 are refused; 1.32 and later, development builds included, are taken")
    func minimumVersion() {
        for version in ["1.21.0", "1.31.1", "0.99.0", "unknown", "", "1", "x.40.0"] {
            #expect(!ORTLibrary.isSupported(version: version), "\(version)")
        }
        for version in ["1.32.0", "1.33.0-dev", "1.40.2", "2.0.0"] {
            #expect(ORTLibrary.isSupported(version: version), "\(version)")
        }
        let error = ORTError(.apiVersionUnsupported(required: 32, libraryVersion: "1.21.0"), operation: "loading x",
            message: "releases before 1.32.0 load external data a model names outside it")
        #expect(error.description.contains("ONNX Runtime 1.21.0 is not supported (loading x): a library of 1.32 or newer"))
    }

    @Test("a missing library names every path tried")
    func missingLibrary() {
        do {
            _ = try ORTLibrary.load(explicitPath: "/nonexistent/libonnxruntime.so.1")
            // The explicit path failed but a fallback loaded: the explicit path must still be first in the list.
            #expect(ORTLibrary.candidatePaths(explicitPath: "/nonexistent/x.so").first == "/nonexistent/x.so")
        } catch let error as ORTError {
            Issue.record("fallbacks should have loaded: \(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
        let paths = ORTLibrary.candidatePaths(explicitPath: "/a/b.so")
        #expect(paths.first == "/a/b.so")
        #expect(paths.last == "libonnxruntime.so.1")
        let error = ORTError(.libraryNotFound(tried: ["/a/b.so: cannot open"]), operation: "loading", message: "")
        #expect(error.description.contains("/a/b.so: cannot open"))
        #expect(error.description.contains("ORT_DYLIB_PATH"))
    }

    @Test("the library is looked for where it was asked for, beside the executable, in its package, in the system's")
    func lookupOrder() {
        let executable = "/srv/app/.build/x86_64-unknown-linux-gnu/debug/yoloswap"
        #expect(ORTLibrary.candidatePaths(explicitPath: "/opt/ort.so", environment: ["ORT_DYLIB_PATH": "/env/ort.so"],
            executable: executable) == [
                "/opt/ort.so", "/env/ort.so", "/srv/app/.build/x86_64-unknown-linux-gnu/debug/libonnxruntime.so.1",
                "/srv/app/.ort/lib/libonnxruntime.so.1", "libonnxruntime.so.1",
            ])
        #expect(ORTLibrary.candidatePaths(explicitPath: nil, environment: [:],
            executable: "/srv/app/.build-tsan/debug/YOLOSwapPackageTests.xctest")
            .contains("/srv/app/.ort/lib/libonnxruntime.so.1"))
        // Installed outside a package: nothing but beside it and the system's, whatever the working directory.
        #expect(ORTLibrary.candidatePaths(explicitPath: nil, environment: [:], executable: "/usr/local/bin/yoloswap")
            == ["/usr/local/bin/libonnxruntime.so.1", "libonnxruntime.so.1"])
        #expect(ORTLibrary.candidatePaths(explicitPath: nil, environment: [:], executable: nil)
            == ["libonnxruntime.so.1"])
    }

    @Test("this test process finds the package's own library from its own location")
    func packageLibraryFromTheTestBundle() throws {
        let executable = try #require(ORTLibrary.executablePath)
        #expect(executable.hasPrefix(Repository.root.resolvingSymlinksInPath().path + "/.build"), "\(executable)")
        let paths = ORTLibrary.candidatePaths(explicitPath: nil, environment: [:])
        #expect(paths.contains(Repository.root.resolvingSymlinksInPath().path + "/.ort/lib/libonnxruntime.so.1"),
            "\(paths)")
    }

    @Test("session from bytes: names, shapes, types, metadata")
    func introspection() throws {
        let session = try ORTSession(
            bytes: Repository.bytes("models/yolov3-tiny-coco-416.onnx"), environment: environment)
        #expect(session.inputs == [TensorInfo(name: "images", elementType: .float, shape: [1, 3, 416, 416],
            symbolicShape: session.inputs[0].symbolicShape)])
        #expect(session.outputs.count == 1)
        #expect(session.outputs[0].shape == [1, 2535, 85])
        #expect(session.metadata.custom["names"]?.hasPrefix("{0: 'person', 1: 'bicycle'") == true)
        #expect(session.metadata.custom["imgsz"] == "[416, 416]")

        let dynamic = try ORTSession(bytes: Repository.bytes("models/nudenet-320n.onnx"), environment: environment)
        #expect(dynamic.inputs[0].isDynamic)
        #expect(dynamic.inputs[0].shape[2] == -1)
    }

    @Test("run returns outputs of the declared shape; concurrent runs agree")
    func run() async throws {
        let session = try ORTSession(
            bytes: Repository.bytes("models/yolov3-tiny-coco-416.onnx"), environment: environment,
            options: SessionOptions(intraOpThreads: 1))
        let input = (0..<(3 * 416 * 416)).map { Float($0 % 255) / 255 }
        let first = try session.run(.float(input, shape: [1, 3, 416, 416]))
        #expect(first[0].shape == [1, 2535, 85])
        let reference = try first[0].floats()
        #expect(reference.allSatisfy { $0.isFinite })
        let sums = await withTaskGroup(of: Float.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let out = try? session.run(.float(input, shape: [1, 3, 416, 416]))
                    return (try? out?[0].withFloats { span in (0..<span.count).reduce(Float(0)) { $0 + span[$1] } })
                        ?? .nan
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let expected = reference.reduce(0, +)
        #expect(sums.allSatisfy { $0 == expected })
    }

    @Test("a session created at nice 10 starts its pool threads at the process's priority, and joins them when released")
    func poolThreadsKeepTheProcessPriority() async throws {
        let processNice = try #require(Self.nice(task: "self"))
        let before = Set(Self.poolThreads())
        // Created on a thread of its own at nice 10, as the service's load workers create sessions.
        let created = Locked<(session: ORTSession?, creatorNice: Int?, error: String?)>((nil, nil, nil))
        let thread = Thread {
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
            let nice = Self.nice(task: "thread-self")
            do {
                let session = try ORTSession(bytes: Repository.bytes("models/yolov3-tiny-coco-416.onnx"),
                    environment: environment, options: SessionOptions(intraOpThreads: 3))
                created.withLock { $0 = (session, nice, nil) }
            } catch {
                created.withLock { $0 = (nil, nice, "\(error)") }
            }
        }
        thread.start()
        #expect(await eventually(timeout: .seconds(120)) { created.withLock { $0.session != nil || $0.error != nil } })
        #expect(created.withLock { $0.error } == nil)
        #expect(created.withLock { $0.creatorNice } == 10, "the creating thread must run at nice 10 for this test")
        let mine = Set(Self.poolThreads()).subtracting(before)
        // Three intra-op threads: the caller of Run and two pool threads (other suites' sessions may add more).
        #expect(mine.count >= 2)
        // Threads of other suites' sessions may have ended meanwhile: only the ones still there are read.
        let read = mine.compactMap { Self.nice(task: "self/task/\($0)") }
        #expect(read.count >= 2 && read.allSatisfy { $0 == processNice }, "pool threads' nice values: \(read)")
        let outputs = try #require(created.withLock { $0.session })
            .run(.float([Float](repeating: 0.5, count: 3 * 416 * 416), shape: [1, 3, 416, 416]))
        #expect(outputs[0].shape == [1, 2535, 85])
        // Released: ORT ends its pool threads and the join hook waits for them.
        created.withLock { $0.session = nil }
        #expect(await eventually(timeout: .seconds(60)) { Set(Self.poolThreads()).isDisjoint(with: mine) })
    }

    /// The thread ids of the process's ORT pool threads.
    static func poolThreads() -> [Int] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap { task in
            let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
            return comm.trimmingCharacters(in: .whitespacesAndNewlines) == "ort-pool" ? Int(task) : nil
        }
    }

    /// A task's nice value (`/proc/<path>/stat`, field 19), nil when it is gone.
    static func nice(task path: String) -> Int? {
        guard let stat = try? String(contentsOfFile: "/proc/\(path)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name (which may hold spaces) start with field 3, the state.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 16 ? Int(fields[16]) : nil
    }

    @Test("every spinning policy is taken by ORT and leaves the outputs unchanged")
    func spinning() throws {
        #expect(IntraOpSpinning(rawValue: "during-run") == .duringRun)
        #expect(SessionOptions().spinning == .never)
        let bytes = try Repository.bytes("models/yolov3-tiny-coco-416.onnx")
        let input = (0..<(3 * 416 * 416)).map { Float($0 % 251) / 251 }
        var outputs: [IntraOpSpinning: [Float]] = [:]
        for policy in IntraOpSpinning.allCases {
            let session = try ORTSession(
                bytes: bytes, environment: environment, options: SessionOptions(intraOpThreads: 2, spinning: policy))
            // Twice: with `.duringRun` the second Run starts after ORT stopped the threads' spinning.
            let first = try session.run(.float(input, shape: [1, 3, 416, 416]))[0].floats()
            let second = try session.run(.float(input, shape: [1, 3, 416, 416]))[0].floats()
            #expect(first == second, "\(policy)")
            outputs[policy] = first
        }
        #expect(outputs[.duringRun] == outputs[.never])
        #expect(outputs[.always] == outputs[.never])
        #expect(outputs[.never]?.count == 2535 * 85)
    }

    @Test("float16 tensors: fp16 input fed as float16, fp16 output converted")
    func float16() throws {
        let session = try ORTSession(bytes: Repository.bytes("models/synthetic/yolov5-nc80-416-fp16.onnx"),
            environment: environment, options: SessionOptions(intraOpThreads: 1))
        #expect(session.inputs[0].elementType == .float16)
        #expect(session.outputs[0].elementType == .float16)
        let shape = session.inputs[0].shape
        let input = [Float16](repeating: 0.5, count: shape.reduce(1, *))
        let out = try session.run(.float16(input, shape: shape))
        let values = try out[0].floats()
        #expect(values.count == out[0].shape.reduce(1, *))
        #expect(values.allSatisfy { $0.isFinite })
        #expect(throws: ORTError.self) { try out[0].withFloats { $0.count } }
        #expect(throws: ORTError.self) { try session.run(.float([Float](repeating: 0, count: input.count), shape: shape)) }
    }

    @Test("ORT errors carry ORT's message and what was being done")
    func errors() throws {
        do {
            _ = try ORTSession(bytes: [1, 2, 3, 4], environment: environment, label: "garbage.onnx")
            Issue.record("garbage loaded")
        } catch {
            #expect(error.operation.contains("garbage.onnx"))
            #expect(!error.message.isEmpty)
        }
        let session = try ORTSession(
            bytes: Repository.bytes("models/yolov3-tiny-coco-416.onnx"), environment: environment)
        #expect(throws: ORTError.self) { try session.run(.float([0, 1], shape: [1, 3, 416, 416])) }
    }

    @Test("asking for CUDA or TensorRT on a CPU-only library is a clear error")
    func providers() throws {
        let providers = try environment.library.availableProviders()
        try #require(!providers.contains("CUDAExecutionProvider"), "this test assumes the CPU-only wheel")
        let bytes = Repository.bytes("models/yolov3-tiny-coco-416.onnx")
        do {
            _ = try ORTSession(bytes: bytes, environment: environment, options: SessionOptions(provider: .cuda(deviceID: 0)))
            Issue.record("CUDA session created on a CPU-only build")
        } catch {
            #expect(error.kind == .providerUnavailable(requested: "cuda:0", available: providers))
            #expect(error.description.contains("not available"))
        }
    }
}
