import Foundation
import ImageCodecs
import TestSupport
import Testing

/// The real `yoloswap` binary (built by `swift build`), end to end.
@Suite("yoloswap CLI", .serialized)
struct CLITests {
    let model = Repo.model("yolov3-tiny-coco-416.onnx")

    @Test("detect --format json: one object per image with model, image, detections, timings")
    func detectJSON() async throws {
        let r = try await runProcess(Repo.binary, ["detect", "--model", model, "--format", "json", "--threads", "1",
            Repo.image("bus.jpg"), Repo.image("zidane.jpg")])
        try #require(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["image", "model", "detections", "timings_ms"])
        let modelInfo = try #require(object["model"] as? [String: Any])
        #expect((modelInfo["sha256"] as? String)?.count == 64)
        #expect(modelInfo["format"] as? String == "yolov5")
        #expect(modelInfo["nc"] as? Int == 80)
        #expect(modelInfo["imgsz"] as? [Int] == [416, 416])
        let timings = try #require(object["timings_ms"] as? [String: Double])
        #expect(Set(timings.keys) == ["decode", "preprocess", "inference", "postprocess"])
        let parsed = try decodeJSONLines(r.stdout)
        #expect(parsed[0].image.width == 810 && parsed[0].image.height == 1080)
        #expect(parsed[0].detections.contains { $0.class_name == "bus" })
    }

