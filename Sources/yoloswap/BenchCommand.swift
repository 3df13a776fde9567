import ArgumentParser
import Foundation
import ImageCodecs
import ORTBackend
import YOLO

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time each pipeline stage on one image and compare end-to-end with the raw ORT Run.",
        discussion: """
            For a single-scan JPEG the pipeline decodes and letterboxes in one pass on two threads: `decode` is the
            time until the last source row is decoded (the resizing done meanwhile included) and `preprocess` the
            resize's tail after it. `decode_only` times the two-thread decode alone, without the letterbox.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Timed runs (after warm-up).") var runs: Int = 100
    @Option(help: "Warm-up runs, not timed.") var warmup: Int = 5
    @Flag(help: "Decode large JPEGs with libjpeg-turbo DCT scaling (fast path).") var dctScale = false
    @Flag(help: "Print one JSON object instead of a table.") var json = false
    @Argument(help: "A JPEG or PNG image.") var image: String

    func validate() throws {
        guard (1...1_000_000).contains(runs), (0...1_000_000).contains(warmup) else {
            throw ValidationError("--runs lies in 1...1000000, --warmup in 0...1000000")
        }
    }

    func run() throws {
        let (file, loadedDetector, environment) = try modelOptions.load()
        guard let data = FileManager.default.contents(atPath: image) else {
            throw failure("cannot read image \(image)")
        }
        let bytes = [UInt8](data)
        var detector = loadedDetector
        if dctScale {
            let size = detector.schema.inputSize
            detector.decodeOptions.minimumDecodedSize = (size.width, size.height)
        }
        var stages: [String: [Double]] = [:]
        let clock = ContinuousClock()
        for i in 0..<(warmup + runs) {
            let result = try detector.detect(imageBytes: bytes)
            guard i >= warmup else { continue }
            let t = result.timings
            stages["decode", default: []].append(t.decode)
            stages["preprocess", default: []].append(t.preprocess)
            stages["inference", default: []].append(t.inference)
            stages["postprocess", default: []].append(t.postprocess)
            stages["end_to_end", default: []].append(t.total)
        }
        // The raw ORT Run on the same input tensor, nothing else.
        let decoded = try ImageDecoder.decode(bytes, options: detector.decodeOptions)
        let (tensor, _) = detector.preprocess(decoded)
        for i in 0..<(warmup + runs) {
            let start = clock.now
            _ = try detector.backend.run(tensor)
            if i >= warmup { stages["raw_run", default: []].append((clock.now - start).milliseconds) }
        }
        // The decode alone, on two threads as the pipeline runs it (to compare with cv2.imread): in the pipeline a
        // JPEG's decode overlaps the letterbox, so its `decode` stage is not this figure.
        for i in 0..<(warmup + runs) {
            let start = clock.now
            _ = try ImageDecoder.decodeOnTwoThreads(bytes, options: detector.decodeOptions)
            if i >= warmup { stages["decode_only", default: []].append((clock.now - start).milliseconds) }
        }
        let order = ["decode", "preprocess", "inference", "postprocess", "end_to_end", "raw_run", "decode_only"]
        let summary = order.map { ($0, Percentiles(stages[$0]!)) }
        let ratio = summary[4].1.median / summary[5].1.median
        let prePost = (summary[1].1.median + summary[3].1.median) / summary[5].1.median
        if json {
            var object: [String: Any] = [
                "model": file.path, "image": image, "runs": runs, "threads": modelOptions.threads,
                "ort_version": environment.library.version, "dct_scale": dctScale, "spin": modelOptions.spin.rawValue,
                "end_to_end_over_raw": ratio, "pre_post_over_raw": prePost,
            ]
            for (name, p) in summary {
                object[name] = ["median_ms": p.median, "p90_ms": p.p90, "p99_ms": p.p99]
            }
            let out = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: out, as: UTF8.self))
        } else {
            print("\(file.path) on \(image), \(runs) runs, ORT \(environment.library.version), "
                + "threads \(modelOptions.threads == 0 ? "auto" : String(modelOptions.threads)), "
                + "spin \(modelOptions.spin.rawValue)")
            print("stage              median     p90      p99   (ms)")
            for (name, p) in summary {
                print(name.padding(toLength: 16, withPad: " ", startingAt: 0)
                    + String(format: " %8.3f %8.3f %8.3f", p.median, p.p90, p.p99))
            }
            print(String(format: "end-to-end / raw Run: %.3f   (preprocess + postprocess) / raw Run: %.3f", ratio,
                prePost))
        }
    }
}

/// Median, p90 and p99 of a sample (nearest-rank).
struct Percentiles {
    var median: Double, p90: Double, p99: Double
    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        median = Self.rank(sorted, 0.5)
        p90 = Self.rank(sorted, 0.9)
        p99 = Self.rank(sorted, 0.99)
    }

    /// The nearest-rank `q`-quantile of sorted samples — the smallest with at least `q` of them at or below it (the
    /// p99 of 60 is their slowest) — and 0 for none (each benchmark prints its sample count beside it).
    static func rank(_ sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
    }
}
