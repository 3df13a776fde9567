import Foundation
import HotSwap
import Primitives
@testable import Streams
import TestSupport
import Testing
@testable import VideoDecoding
import YOLO

extension StreamSuite {
    @Suite("Sources, decoding and the CLI")
    struct SourceTests {
        static let model = Repository.path("models/yolov3-tiny-coco-320.onnx")

        @Test("`yoloswap stream` on an MJPEG video prints frames 0…59 in order, with pts, model stamp and detections")
        func cliOnMJPEG() async throws {
            let cli = try await runProcess(yoloswapBinary, ["stream", "--source", TestVideos.mjpeg, "--model", Self.model,
                "--threads", "1"])
            #expect(cli.status == 0, "\(cli.stderr)")
            let lines = cli.stdout.split(separator: "\n")
            let results = try lines.map { try JSONDecoder().decode(StreamFrameResult.self, from: Data($0.utf8)) }
            #expect(results.map(\.frame) == Array(0..<60))
            #expect(results.allSatisfy { abs(($0.pts ?? -1) - Double($0.frame) / 30) < 1e-9 })
            #expect(results.allSatisfy { $0.image.width == 320 && $0.image.height == 240 })
            #expect(Set(results.map(\.model.sha256)) == [try Fixtures.sha256(Self.model)])
            #expect(results.contains { !$0.detections.isEmpty })
            #expect(cli.stderr.contains("\"type\":\"ended\""))
        }

        @Test("`yoloswap stream --max-frames N` detects and prints frames 0…N-1 and ends, frames in flight or not")
        func cliMaxFrames() async throws {
            let common = ["stream", "--source", TestVideos.mjpeg, "--model", Self.model, "--threads", "1"]
            let cli = try await runProcess(yoloswapBinary, common + ["--frames-in-flight", "1", "--max-frames", "7"])
            #expect(cli.status == 0, "\(cli.stderr)")
            let frames = try cli.stdout.split(separator: "\n").map {
                try JSONDecoder().decode(StreamFrameResult.self, from: Data($0.utf8)).frame
            }
            #expect(frames == Array(0..<7))

            // Two frames in flight: the stream takes no frame past the limit.
            let summary = try await runProcess(yoloswapBinary,
                common + ["--frames-in-flight", "2", "--summary", "--max-frames", "3"])
            #expect(summary.status == 0, "\(summary.stderr)")
            let status = try JSONDecoder.yoloswap.decode(StreamStatus.self, from: Data(summary.stdout.utf8))
            // No frame past the limit is detected, in flight or not: the stream ends there, as a file's end ends it.
            #expect(status.state == .ended)
            #expect(status.frames_detected == 3)

            let refused = try await runProcess(yoloswapBinary, common + ["--max-frames", "0"])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("--max-frames must be positive"), "\(refused.stderr)")
            // Past what FFmpeg's `-max_pixels` takes: refused with the range, not a failed decode.
            let tooMany = try await runProcess(yoloswapBinary, common + ["--max-pixels", "3000000000"])
            #expect(tooMany.status == 64 && tooMany.stderr.contains("--max-pixels lies in"), "\(tooMany.stderr)")