    @Test("bad images are reported per file with a clear message and a non-zero exit; good ones still print")
    func badImages() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty.jpg").path
        let truncated = dir.appendingPathComponent("truncated.jpg").path
        let text = dir.appendingPathComponent("notes.png").path
        FileManager.default.createFile(atPath: empty, contents: Data())
        let bus = Data(Repository.bytes("models/images/bus.jpg"))
        FileManager.default.createFile(atPath: truncated, contents: bus.prefix(bus.count / 2))
        FileManager.default.createFile(atPath: text, contents: Data("hello, not an image".utf8))
        let r = try await runProcess(Repo.binary, ["detect", "--model", model, "--format", "json", empty, truncated,
            Repo.image("dog.jpg"), text, dir.appendingPathComponent("missing.jpg").path])
        #expect(r.status == 1)
        #expect(try decodeJSONLines(r.stdout).count == 1)
        #expect(r.stderr.contains("empty.jpg") && r.stderr.lowercased().contains("empty"))
        #expect(r.stderr.contains("truncated.jpg") && r.stderr.lowercased().contains("truncated"))
        #expect(r.stderr.contains("notes.png") && r.stderr.lowercased().contains("unsupported"))
        #expect(r.stderr.contains("missing.jpg"))
        #expect(!r.stderr.contains("Fatal error"))
    }

    @Test("--save writes annotated JPEGs of the original size, one per image even when two share a base name, never over a file that exists")
    func save() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("save-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try await runProcess(Repo.binary, ["detect", "--model", model, "--save", dir, Repo.image("bus.jpg")])
        try #require(r.status == 0, "\(r.stderr)")
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/bus.jpg")))
        let annotated = try ImageDecoder.decode(bytes)
        let original = try ImageDecoder.decode(Repository.bytes("models/images/bus.jpg"))
        #expect(annotated.width == 810 && annotated.height == 1080)
        // Boxes and labels were drawn: a sizeable share of pixels changed beyond JPEG noise.
        let changed = zip(annotated.pixels, original.pixels).filter { abs(Int($0) - Int($1)) > 60 }.count
        #expect(changed > 10_000)

        // Two images with one base name (bus.jpg and a copy of zidane.jpg named bus.png's base): two files.
        let other = FileManager.default.temporaryDirectory.appendingPathComponent("other-\(UUID())").path
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: other) }
        try FileManager.default.copyItem(atPath: Repo.image("zidane.jpg"), toPath: other + "/bus.jpg")
        let fresh = dir + "/fresh"
        let both = try await runProcess(Repo.binary, ["detect", "--model", model, "--save", fresh,
            Repo.image("bus.jpg"), other + "/bus.jpg"])
        try #require(both.status == 0, "\(both.stderr)")
        let first = try ImageDecoder.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: fresh + "/bus.jpg"))))
        let second = try ImageDecoder.decode([UInt8](try Data(contentsOf: URL(fileURLWithPath: fresh + "/bus-2.jpg"))))
        #expect(first.width == 810 && second.width == 1280, "\(first.width) \(second.width)")

        // Saved into the folder of the photo itself, twice: the photo is left as it was (it was written over with
        // its annotated copy), and each run takes the next free name.
        let photo = other + "/bus.jpg"
        let before = try Data(contentsOf: URL(fileURLWithPath: photo))
        for _ in 0..<2 {
            let r = try await runProcess(Repo.binary, ["detect", "--model", model, "--save", other, photo])
            try #require(r.status == 0, "\(r.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: photo)) == before, "the input photo was written over")
        #expect(try FileManager.default.contentsOfDirectory(atPath: other).sorted()
            == ["bus-2.jpg", "bus-3.jpg", "bus.jpg"])
    }

    @Test("inspect prints the signature")
    func inspect() async throws {
        let r = try await runProcess(Repo.binary, ["inspect", "--model", Repo.model("nudenet-320n.onnx")])
        try #require(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("format:        yolov8"))
        #expect(r.stdout.contains("classes:       18"))
        #expect(r.stdout.contains("dynamic; using 320x320"))
        #expect(r.stdout.contains("c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"))
    }

    @Test("bench --json reports every stage and the end-to-end / raw ratio")
    func bench() async throws {
        let r = try await runProcess(Repo.binary, ["bench", "--model", model, "--runs", "3", "--warmup", "1", "--json",
            Repo.image("bus.jpg")])
        try #require(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        var medians: [String: Double] = [:]
        for stage in ["decode", "preprocess", "inference", "postprocess", "end_to_end", "raw_run"] {
            let s = try #require(object[stage] as? [String: Double], "\(stage)")
            medians[stage] = s["median_ms"] ?? 0
            #expect(medians[stage]! > 0)
        }
        // Each run's end-to-end time contains its inference, so their medians are ordered too. Whether end-to-end beats
        // the raw Run (measured in another loop) is left to the machine's noise: the ratio is checked as computed.
        #expect(medians["end_to_end"]! >= medians["inference"]!)
        let ratio = try #require(object["end_to_end_over_raw"] as? Double)
        #expect(abs(ratio - medians["end_to_end"]! / medians["raw_run"]!) <= 1e-9 * ratio)
        #expect(object["spin"] as? String == "during-run")
        let never = try await runProcess(Repo.binary, ["bench", "--model", model, "--runs", "2", "--warmup", "0", "--json",
            "--threads", "2", "--spin", "never", Repo.image("bus.jpg")])
        try #require(never.status == 0, "\(never.stderr)")
        #expect(never.stdout.contains("\"spin\":\"never\""))
    }

    @Test("usage errors and a missing model exit non-zero with a message")
    func errors() async throws {
        let missing = try await runProcess(Repo.binary, ["detect", "--model", "/nonexistent.onnx", Repo.image("bus.jpg")])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("/nonexistent.onnx"))
        let badImgsz = try await runProcess(Repo.binary, ["detect", "--model", model, "--imgsz", "abc", Repo.image("bus.jpg")])
        #expect(badImgsz.status != 0 && badImgsz.stderr.contains("--imgsz"))
        let badProvider = try await runProcess(Repo.binary, ["detect", "--model", model, "--provider", "cuda",
            Repo.image("bus.jpg")])
        #expect(badProvider.status != 0 && badProvider.stderr.contains("not available"))
        let badSpin = try await runProcess(Repo.binary, ["bench", "--model", model, "--spin", "sometimes",
            Repo.image("bus.jpg")])
        #expect(badSpin.status != 0 && badSpin.stderr.contains("--spin") && badSpin.stderr.contains("during-run"))
    }

    @Test("flags a command would drop, misread or overflow on are usage errors (exit 64, the flag named)")
    func refusedFlags() async throws {
        let state = try TemporaryDirectory(prefix: "cli-flags")
        let cases: [(arguments: [String], says: String)] = [
            // Loaded through the slot's pipeline, which reads both from the model: the flags were dropped.
            (["stream", "--source", "/nonexistent.mp4", "--model", model, "--imgsz", "640"], "--imgsz is not taken"),
            (["bench-stream", "--video", "/nonexistent.mp4", "--model", model, "--output-format", "yolov8"],
             "--output-format is not taken"),
            // Five rollbacks with no swap before them: each failed, exit 1, after the whole Python loop.
            (["bench-stream", "--video", "/nonexistent.mp4", "--model", model, "--swaps", "0"], "--rollbacks needs"),
            (["bench-swap", "--swaps", "0", "--image", "/nonexistent.jpg"], "--rollbacks needs"),
            // Shifted by 20 bits, it wrapped to a budget of 0.
            (["bench-swap", "--memory-budget-mb", "17592186044416", "--image", "/nonexistent.jpg"],
             "--memory-budget-mb lies in"),
            // warmup + runs trapped after the model was loaded.
            (["bench", "--model", model, "--warmup", "9223372036854775807", Repo.image("bus.jpg")], "--warmup in"),
            // Read as 640: every part must be a number.
            (["detect", "--model", model, "--imgsz", "640xfoo", Repo.image("bus.jpg")], "--imgsz must be"),
            (["detect", "--model", model, "--imgsz", "640x", Repo.image("bus.jpg")], "--imgsz must be"),
            // Without --load there is nothing for them to qualify: they were dropped.
            (["swap", "--state-dir", state.path, "--switch", "--sha256", String(repeating: "0", count: 64)],
             "--sha256 qualifies the model --load loads"),
        ]
        for (arguments, says) in cases {
            let result = try await runProcess(Repo.binary, arguments)
            #expect(result.status == 64 && !result.killedBySignal && result.stderr.contains(says),
                "\(arguments): status \(result.status)\n\(result.stderr.prefix(400))")
        }
    }

    @Test("results that cannot be written (a full disk) fail the command, which exited 0 (detect, keygen) or trapped (fleet sign); thread flags are bounded")
    func unwritableOutput() async throws {
        func toFull(_ arguments: [String]) async throws -> ProcessResult {
            try await runProcess("/bin/sh", ["-c", ([Repo.binary] + arguments).map { "'\($0)'" }.joined(separator: " ")
                + " > /dev/full"])
        }
        let detect = try await toFull(["detect", "--model", model, "--format", "json", "--threads", "1",
            Repo.image("bus.jpg")])
        #expect(detect.status == 1 && detect.stderr.contains("cannot write to standard output"), "\(detect.stderr)")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = dir.appendingPathComponent("op.key").path
        let keygen = try await toFull(["keygen", "--out", key])
        #expect(keygen.status == 1 && keygen.stderr.contains("cannot write to standard output"), "\(keygen.stderr)")
        let sign = try await toFull(["fleet", "sign", "--key", key, "--device", "d1", "--action", "status"])
        #expect(sign.status == 1 && sign.stderr.contains("fleet sign failed"), "\(sign.status) \(sign.stderr)")
        // A flag the action does not read: refused before signing (the device would refuse the command).
        let extra = try await runProcess(Repo.binary, ["fleet", "sign", "--key", key, "--device", "d1", "--action",
            "status", "--slot", "default"])
        #expect(extra.status == 64 && extra.stderr.contains("--slot is not read by action status"), "\(extra.stderr)")
        // A hundred thousand threads were made, 16 GB of stacks, before the first Run.
        let threads = try await runProcess(Repo.binary, ["detect", "--model", model, "--threads", "100000",
            Repo.image("bus.jpg")])
        #expect(threads.status == 64 && threads.stderr.contains("--threads lies in 0...256"), "\(threads.stderr)")
        let swapThreads = try await runProcess(Repo.binary, ["swap", "--state-dir", dir.path, "--threads=-1"])
        #expect(swapThreads.status == 64 && swapThreads.stderr.contains("--threads lies in 1...256"))
    }

    @Test("without any ONNX Runtime library the error names every path tried")
    func missingLibrary() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("nolib-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent("yoloswap").path
        try copyExecutable(from: Repo.binary, to: copy)
        var env = ProcessInfo.processInfo.environment
        env["ORT_DYLIB_PATH"] = "/nonexistent/libonnxruntime.so"
        let result = try await runProcess(copy, ["inspect", "--model", model, "--ort-library", "/also/missing.so"],
            environment: env, in: dir)
        let stderr = result.stderr
        // A system-wide libonnxruntime.so.1 would make this load; this machine has none (setup installs none).
        #expect(result.status != 0)
        #expect(stderr.contains("/also/missing.so"))
        #expect(stderr.contains("/nonexistent/libonnxruntime.so"))
        #expect(stderr.contains(dir.path + "/libonnxruntime.so.1"))
        #expect(stderr.contains("scripts/setup"))
    }

    @Test("ORT_LOAD_CONFIG_FROM_MODEL set: refused before ONNX Runtime is loaded (it would take each session's options from the model)")
    func configFromModelRefused() async throws {
        var env = ProcessInfo.processInfo.environment
        env["ORT_LOAD_CONFIG_FROM_MODEL"] = "1"
        let result = try await runProcess(Repo.binary, ["inspect", "--model", model], environment: env)
        #expect(result.status == 1 && result.stderr.contains("ORT_LOAD_CONFIG_FROM_MODEL is set"), "\(result.stderr)")
        env["ORT_LOAD_CONFIG_FROM_MODEL"] = "0"
        #expect(try await runProcess(Repo.binary, ["inspect", "--model", model], environment: env).status == 0)
    }

    /// Whoever can write above the working directory must not get code run in the service: the library planted there
    /// is a working ONNX Runtime, so a lookup that tried it would load it and print its path.
    @Test("a library planted above the working directory is never tried")
    func libraryAboveWorkingDirectory() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("planted-\(UUID())")
        let bin = dir.appendingPathComponent("bin"), untrusted = dir.appendingPathComponent("untrusted")
        let planted = untrusted.appendingPathComponent(".ort/lib")
        let work = untrusted.appendingPathComponent("work")
        for folder in [bin, planted, work] {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        }
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createSymbolicLink(atPath: planted.appendingPathComponent("libonnxruntime.so.1").path,
            withDestinationPath: Repository.path(".ort/lib/libonnxruntime.so.1"))
        let copy = bin.appendingPathComponent("yoloswap").path
        try copyExecutable(from: Repo.binary, to: copy)
        var env = ProcessInfo.processInfo.environment
        env["ORT_DYLIB_PATH"] = nil
        let result = try await runProcess(copy, ["inspect", "--model", model], environment: env, in: work)
        #expect(!result.stdout.contains(untrusted.path), "\(result.stdout)")
        #expect(!result.stderr.contains(untrusted.path), "\(result.stderr)")
        // A system-wide libonnxruntime.so.1 would make this load; this machine has none (setup installs none).
        #expect(result.status != 0)
        #expect(result.stderr.contains(bin.path + "/libonnxruntime.so.1"), "\(result.stderr)")
    }

    @Test("our Darknet converter matches OpenCV's Darknet reader within 1e-4")
    func converterMatchesOpenCV() async throws {
        let r = try await runProcess(Repo.python, [Repository.path("tools/check_converter.py")])
        #expect(r.status == 0, "check_converter.py: \(r.stdout)\n\(r.stderr)")
    }
}
