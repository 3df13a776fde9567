import Foundation
import ImageCodecs
import ORTBackend
import TestSupport
import Testing
import YOLO

/// The synthetic models from tools/make_test_models.py through the real ORT binding and the full pipeline: known
/// outputs, so the decoded detections are exact.
@Suite("Synthetic models through ORT")
struct SyntheticModelTests {
    struct Manifest: Decodable {
        struct Entry: Decodable, Sendable {
            struct Expected: Decodable, Sendable {
                var detections: [DetectionJSON.Item]
                var agnostic_detections: [DetectionJSON.Item]?
            }
            var file: String
            var kind: String
            var format: String?
            var imgsz: [Int]?
            var nc: Int?
            var names: [String]?
            var expected: Expected?
        }
        var models: [Entry]
    }

    static let manifest: Manifest = {
        let url = Repository.url("models/synthetic/manifest.json")
        guard let data = try? Data(contentsOf: url), let m = try? JSONDecoder().decode(Manifest.self, from: data) else {
            fatalError("models/synthetic/manifest.json missing or unreadable: run scripts/setup")
        }
        return m
    }()

    static var validModels: [String] { manifest.models.filter { $0.kind == "valid" }.map(\.file) }

    @Test("decoded detections equal the manifest's expected ones", arguments: validModels)
    func expectedDetections(_ file: String) throws {
        let entry = try #require(Self.manifest.models.first { $0.file == file })
        let model = try Runtime.load("synthetic/\(file)")
        let sig = model.schema
        #expect(sig.outputFormat.rawValue == entry.format)
        #expect(sig.classCount == entry.nc)
        #expect(sig.classNames == entry.names)
        let size = try #require(entry.imgsz)
        #expect(sig.inputSize == ImageSize(width: size[1], height: size[0]))
        // An image exactly the input size: no resize, no padding, so input pixels are image pixels.
        let image = RGBImage(width: size[1], height: size[0], fill: (128, 128, 128))
        let expected = try #require(entry.expected)
        for agnostic in [false, true] {
            guard let want = agnostic ? expected.agnostic_detections : expected.detections else { continue }
            let got = try model.detect(image: image, options: DetectionOptions(agnostic: agnostic))
                .detections
            #expect(got.count == want.count, "\(file) agnostic=\(agnostic)")
            for (g, w) in zip(got, want) {
                #expect(g.classID == w.class_id && g.className == w.class_name)
                #expect(abs(Double(g.confidence) - w.confidence) < 1e-6)
                #expect(abs(g.box.x1 - w.box.x1) < 1e-4 && abs(g.box.y1 - w.box.y1) < 1e-4)
                #expect(abs(g.box.x2 - w.box.x2) < 1e-4 && abs(g.box.y2 - w.box.y2) < 1e-4)
            }
        }
    }

    @Test("unloadable files are typed runtime errors with ORT's message", arguments: ["truncated.onnx", "not-onnx.onnx"])
    func unloadable(_ file: String) {
        do {
            _ = try Runtime.load("synthetic/\(file)")
            Issue.record("\(file) loaded")
        } catch let error as ModelLoadError {
            guard case .runtime(let path, let ortError) = error else {
                Issue.record("expected a runtime error, got \(error)")
                return
            }
            #expect(path.hasSuffix(file))
            #expect(!ortError.message.isEmpty)
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test("a rank-2 output is rejected as not a YOLO detector")
    func wrongRank() {
        #expect {
            _ = try Runtime.load("synthetic/wrong-rank.onnx")
        } throws: { error in
            guard case .unsupportedOutput(let shape, _) = error as? ModelSchemaError else { return false }
            return shape == [2535, 85]
        }
    }

    @Test("a missing file names the path")
    func missing() {
        #expect {
            _ = try Runtime.load("synthetic/does-not-exist.onnx")
        } throws: { error in
            "\(error)".contains("does-not-exist.onnx") && "\(error)".contains("no such file")
        }
    }
}