            // Standard output that cannot be written (a full disk): the stream stops and says so; it used to trap.
            let full = try await runProcess("/bin/sh", ["-c", ([yoloswapBinary] + common + ["--max-frames", "30"])
                .map { "'\($0)'" }.joined(separator: " ") + " > /dev/full"])
            #expect(full.status == 1 && full.stderr.contains("cannot write to standard output"),
                "\(full.status) \(full.stderr.suffix(500))")
            // A reader that leaves (`head`): the same, where SIGPIPE ended the process unannounced (status 141).
            let closed = try await runProcess("/bin/bash", ["-c", ([yoloswapBinary] + common)
                .map { "'\($0)'" }.joined(separator: " ") + " | head -c 1 > /dev/null; exit ${PIPESTATUS[0]}"])
            #expect(closed.status == 1 && closed.stderr.contains("cannot write to standard output: Broken pipe"),
                "\(closed.status) \(closed.stderr.suffix(500))")
        }

        @Test("`yoloswap stream`: a second SIGINT, while the first one's stop waits on a stdout nobody reads, kills it")
        func secondSignal() async throws {
            let output = Pipe()
            let process = Process()
            // `env --default-signal`: the test process blocks SIGINT, and a child would inherit that.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["--default-signal=INT", yoloswapBinary, "stream", "--source", TestVideos.h264,
                "--model", Self.model, "--threads", "1"]
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            defer {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                try? output.fileHandleForReading.close()
            }
            // Nobody reads its stdout (300 frames' lines are more than a pipe holds): once the pipe is full, the
            // stream's sink is blocked writing a line, and a stop waits for it. A thread in write(1, …) shows it.
            #if arch(x86_64)
                let writeCall = "1 0x1 "
            #else
                let writeCall = "64 0x1 "
            #endif
            let tasks = "/proc/\(process.processIdentifier)/task"
            let blocked = await eventually(timeout: .seconds(120)) {
                let threads = (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []
                return threads.contains { thread in
                    ((try? String(contentsOfFile: "\(tasks)/\(thread)/syscall", encoding: .utf8)) ?? "")
                        .hasPrefix(writeCall)
                }
            }
            try #require(blocked, "the stream never blocked on its stdout")
            kill(process.processIdentifier, SIGINT)
            // Apart, so that the two are not merged into one pending signal.
            try await Task.sleep(for: .milliseconds(300))
            #expect(process.isRunning, "the first SIGINT's stop finished although stdout is blocked")
            kill(process.processIdentifier, SIGINT)
            #expect(await eventually(timeout: .seconds(30)) { !process.isRunning })
            #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGINT,
                "\(process.terminationReason) \(process.terminationStatus)")
        }

        @Test("a frame over the pixel limit, a file that is not a video, a missing ffmpeg: the stream fails with the reason")
        func failures() async throws {
            // FFmpeg's decoders are held to the limit too (`-max_pixels`, an eighth above it: they check an aligned
            // width): just over the limit this decoder's check refuses the frame, far over it FFmpeg does; the error
            // is the same.
            for video in [TestVideos.mjpeg, TestVideos.transportStream] {
                for limit in [320 * 239, 160 * 120] {
                    let overLimit = try FFmpegDecoder(source: .file(path: video), maxPixels: limit)
                    do {
                        _ = try overLimit.nextFrame()
                        Issue.record("a frame over the limit was decoded")
                    } catch {
                        guard case .frameTooLarge(_, 320, 240, limit) = error else {
                            Issue.record("\(video), limit \(limit): \(error)")
                            continue
                        }
                    }
                }
            }
            // A frame over the limit in a stream that is not decoded (a second, larger track): FFmpeg refuses it while
            // probing the input, then decodes the first video stream's frames, all of them.
            let tracks = try TemporaryDirectory()
            let twoTracks = tracks.file("two.mkv")
            let made = try await runProcess("/usr/bin/ffmpeg", ["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                "testsrc=size=64x64:rate=5:duration=1", "-f", "lavfi", "-i", "testsrc=size=640x480:rate=5:duration=1",
                "-map", "0", "-map", "1", "-c:v", "mjpeg", twoTracks])
            try #require(made.status == 0, "\(made.stderr)")
            let small = try FFmpegDecoder(source: .file(path: twoTracks), maxPixels: 5000)
            var indices: [Int] = []
            while let frame = try small.nextFrame() { indices.append(frame.index) }
            #expect(indices == Array(0..<5))
            #expect(FrameReport.refusedSize(parsing: "[h264 @ 0x5] [IMGUTILS @ 0x7] Picture size 320x240 exceeds "
                + "specified max pixel count 76000, see the documentation if you wish to increase it") ?? (0, 0)
                == (320, 240))
            // The refusal's words in the input's metadata (a title the source chose), as FFmpeg's dump prints it.
            for spoof in ["    service_name    : Picture size 1x1 exceeds specified max pixel count",
                          "    title           : [IMGUTILS @ 0x7] Picture size 1x1 exceeds specified max pixel count",
                          "[mpegts @ 0x5] Picture size 1x1 exceeds specified max pixel count"] {
                #expect(FrameReport.refusedSize(parsing: spoof) == nil, "\(spoof)")
            }

            let folder = try TemporaryDirectory()
            let garbage = folder.file("garbage.mp4")
            try Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7919) }).write(to: URL(fileURLWithPath: garbage))
            let decoder = try FFmpegDecoder(source: .file(path: garbage))
            do {
                _ = try decoder.nextFrame()
                Issue.record("a garbage file decoded")
            } catch {
                guard case .ffmpegFailed(_, let status, _) = error else { throw error }
                #expect(status.hasPrefix("exit status"))
            }
            #expect(throws: VideoDecodeError.self) {
                _ = try FFmpegDecoder(source: .file(path: garbage), ffmpeg: "/nonexistent/ffmpeg")
            }
        }

        /// A manager with a slot `line` serving yolov3-tiny 320 on one worker, one intra-op thread.
        static func lineSlot() async throws -> (ModelManager, ModelSlot) {
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1, intraOpThreads: 1,
                warmupRuns: 1), loader: streamLoader)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line",
                path: Repository.path("models/yolov3-tiny-coco-320.onnx")))
            return (manager, slot)
        }

        @Test("a cap of one frame in 1000 s does not hold a stop back; under `latest` a cap detects the newest frame")
        func capWaits() async throws {
            let (manager, slot) = try await Self.lineSlot()
            let capped = VideoStream(id: "capped", configuration: StreamConfiguration(source: .file(path: TestVideos.mjpeg),
                slot: "line", fpsCap: 0.001), slot: slot)
            capped.start()
            #expect(await eventually(timeout: .seconds(60)) { capped.currentStatus.frames_detected == 1 })
            let asked = ContinuousClock.now
            await capped.stop()
            #expect(ContinuousClock.now - asked < .seconds(30), "the stop waited for the cap")
            #expect(capped.currentStatus.state == .stopped && capped.currentStatus.frames_detected == 1)

            // The 300 frames decode in well under the cap's 20 s (5 s was not, at a loaded CI run's start): the frame
            // taken when the wait ends is the last one, so two frames are detected, the first and the last. (Taken
            // before the wait, the second would be one of the first few, decoded while the first was detected.)
            let log = ResultLog()
            let latest = VideoStream(id: "latest", configuration: StreamConfiguration(
                source: .file(path: TestVideos.transportStream), slot: "line", backPressure: .latest, fpsCap: 0.05),
                slot: slot, sink: { log.append($0) })
            latest.start()
            await latest.waitUntilFinished()
            let frames = log.all.map(\.frame)
            #expect(frames.count == 2 && frames.last == 299, "\(frames)")
            await manager.shutdown()
        }

        @Test("preview viewers of a stream are handed the same frames, whose encoding is made once between them")
        func previewEncodedOnce() async throws {
            let (manager, slot) = try await Self.lineSlot()
            let stream = VideoStream(id: "previewed", configuration: StreamConfiguration(
                source: .file(path: TestVideos.mjpeg), slot: "line"), slot: slot)
            let viewers = [stream.previewFrames(), stream.previewFrames()].map { frames in
                Task { () -> [Int: PreviewFrame] in
                    var seen: [Int: PreviewFrame] = [:]
                    for await frame in frames { seen[frame.frame] = frame }
                    return seen
                }
            }
            stream.start()
            await stream.waitUntilFinished()
            let (first, second) = (await viewers[0].value, await viewers[1].value)
            // Each viewer keeps only the newest frame it has not read: both have the last one at least.
            let shared = Set(first.keys).intersection(second.keys)
            #expect(shared.contains(59), "\(first.keys.sorted()) / \(second.keys.sorted())")
            for frame in shared {
                let (a, b) = (try #require(first[frame]), try #require(second[frame]))
                #expect(a.encoded === b.encoded, "frame \(frame)")
            }
            let last = try #require(first[59])
            let encodings = Locked(0)
            let make = { () -> [UInt8] in encodings.withLock { $0 += 1 }; return [UInt8](repeating: 7, count: 3) }
            // A failed encoding is not kept: the next viewer makes it again; once made, it is everyone's.
            struct Failed: Error {}
            #expect(throws: Failed.self) { try last.encoded.value { () throws(Failed) -> [UInt8] in throw Failed() } }
            #expect(last.encoded.value(make) == [7, 7, 7])
            #expect(try #require(second[59]).encoded.value(make) == [7, 7, 7])
            #expect(encodings.value == 1)
            await manager.shutdown()
        }

        @Test("a preview viewer is shown the newest frame again after each keep-alive interval without a new one")
        func previewKeptAlive() async throws {
            let (manager, slot) = try await Self.lineSlot()
            var configuration = StreamConfiguration(source: .file(path: TestVideos.mjpeg), slot: "line", fpsCap: 0.001)
            configuration.keepAliveInterval = .milliseconds(200)
            let capped = VideoStream(id: "capped", configuration: configuration, slot: slot)
            var frames = capped.previewFrames().makeAsyncIterator()
            capped.start()
            // One frame detected, the next held for 1000 s by the cap: the first is shown three times (after the
            // placeholder, shown at the same interval while the first frame is on its way).
            var shown: [Int] = []
            while shown.count(where: { $0 >= 0 }) < 3, let frame = await frames.next() { shown.append(frame.frame) }
            #expect(shown.drop { $0 == -1 } == [0, 0, 0] && capped.currentStatus.frames_detected == 1, "\(shown)")
            await capped.stop()
            #expect(await frames.next() == nil)
            await manager.shutdown()
        }

        @Test("showinfo lines parse, padded values included; other lines, and lines without the secret tag, do not")
        func reportParsing() {
            let tag = FrameReport.randomTag()
            #expect(tag.count >= 17 && tag != FrameReport.randomTag())
            let line = "[showinfo@\(tag) @ 0x55c9] n:  12 pts:   6144 pts_time:0.4 pos:  1234 fmt:rgb24 sar:1/1 "
                + "s:320x240 i:P iskey:0 type:P checksum:5DA94BC2"
            let report = FrameReport(parsing: line, tag: tag)
            #expect(report == FrameReport(width: 320, height: 240, pts: 0.4, rawPTS: 6144))
            #expect(FrameReport(parsing: "[showinfo@\(tag) @ 0x1] n: 3 pts: NOPTS pts_time:NOPTS s:2x2", tag: tag)?.pts
                == nil)
            #expect(FrameReport(parsing: "Input #0, mov,mp4, from 'x.mp4':", tag: tag) == nil)
            #expect(FrameReport.timeBase(parsing: "[showinfo@\(tag) @ 0x1] config in time_base: 1/15360, frame_rate: 30/1",
                tag: tag) ?? (0, 0) == (1, 15360))
            // What media could print (a title with a line break): the default instance name, or another tag.
            let forged = "[Parsed_showinfo_1 @ 0x1] n: 0 pts: 0 pts_time:0 s:8192x8192"
            #expect(FrameReport(parsing: forged, tag: tag) == nil)
            #expect(FrameReport(parsing: "[showinfo@\(FrameReport.randomTag()) @ 0x1] n: 0 pts: 0 pts_time:0 s:64x64",
                tag: tag) == nil)
            #expect(FrameReport.timeBase(parsing: "[Parsed_showinfo_1 @ 0x1] config in time_base: 1/1", tag: tag) == nil)
        }

        @Test("a title that imitates a frame report (a line break inside it) leaves the frames in step")
        func forgedReport() async throws {
            let folder = try TemporaryDirectory()
            let video = folder.file("forged.mkv")
            let title = "x\n[Parsed_showinfo_1 @ 0x1] n:   0 pts:      0 pts_time:0 s:64x64 i:P"
            let made = try await runProcess("/usr/bin/ffmpeg", ["-y", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                "-i", "testsrc=size=160x120:rate=10", "-frames:v", "10", "-metadata", "title=\(title)", "-c:v", "mjpeg",
                video])
            try #require(made.status == 0, "\(made.stderr)")
            let decoder = try FFmpegDecoder(source: .file(path: video))
            var frames: [VideoFrame] = []
            while let frame = try decoder.nextFrame() { frames.append(frame) }
            #expect(frames.map(\.index) == Array(0..<10))
            #expect(frames.allSatisfy { $0.image.width == 160 && $0.image.height == 120 })
            #expect(frames.map { $0.pts ?? -1 } == (0..<10).map { Double($0) / 10 })
        }

        @Test("an HTTP source is read by stream demuxers only: MPEG-TS over HTTP decodes, a playlist (which would reach other hosts) is refused")
        func httpPlaylistRefused() async throws {
            let folder = try TemporaryDirectory()
            // A live MPEG-TS over HTTP (FFmpeg serving one client at the video's rate)...
            let livePort = try LoopbackPort.free()
            let live = try LiveSourceTests.SourceProcess("/usr/bin/ffmpeg", ["-nostdin", "-hide_banner", "-loglevel",
                "error", "-re", "-stream_loop", "-1", "-i", TestVideos.transportStream, "-c", "copy", "-f", "mpegts",
                "-listen", "1", "http://127.0.0.1:\(livePort)/live.ts"])
            defer { live.stop() }
            // ...and a playlist on a web server, naming a segment anywhere (here: that live stream).
            let webPort = try LoopbackPort.free()
            try "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1:\(livePort)/live.ts\n#EXT-X-ENDLIST\n"
                .write(toFile: folder.file("play.m3u8"), atomically: true, encoding: .utf8)
            let web = try LiveSourceTests.SourceProcess("/usr/bin/python3", ["-m", "http.server", "\(webPort)", "--bind",
                "127.0.0.1", "--directory", folder.path])
            defer { web.stop() }
            #expect(await eventually { LoopbackPort.accepts(port: webPort) }, "the web server did not start")

            let playlist = try FFmpegDecoder(source: .network(url: "http://127.0.0.1:\(webPort)/play.m3u8"))
            do {
                let frame = try playlist.nextFrame()
                Issue.record("the playlist was read: \(String(describing: frame))")
            } catch {
                #expect("\(error)".contains("not on whitelist"), "\(error)")
            }
            // Connecting to FFmpeg's server before it listens would fail: the decoder is made once it does. (A
            // probe connection would take its one client's place.)
            #expect(await eventually { Self.listens(port: livePort) }, "FFmpeg's HTTP server did not start")
            let direct = try FFmpegDecoder(source: .network(url: "http://127.0.0.1:\(livePort)/live.ts"))
            defer { direct.close() }
            for index in 0..<5 {
                let frame = try direct.nextFrame()
                #expect(frame?.index == index && frame?.image.width == 320, "\(String(describing: frame))")
            }
        }

        /// Whether a TCP socket listens on the loopback port (`/proc/net/tcp`, state 0A), without connecting to it.
        static func listens(port: Int) -> Bool {
            let hex = String(format: ":%04X ", port)
            let table = (try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)) ?? ""
            return table.split(separator: "\n").contains { $0.contains(hex) && $0.contains(" 0A ") }
        }

        @Test("a child (FFmpeg) gets no descriptor of this process but its stdin, stdout and stderr")
        func childInheritsNothing() throws {
            // Opened without close-on-exec, as a library's file or socket might be: the child must not get it.
            let planted = open("/etc/hostname", O_RDONLY)
            try #require(planted >= 3)
            defer { close(planted) }
            // `; true` keeps the shell from exec'ing ls, so the listing is the shell's own descriptors.
            let child = try ChildProcess(["sh", "-c", "ls /proc/$$/fd; true"])
            let output = FileHandle(fileDescriptor: child.stdout, closeOnDealloc: false).readDataToEndOfFile()
            let stderr = FileHandle(fileDescriptor: child.stderr, closeOnDealloc: true).readDataToEndOfFile()
            #expect(child.waitForExit() == 0, "\(String(decoding: stderr, as: UTF8.self))")
            let descriptors = String(decoding: output, as: UTF8.self).split(whereSeparator: \.isWhitespace)
            #expect(descriptors.sorted() == ["0", "1", "2"], "planted \(planted)")
        }

        @Test("a file handed to a child is its descriptor 3, and nothing else is")
        func childGetsPassedFile() throws {
            let planted = open("/etc/hostname", O_RDONLY)
            try #require(planted >= 3)
            defer { close(planted) }
            let passed = open("/etc/os-release", O_RDONLY | O_CLOEXEC)
            try #require(passed >= 0)
            defer { close(passed) }
            let child = try ChildProcess(["sh", "-c", "ls /proc/$$/fd; cat <&3"], file: passed)
            let output = FileHandle(fileDescriptor: child.stdout, closeOnDealloc: false).readDataToEndOfFile()
            _ = FileHandle(fileDescriptor: child.stderr, closeOnDealloc: true).readDataToEndOfFile()
            #expect(child.waitForExit() == 0)
            let text = String(decoding: output, as: UTF8.self)
            let release = try String(contentsOfFile: "/etc/os-release", encoding: .utf8)
            #expect(text.hasSuffix(release))
            let descriptors = text.dropLast(release.count).split(whereSeparator: \.isWhitespace)
            #expect(descriptors.sorted() == ["0", "1", "2", "3"], "planted \(planted), passed \(passed)")
            // A descriptor numbered 3 or below (this process's stdin): copied above 3 first, then given as 3. (A
            // closed stdin is opened on /dev/null, the lowest free number.)
            if fcntl(0, F_GETFD) < 0 { _ = open("/dev/null", O_RDONLY) }
            let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/0")
            let low = try ChildProcess(["sh", "-c", "readlink /proc/self/fd/3"], file: 0)
            let target = FileHandle(fileDescriptor: low.stdout, closeOnDealloc: false).readDataToEndOfFile()
            _ = FileHandle(fileDescriptor: low.stderr, closeOnDealloc: true).readDataToEndOfFile()
            #expect(low.waitForExit() == 0)
            #expect(String(decoding: target, as: UTF8.self).trimmingCharacters(in: .newlines) == own)
        }

        @Test("files are opened with no symbolic link on the way: a link planted after the check fails the open")
        func linkPlantedAfterCheck() throws {
            let media = try TemporaryDirectory(), outside = try TemporaryDirectory()
            let root = try #require(realpath(media.path, nil).map { pointer in
                defer { free(pointer) }
                return String(cString: pointer)
            })
            try FileManager.default.createDirectory(atPath: root + "/sub", withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: TestVideos.mjpeg, toPath: root + "/sub/clip.avi")
            try FileManager.default.copyItem(atPath: TestVideos.mjpeg, toPath: outside.file("clip.avi"))
            let policy = SourcePolicy(mediaDirectory: root, outputDirectory: root)
            // Checked while the folder is real: the paths the policy gives back.
            let source = try policy.resolve("sub/clip.avi")
            let outputs = try ["sub/out.jsonl", "sub/out.mp4"].map { try policy.resolveOutput($0) }
            #expect(source == .file(path: root + "/sub/clip.avi"))
            let opened = try LinkFreePath.open(outputs[0], flags: O_WRONLY | O_CREAT | O_TRUNC)
            close(opened)
            #expect(try FFmpegDecoder(source: source).nextFrame()?.index == 0)

            // The folder swapped for a link to a folder outside: every open is refused, naming the link.
            try FileManager.default.moveItem(atPath: root + "/sub", toPath: root + "/was-sub")
            try FileManager.default.createSymbolicLink(atPath: root + "/sub", withDestinationPath: outside.path)
            let reason = "\(root)/sub is a symbolic link"
            #expect(throws: FileOpenError(path: outputs[0], reason: reason)) { _ = try JSONLinesFile(path: outputs[0]) }
            #expect(throws: FileOpenError(path: outputs[1], reason: reason)) {
                _ = try AnnotatedVideoOutput(path: outputs[1], fallbackFPS: nil, ffmpeg: "ffmpeg")
            }
            #expect(throws: VideoDecodeError.cannotOpen(source: root + "/sub/clip.avi", reason: reason)) {
                _ = try FFmpegDecoder(source: source)
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path) == ["clip.avi"])
            // A '/' followed by a combining mark is one character for Swift but still a separator: the link is refused
            // (it was handed to `openat` inside one part, which followed it and created the file outside).
            let marked = root + "/sub/\u{301}x.jsonl"
            #expect(throws: FileOpenError(path: marked, reason: reason)) { _ = try JSONLinesFile(path: marked) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: outside.path) == ["clip.avi"])

            // The file itself a link (to a file inside), a FIFO, a missing folder, paths that are not resolved ones.
            try FileManager.default.removeItem(atPath: root + "/sub")
            try FileManager.default.createSymbolicLink(atPath: root + "/link.avi",
                withDestinationPath: root + "/was-sub/clip.avi")
            #expect(throws: VideoDecodeError.cannotOpen(source: root + "/link.avi",
                reason: "\(root)/link.avi is a symbolic link")) {
                _ = try FFmpegDecoder(source: .file(path: root + "/link.avi"))
            }
            try makeFIFO(at: root + "/fifo.avi")
            #expect(throws: VideoDecodeError.cannotOpen(source: root + "/fifo.avi", reason: "not a regular file")) {
                _ = try FFmpegDecoder(source: .file(path: root + "/fifo.avi"))
            }
            #expect(throws: FileOpenError(path: root + "/none/out.jsonl",
                reason: "the folder \(root)/none does not exist", code: ENOENT)) {
                _ = try JSONLinesFile(path: root + "/none/out.jsonl")
            }
            // The path's fault is the request's (400); the service's own shortage is not (503: it may succeed later).
            let missing = FileOpenError(path: root + "/none/out.jsonl", reason: "no such folder", code: ENOENT)
            #expect(StreamRegistry.outputRefusal("none/out.jsonl", missing)
                == .outputNotAllowed(path: "none/out.jsonl", reason: "it cannot be created: no such folder"))
            for code in [EMFILE, ENFILE, ENOSPC, EDQUOT] {
                let shortage = FileOpenError(path: root + "/out.jsonl", reason: "short", code: code)
                #expect(StreamRegistry.outputRefusal("out.jsonl", shortage)
                    == .outputUnavailable(path: "out.jsonl", reason: "short"))
            }
            for path in ["relative/out.jsonl", root + "/was-sub/../out.jsonl", root + "/./out.jsonl", "/"] {
                #expect(throws: FileOpenError.self, "\(path)") { _ = try LinkFreePath.open(path, flags: O_RDONLY) }
            }
            // An output that is a FIFO (whose open would block the creation) or a hard link to a file elsewhere.
            try makeFIFO(at: root + "/fifo.jsonl")
            #expect(throws: FileOpenError.self) { _ = try JSONLinesFile(path: root + "/fifo.jsonl") }
            try makeFIFO(at: root + "/fifo.mp4")
            #expect(throws: FileOpenError.self) {
                _ = try AnnotatedVideoOutput(path: root + "/fifo.mp4", fallbackFPS: nil, ffmpeg: "ffmpeg")
            }
            try FileManager.default.linkItem(atPath: root + "/was-sub/clip.avi", toPath: root + "/hard.jsonl")
            #expect(throws: FileOpenError(path: root + "/hard.jsonl", reason: "it has another hard link")) {
                _ = try JSONLinesFile(path: root + "/hard.jsonl")
            }
            #expect(FileManager.default.contents(atPath: root + "/hard.jsonl")?.count
                == FileManager.default.contents(atPath: TestVideos.mjpeg)?.count)

            // FFmpeg reads and writes the descriptor it is handed, not the path: a stand-in that reports its fd 3.
            let standIn = media.file("ffmpeg")
            try "#!/bin/sh\necho \"fd3=$(readlink /proc/self/fd/3)\" >&2\nexit 1\n".write(toFile: standIn,
                atomically: true, encoding: .utf8)
            _ = chmod(standIn, 0o755)
            do {
                _ = try FFmpegDecoder(source: .file(path: root + "/was-sub/clip.avi"), ffmpeg: standIn).nextFrame()
                Issue.record("the stand-in decoded")
            } catch {
                guard case .ffmpegFailed(_, _, let log) = error else { throw error }
                #expect(log.contains("fd3=\(root)/was-sub/clip.avi"), "\(log)")
            }
            let video = try LinkFreePath.openRegularFileForWriting(root + "/was-sub/out.mp4")
            defer { close(video) }
            let encoder = try FFmpegEncoder(file: video, path: root + "/was-sub/out.mp4", width: 4, height: 4, fps: 1,
                ffmpeg: standIn)
            do {
                try encoder.finish()
                Issue.record("the stand-in encoded")
            } catch {
                guard case .ffmpegFailed(_, _, let log) = error else { throw error }
                #expect(log.contains("fd3=\(root)/was-sub/out.mp4"), "\(log)")
            }
            // Through the registry's check: a video's container comes from its name.
            for name in ["out.webm", "out", "sub"] {
                #expect(throws: StreamError.self, "\(name)") {
                    _ = try StreamRegistry.check(.init(source: "was-sub/clip.avi", slot: "line", outputVideo: name),
                        policy: policy, mqttAvailable: false)
                }
            }
            _ = try StreamRegistry.check(.init(source: "was-sub/clip.avi", slot: "line", outputVideo: "out.MKV"),
                policy: policy, mqttAvailable: false)
        }

        @Test("a frame pipe is widened to hold one frame (a power of two, 64 KiB to 1 MiB), as far as the system allows")
        func framePipeWidened() throws {
            let ceiling = (try? String(contentsOfFile: "/proc/sys/fs/pipe-max-size", encoding: .utf8))
                .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 65536
            let cases = [(640 * 480 * 3, 1 << 20), (320 * 240 * 3, 1 << 18), (1920 * 1080 * 3, 1 << 20), (100, 1 << 16)]
            for (frameBytes, wanted) in cases {
                var ends: [Int32] = [-1, -1]
                try #require(pipe(&ends) == 0)
                defer { ends.forEach { close($0) } }
                let capacity = ChildProcess.widen(pipe: ends[0], toHold: frameBytes)
                if ceiling >= wanted {
                    #expect(capacity == wanted, "a frame of \(frameBytes) bytes")
                } else {
                    #expect((capacity ?? 0) >= 65536, "a frame of \(frameBytes) bytes")
                }
            }
        }

        @Test("sources are checked like model paths: inside the media folder, allowed URL prefixes and devices only")
        func sourcePolicy() throws {
            let media = try TemporaryDirectory()
            try Data("x".utf8).write(to: URL(fileURLWithPath: media.file("clip.mp4")))
            try makeFIFO(at: media.file("fifo.mp4"))
            let policy = SourcePolicy(mediaDirectory: media.path, allowedURLPrefixes: ["udp://127.0.0.1:"],
                allowedDevices: ["/dev/video0"])
            #expect(try policy.resolve("clip.mp4") == .file(path: URL(fileURLWithPath: media.file("clip.mp4"))
                .resolvingSymlinksInPath().path))
            for refused in ["../clip.mp4", "/etc/passwd", "fifo.mp4", "missing.mp4", "udp://10.0.0.1:5000",
                            "file:///etc/passwd", "gopher://x", "/dev/video1", "rtsp://cam/stream", ""] {
                #expect(throws: StreamError.self, "\(refused)") { _ = try policy.resolve(refused) }
            }
            #expect(try policy.resolve("udp://127.0.0.1:5000") == .network(url: "udp://127.0.0.1:5000"))
            #expect(try policy.resolve("/dev/video0") == .device(path: "/dev/video0"))
            // User-info is no host: a prefix matches where FFmpeg connects (after the authority's last '@').
            let cameras = SourcePolicy(allowedURLPrefixes: ["rtsp://cam-", "rtsp://10.0.0.5/"])
            for refused in ["rtsp://cam-a@attacker.example/x", "rtsp://10.0.0.5@evil/", "rtsp://u:p@cam-a@evil/x",
                            "rtsp://10.0.0.5.evil/"] {
                #expect(throws: StreamError.self, "\(refused)") { _ = try cameras.resolve(refused) }
            }
            // A character Swift joins with the '@' (U+0600 joins what follows it; a combining mark joins what precedes
            // it) hid the user-info from the check, while FFmpeg connected to the host after the '@'.
            let hidden = ["rtsp://cam-\u{600}@169.254.169.254/x", "rtsp://cam-a\u{301}@evil/x", "rtsp://cam-a/ x",
                          "rtsp://cam-\u{600}/x"]
            for refused in hidden {
                #expect(throws: StreamError.self, "\(refused)") { _ = try cameras.resolve(refused) }
            }
            #expect(SourcePolicy.withoutUserInfo("rtsp://cam-\u{600}@169.254.169.254/x") == "rtsp://169.254.169.254/x")
            #expect(VideoSource.network(url: "rtsp://u:p\u{600}@cam/x").description == "rtsp://u:***@cam/x")
            // A combining mark after the '@': the password is still taken out (a search by characters missed it).
            #expect(VideoSource.network(url: "rtsp://admin:secret@\u{301}cam/x").description
                == "rtsp://admin:***@\u{301}cam/x")
            let marked = #expect(throws: StreamError.self) { _ = try cameras.resolve("rtsp://admin:secret@\u{301}cam/x") }
            #expect(marked.map { !"\($0)".contains("secret") } == true, "\(String(describing: marked))")
            for allowed in ["rtsp://cam-a.local/main", "rtsp://admin:secret@cam-b/main", "rtsp://u@10.0.0.5/s?x=@y"] {
                #expect(try cameras.resolve(allowed) == .network(url: allowed))
            }
            // What is shown of a source (status, logs, audit, errors) keeps a camera's credentials out; FFmpeg gets them.
            #expect(VideoSource.network(url: "rtsp://admin:secret@cam-b/main").description
                == "rtsp://admin:***@cam-b/main")
            #expect(VideoSource.network(url: "rtsp://token@10.0.0.5/s?x=@y").description == "rtsp://***@10.0.0.5/s?x=@y")
            #expect(VideoSource.network(url: "udp://127.0.0.1:5000?a=@b").description == "udp://127.0.0.1:5000?a=@b")
            #expect(VideoSource.network(url: "rtsp://u:p@cam/x").redacting("[tcp] rtsp://u:p@cam/x: Connection refused")
                == "[tcp] rtsp://u:***@cam/x: Connection refused")
            // FFmpeg that cannot start for want of descriptors or processes: a live stream retries; no program: it ends.
            for code in [EMFILE, ENFILE, EAGAIN, ENOMEM] {
                #expect(VideoDecodeError.cannotStart(program: "ffmpeg", reason: "", code: code).isShortage)
            }
            #expect(!VideoDecodeError.cannotStart(program: "ffmpeg", reason: "", code: ENOENT).isShortage)
            #expect(!VideoDecodeError.cannotStart(program: "ffmpeg", reason: String(cString: strerror(EMFILE))).isShortage)
            // A real start carries its errno: no such program is no shortage.
            let missing = #expect(throws: VideoDecodeError.self) {
                _ = try FFmpegDecoder(source: .network(url: "udp://127.0.0.1:9"), ffmpeg: "/nonexistent/ffmpeg")
            }
            #expect(missing.map { error in
                guard case .cannotStart(_, _, let code) = error else { return false }
                return code == ENOENT && !error.isShortage
            } == true, "\(String(describing: missing))")
            let refusal = #expect(throws: StreamError.self) { _ = try cameras.resolve("rtsp://u:hunter2@evil/x") }
            #expect(refusal.map { !"\($0)".contains("hunter2") } == true, "\(String(describing: refusal))")
            #expect(throws: StreamError.self) { _ = try policy.resolveOutput("out.jsonl") }
            let withOutput = SourcePolicy(outputDirectory: media.path)
            #expect(throws: StreamError.self) { _ = try withOutput.resolveOutput("../out.jsonl") }
            #expect(try withOutput.resolveOutput("out.jsonl").hasSuffix("/out.jsonl"))
            // Symbolic links in the output folder: to a folder outside (the file beneath it does not exist yet), one
            // leading nowhere (outside), and one to a folder inside, which is fine.
            let outside = try TemporaryDirectory()
            try FileManager.default.createSymbolicLink(atPath: media.file("away"), withDestinationPath: outside.path)
            try FileManager.default.createSymbolicLink(atPath: media.file("dangling.mp4"),
                withDestinationPath: outside.file("nothing-yet.mp4"))
            try FileManager.default.createDirectory(atPath: media.file("real"), withIntermediateDirectories: false)
            try FileManager.default.createSymbolicLink(atPath: media.file("here"), withDestinationPath: media.file("real"))
            for refused in ["away/new.jsonl", "away/deeper/new.jsonl", "dangling.mp4", "real/../away/x.jsonl"] {
                #expect(throws: StreamError.self, "\(refused)") { _ = try withOutput.resolveOutput(refused) }
            }
            let real = URL(fileURLWithPath: media.file("real")).resolvingSymlinksInPath().path
            #expect(try withOutput.resolveOutput("here/new.jsonl") == real + "/new.jsonl")
            #expect(try withOutput.resolveOutput("real/not/yet.jsonl") == real + "/not/yet.jsonl")
            #expect(!FileManager.default.fileExists(atPath: outside.file("nothing-yet.mp4")))
            // Longer than any path the system opens: refused at once (the walk up half a million missing folders,
            // which a 1 MiB body allows, took minutes), and a path of 4096 bytes is still resolved.
            #expect(throws: StreamError.outputNotAllowed(path: String(repeating: "a/", count: 32),
                reason: "empty, longer than 4096 bytes, or holding a NUL")) {
                _ = try withOutput.resolveOutput(String(repeating: "a/", count: 500_000) + "x.jsonl")
            }
            let longest = String(repeating: "a/", count: 2044) + "x.jsonl"
            #expect(longest.utf8.count <= 4096)
            #expect(try withOutput.resolveOutput(longest).hasSuffix("/a/a/x.jsonl"))
        }

        @Test("the registry: a refused request leaves no output file behind; after close() every request is refused")
        func registryRefusals() async throws {
            let media = try TemporaryDirectory()
            try Data("x".utf8).write(to: URL(fileURLWithPath: media.file("clip.mp4")))
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1), loader: streamLoader)
            defer { Task { await manager.shutdown() } }
            let slot = try await manager.createSlot("line")
            let registry = StreamRegistry(policy: SourcePolicy(mediaDirectory: media.path,
                outputDirectory: media.path), maxStreams: 1, slots: { $0 == "line" ? slot : nil })
            // The MQTT output without an MQTT connection, and no slot by that name: refused before the file is made.
            #expect(throws: StreamError.outputNotAllowed(path: "mqtt",
                reason: "the service has no MQTT connection (configure `mqtt:`)")) {
                _ = try registry.create(.init(source: "clip.mp4", slot: "line", outputFile: "a.jsonl", mqtt: true))
            }
            #expect(throws: StreamError.unknownSlot("line2")) {
                _ = try registry.create(.init(source: "clip.mp4", slot: "line2", outputFile: "a.jsonl"))
            }
            #expect(!FileManager.default.fileExists(atPath: media.file("a.jsonl")))
            // Refused after the results file was opened (the video's folder is missing): the file keeps its lines.
            try Data("kept\n".utf8).write(to: URL(fileURLWithPath: media.file("kept.jsonl")))
            #expect(throws: StreamError.self) {
                _ = try registry.create(.init(source: "clip.mp4", slot: "line", outputFile: "kept.jsonl",
                    outputVideo: "missing/v.mp4"))
            }
            #expect(FileManager.default.contents(atPath: media.file("kept.jsonl")) == Data("kept\n".utf8))
            // A file the refused request opened new is removed (it was left behind, empty).
            #expect(throws: StreamError.self) {
                _ = try registry.create(.init(source: "clip.mp4", slot: "line", outputFile: "new.jsonl",
                    outputVideo: "missing/v.mp4"))
            }
            #expect(!FileManager.default.fileExists(atPath: media.file("new.jsonl")))
            // The media and output folders are one: an output naming the stream's own source (or a link to it) is
            // refused, the video left as it was (it was emptied as the stream started).
            try FileManager.default.createSymbolicLink(atPath: media.file("alias.mp4"),
                withDestinationPath: media.file("clip.mp4"))
            for request in [StreamRegistry.Request(source: "clip.mp4", slot: "line", outputFile: "clip.mp4"),
                            .init(source: "clip.mp4", slot: "line", outputVideo: "clip.mp4"),
                            .init(source: "clip.mp4", slot: "line", outputVideo: "alias.mp4")] {
                let refused = #expect(throws: StreamError.self) { _ = try registry.create(request) }
                #expect("\(String(describing: refused))".contains("it is the stream's own source"),
                    "\(String(describing: refused))")
            }
            #expect(FileManager.default.contents(atPath: media.file("clip.mp4")) == Data("x".utf8))

            // Frame rates a cap cannot have (one frame in 10^30 s would overflow a Duration); the range's ends pass.
            for cap in [1e-30, 0, -1, .nan, .infinity, 1000.5] {
                #expect(throws: StreamError.self, "fps_cap \(cap)") {
                    _ = try StreamRegistry.check(.init(source: "clip.mp4", slot: "line", fpsCap: cap),
                        policy: registry.policy, mqttAvailable: false)
                }
            }
            for cap in [0.001, 1000] {
                _ = try StreamRegistry.check(.init(source: "clip.mp4", slot: "line", fpsCap: cap),
                    policy: registry.policy, mqttAvailable: false)
            }
            #expect(StreamConfiguration(source: .file(path: "x"), slot: "s", fpsCap: 1e-30).fpsCap == 0.001)
            #expect(StreamConfiguration(source: .file(path: "x"), slot: "s", fpsCap: .nan).fpsCap == nil)
            registry.close()
            #expect(throws: StreamError.shuttingDown) {
                _ = try registry.create(.init(source: "clip.mp4", slot: "line"))
            }
        }

        @Test("an annotated video whose source changes size is ended properly: the frames before the change play")
        func videoOutputSizeChange() async throws {
            let media = try TemporaryDirectory()
            // One MPEG-TS stream: 20 frames of 320x240, then 20 of 160x120 (a camera back in another mode).
            var bytes = Data()
            for (index, size) in ["320x240", "160x120"].enumerated() {
                let part = media.file("part\(index).ts")
                let made = try await runProcess("/usr/bin/ffmpeg", ["-y", "-hide_banner", "-loglevel", "error", "-f",
                    "lavfi", "-i", "testsrc=size=\(size):rate=10", "-frames:v", "20", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", "-f", "mpegts", part])
                try #require(made.status == 0, "\(made.stderr)")
                bytes += try Data(contentsOf: URL(fileURLWithPath: part))
            }
            try bytes.write(to: URL(fileURLWithPath: media.file("changed.ts")))
            // The decoder follows the change: each frame in its own size (not scaled to the first one's).
            let decoder = try FFmpegDecoder(source: .file(path: media.file("changed.ts")))
            var sizes: [String] = []
            while let frame = try decoder.nextFrame() { sizes.append("\(frame.image.width)x\(frame.image.height)") }
            #expect(sizes == Array(repeating: "320x240", count: 20) + Array(repeating: "160x120", count: 20))
            let (manager, slot) = try await Self.lineSlot()
            let registry = StreamRegistry(policy: SourcePolicy(mediaDirectory: media.path, outputDirectory: media.path),
                slots: { $0 == "line" ? slot : nil })
            let stream = try registry.create(.init(source: "changed.ts", slot: "line", outputVideo: "out.mp4"))
            await stream.waitUntilFinished()
            let status = stream.currentStatus
            #expect(status.state == .ended && status.frames_detected == 40, "\(status)")
            // Finished once the stream ended: the file plays, with the 20 frames of the first size.
            let complete = await eventuallyAsync(timeout: .seconds(60)) {
                let probe = try? await runProcess("/usr/bin/ffprobe", ["-v", "error", "-count_frames", "-select_streams",
                    "v:0", "-show_entries", "stream=width,height,nb_read_frames", "-of", "csv=p=0", media.file("out.mp4")])
                return probe?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "320,240,20"
            }
            #expect(complete)
            let video = stream.currentStatus.deliveries["video"]
            #expect(video?.published == 20 && video?.failed == 1 && (video?.last_error ?? "").contains("160x120"),
                "\(String(describing: video))")
            await registry.waitForOutputs(within: .seconds(5))
            await manager.shutdown()
        }

        @Test("a stream on a slot with no active model stops at once: the frame waiting for a model gives up")
        func stopWithoutModel() async throws {
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1, warmupRuns: 1),
                loader: streamLoader)
            let slot = try await manager.createSlot("empty")
            let stream = VideoStream(id: "waiting", configuration: StreamConfiguration(
                source: .file(path: TestVideos.mjpeg), slot: "empty"), slot: slot)
            stream.start()
            #expect(await eventually(timeout: .seconds(60)) { stream.currentStatus.frames_decoded >= 2 })
            // Not awaited: without the cancellation the stop waits for a model that never comes (until the manager
            // shuts down, below).
            let stopped = Locked(false)
            let stop = Task {
                await stream.stop()
                stopped.withLock { $0 = true }
            }
            #expect(await eventually(timeout: .seconds(60)) { stopped.value }, "the stop did not return")
            #expect(stream.currentStatus.state == .stopped && stream.currentStatus.frames_detected == 0,
                "\(stream.currentStatus)")
            await manager.shutdown()
            await stop.value
        }

        @Test("viewers: keep-alives only to those that ask, drops returned, the final element last; a viewer after the end gets the final element and is ended at once")
        func viewerAfterEnd() async {
            let viewers = ViewerSet<Int>()
            var early = viewers.subscribe(buffer: 4).makeAsyncIterator()
            var keeping = viewers.subscribe(buffer: 2, keepAlive: true).makeAsyncIterator()
            #expect(viewers.yield(1).isEmpty)
            #expect(viewers.yield(0, keepAliveOnly: true).isEmpty)
            // `keeping` holds 1 and 0: taking 2 drops its oldest; the final 9 drops the 0.
            #expect(viewers.yield(2) == [1])
            #expect(viewers.close(final: 9) == [0])
            #expect(viewers.yield(5).isEmpty && viewers.yield(0, keepAliveOnly: true).isEmpty)
            var got: [Int] = []
            while let value = await early.next() { got.append(value) }
            #expect(got == [1, 2, 9])
            got = []
            while let value = await keeping.next() { got.append(value) }
            #expect(got == [2, 9])
            // A client that comes (back) after the end learns how it ended (it got an empty answer).
            var late = viewers.subscribe(buffer: 4).makeAsyncIterator()
            #expect(await late.next() == 9)
            #expect(await late.next() == nil)
            #expect(viewers.isEmpty)
            let quiet = ViewerSet<Int>()
            quiet.close()
            var none = quiet.subscribe(buffer: 1).makeAsyncIterator()
            #expect(await none.next() == nil)
        }

        /// A registry over a media and output folder holding the MJPEG test video as `clip.avi`, and a slot `line`
        /// with the model active.
        static func registrySetUp(maxStreams: Int) async throws
            -> (media: TemporaryDirectory, manager: ModelManager, registry: StreamRegistry)
        {
            let media = try TemporaryDirectory()
            try FileManager.default.copyItem(atPath: TestVideos.mjpeg, toPath: media.file("clip.avi"))
            let manager = ModelManager(configuration: HotSwapConfiguration(servingThreads: 1, warmupRuns: 1),
                loader: streamLoader)
            let slot = try await manager.createSlot("line")
            _ = try await manager.loadAndActivate(LoadRequest(slot: "line", path: Self.model))
            let registry = StreamRegistry(policy: SourcePolicy(mediaDirectory: media.path,
                outputDirectory: media.path), maxStreams: maxStreams, slots: { $0 == "line" ? slot : nil })
            return (media, manager, registry)
        }

        @Test("the registry: an annotated video's file stays taken after its stream ended, until the file is complete, and counts against maxStreams")
        func videoFileHeldUntilComplete() async throws {
            let (media, manager, registry) = try await Self.registrySetUp(maxStreams: 1)
            defer { withExtendedLifetime(media) {} }
            let first = try registry.create(.init(source: "clip.avi", slot: "line", outputVideo: "out.mp4", name: "a"))
            await first.waitUntilFinished()
            // Its encoder still runs: with room for one stream, a stream with no file is refused until it is done (or
            // accepted once it is).
            var refusedForRoom = 0, roomMade = false
            let roomDeadline = ContinuousClock.now + .seconds(60)
            while !roomMade, ContinuousClock.now < roomDeadline {
                do {
                    let other = try registry.create(.init(source: "clip.avi", slot: "line", name: "b"))
                    #expect(await registry.waitForOutputs(within: .zero), "room made before the video was complete")
                    _ = await registry.remove(other.id)
                    roomMade = true
                } catch {
                    #expect(error == .tooManyStreams(limit: 1, finishingVideos: 1))
                    refusedForRoom += 1
                    try await Task.sleep(for: .milliseconds(1))
                }
            }
            #expect(roomMade && refusedForRoom > 0, "\(refusedForRoom) refusals")
            let second = try registry.create(.init(source: "clip.avi", slot: "line", outputVideo: "out.mp4", name: "a"))
            await second.waitUntilFinished()
            // A JSON-lines file of the same name (it has no output still delivering of its own): refused, naming the
            // ended stream, until its video is complete — then the only output left is gone too.
            var accepted: VideoStream?
            let deadline = ContinuousClock.now + .seconds(60)
            while accepted == nil, ContinuousClock.now < deadline {
                do {
                    accepted = try registry.create(.init(source: "clip.avi", slot: "line", outputFile: "out.mp4"))
                    #expect(await registry.waitForOutputs(within: .zero), "taken before the video was complete")
                } catch {
                    #expect(error == .outputNotAllowed(path: "out.mp4", reason: "stream 'a' writes it"))
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            #expect(accepted != nil)
            for stream in registry.all { _ = await registry.remove(stream.id) }
            await manager.shutdown()
        }

        @Test("the registry: an ended stream stays listed with its results file closed")
        func endedStreamClosesFile() async throws {
            let (media, manager, registry) = try await Self.registrySetUp(maxStreams: 2)
            defer { withExtendedLifetime(media) {} }
            let stream = try registry.create(.init(source: "clip.avi", slot: "line", outputFile: "lines.jsonl",
                name: "a"))
            await stream.waitUntilFinished()
            let path = URL(fileURLWithPath: media.file("lines.jsonl")).resolvingSymlinksInPath().path
            func heldOpen() -> Bool {
                ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).contains {
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == path
                }
            }
            // Before, its descriptor stayed open until the stream was removed or forgotten.
            #expect(await eventually(timeout: .seconds(10)) { !heldOpen() })
            #expect(registry.all.contains { $0.id == "a" })
            let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == stream.currentStatus.frames_detected && !lines.isEmpty)
            await manager.shutdown()
        }

        @Test("the registry: a stream with an annotated video is freed once removed and its video complete")
        func videoStreamFreed() async throws {
            let (media, manager, registry) = try await Self.registrySetUp(maxStreams: 1)
            defer { withExtendedLifetime(media) {} }
            weak var freed: VideoStream?
            do {
                let stream = try registry.create(.init(source: "clip.avi", slot: "line", outputVideo: "out.mp4",
                    name: "a"))
                freed = stream
                await stream.waitUntilFinished()
            }
            #expect(await registry.waitForOutputs(within: .seconds(60)))
            _ = await registry.remove("a")
            // Its tasks may hold it for a moment after their end.
            let deadline = ContinuousClock.now + .seconds(10)
            while freed != nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(freed == nil, "the stream (its queue, files, encoder pipe) is still held")
            await manager.shutdown()
        }

        @Test("the registry: a running stream's name and output file are its own until it is gone; at most maxStreams run")
        func registryReservations() async throws {
            let (media, manager, registry) = try await Self.registrySetUp(maxStreams: 2)
            defer { withExtendedLifetime(media) {} }
            // One frame a second: each stream runs for a minute unless removed.
            func request(_ name: String?, file: String? = nil) -> StreamRegistry.Request {
                .init(source: "clip.avi", slot: "line", fpsCap: 1, outputFile: file, name: name)
            }
            let cam = try registry.create(request("cam", file: "cam.jsonl"))
            #expect(cam.id == "cam")
            #expect(throws: StreamError.nameTaken("cam")) { _ = try registry.create(request("cam")) }
            #expect(throws: StreamError.outputNotAllowed(path: "cam.jsonl", reason: "stream 'cam' writes it")) {
                _ = try registry.create(request(nil, file: "cam.jsonl"))
            }
            #expect(throws: StreamError.self) { _ = try registry.create(request("cam/1")) }
            let other = try registry.create(request(nil))
            #expect(other.id.count == 8 && other.id != "cam")
            #expect(throws: StreamError.tooManyStreams(limit: 2)) { _ = try registry.create(request("third")) }

            // Once removed, the name and the file are free again.
            #expect(await registry.remove("cam") != nil)
            let again = try registry.create(request("cam", file: "cam.jsonl"))
            #expect(again.id == "cam" && registry.all.count == 2)
            for stream in registry.all { _ = await registry.remove(stream.id) }
            await manager.shutdown()
        }
    }
}
