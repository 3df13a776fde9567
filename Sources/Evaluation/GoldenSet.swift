import Foundation
import Primitives
import YOLO

/// A labelled data set a model is scored on before it takes traffic (a release's golden-set gate) or offline
/// (`yoloswap eval`): a COCO instances file and the folder its images are in.
///
/// Thread-safety: a value. `evaluate` blocks (it reads images and runs the model): call it off the cooperative pool.
public struct GoldenSet: Sendable {
    public let dataset: COCODataset
    public let path: String
    public let imagesRoot: String
    /// Whether the set was read `confined` (by the service, from its model repository).
    public let confined: Bool

    /// A confined set's most images and most annotations on one image: scoring keeps up to 100 detections per image
    /// and compares each with every annotation of its image and category, so a 64 MiB file of one image with a
    /// million boxes (or 100 000 entries naming one photo) took gigabytes and minutes in the serving process. COCO's
    /// val2017 has 5 000 images and at most 93 annotations on one.
    public static let maxConfinedImages = 10_000
    public static let maxConfinedAnnotationsPerImage = 1_000

    /// The largest image read.
    public static let maxImageBytes = 256 << 20

    /// COCO's evaluation settings: every candidate above confidence 0.001, at most 100 per image.
    public static let detectionOptions = DetectionOptions(confidence: 0.001, iou: 0.7, maxDetections: 100)

    /// Reads the instances file; images are looked up under `imagesRoot`, the file's folder by default.
    /// - Parameters:
    ///   - confined: refuse image names that are absolute or contain `..` (a file from a repository that must not
    ///     make the service read elsewhere).
    ///   - maxFileBytes: the largest instances file read (a service reading a golden set bounds its memory with it).
    public init(contentsOf path: String, imagesRoot: String? = nil, confined: Bool = false,
                maxFileBytes: Int = COCODataset.maxFileBytes) throws(COCODatasetError) {
        dataset = try COCODataset.load(contentsOf: path, maxBytes: maxFileBytes)
        self.path = path
        self.imagesRoot = imagesRoot ?? URL(fileURLWithPath: path).deletingLastPathComponent().path
        self.confined = confined
        guard confined else { return }
        if let image = dataset.images.first(where: { $0.fileName.hasPrefix("/") || $0.fileName.hasParentPart }) {
            throw .invalidFile(path: path, reason: "image \(image.id)'s file_name leaves the data set's folder")
        }
        guard dataset.images.count <= Self.maxConfinedImages else {
            throw .invalidFile(path: path, reason: "\(dataset.images.count) images; a golden set may have at most "
                + "\(Self.maxConfinedImages)")
        }
        var perImage: [Int: Int] = [:]
        for annotation in dataset.annotations {
            let count = perImage[annotation.imageID, default: 0] + 1
            guard count <= Self.maxConfinedAnnotationsPerImage else {
                throw .invalidFile(path: path, reason: "image \(annotation.imageID) has more than "
                    + "\(Self.maxConfinedAnnotationsPerImage) annotations")
            }
            perImage[annotation.imageID] = count
        }
    }

    /// What scoring a model gave.
    public struct Result: Sendable {
        public var evaluation: COCOEvaluation
        public var detections: [COCODetection]
        /// Model classes that count as no category of the data set (their detections are left out).
        public var unmatchedClasses: [String]
        public var seconds: Double
    }

    /// Runs `detector` on every image and scores its detections.
    /// - Parameters:
    ///   - classMap: extra `NAME=CATEGORY` pairs (see `CategoryMatcher`).
    ///   - isCancelled: asked before each image; true ends the scoring (`GoldenSetError.cancelled`) — a release
    ///     aborted while its candidate is scored, which would otherwise run through every image.
    public func evaluate(_ detector: Detector, options: DetectionOptions = detectionOptions, classMap: [String] = [],
                         isCancelled: () -> Bool = { false }) throws(GoldenSetError) -> Result
    {
        let categories: CategoryMatcher
        do {
            categories = try CategoryMatcher(dataset: dataset, modelClasses: detector.schema.classNames, extra: classMap)
        } catch { throw .noMatchingClasses(path: path, reason: "\(error)") }
        guard categories.unmatchedModelClasses.count < detector.schema.classNames.count else {
            throw .noMatchingClasses(path: path, reason: "no model class is a category of the data set")
        }
        let started = ContinuousClock.now
        var detections: [COCODetection] = []
        for (index, image) in dataset.images.enumerated() {
            if isCancelled() { throw .cancelled(path: path, imagesScored: index) }
            var file = URL(fileURLWithPath: imagesRoot).appendingPathComponent(image.fileName).path
            // Confined: a link among the images may not lead out of the set's folder (the service would read, and its
            // refusal tell of, a file elsewhere).
            if confined {
                let root = URL(fileURLWithPath: imagesRoot).resolvingSymlinksInPath().path
                file = URL(fileURLWithPath: file).resolvingSymlinksInPath().path
                guard file.hasPrefix(root.hasSuffix("/") ? root : root + "/") else {
                    throw .image(id: image.id, path: image.fileName, reason: "it leads out of the data set's folder")
                }
            }
            let result: DetectionResult
            do {
                let bytes = [UInt8](try RegularFile(openingForReading: file).readAll(limit: Self.maxImageBytes))
                result = try detector.detect(imageBytes: bytes, options: options)
            } catch {
                throw .image(id: image.id, path: file, reason: "\(error)")
            }
            for d in result.detections {
                guard let category = categories.category(forClass: d.classID) else { continue }
                detections.append(COCODetection(
                    imageID: image.id, categoryID: category,
                    bbox: COCOBox(x: d.box.x1, y: d.box.y1, width: d.box.x2 - d.box.x1, height: d.box.y2 - d.box.y1),
                    score: Double(d.confidence)))
            }
        }
        let evaluation: COCOEvaluation
        do { evaluation = try COCOEvaluator.evaluate(detections, on: dataset) } catch {
            throw .image(id: -1, path: path, reason: "\(error)")
        }
        return Result(evaluation: evaluation, detections: detections,
            unmatchedClasses: categories.unmatchedModelClasses, seconds: (ContinuousClock.now - started).seconds)
    }
}

/// A golden-set gate's rules: the candidate's AP@[.5:.95] at least `minMAP`, and no more than `maxDropVsBaseline`
/// below the baseline's (absolute, on the same set). Either may be absent.
public struct GoldenSetRules: Sendable, Codable, Equatable {
    public var minMAP: Double?
    public var maxDropVsBaseline: Double?

    public init(minMAP: Double? = nil, maxDropVsBaseline: Double? = nil) {
        (self.minMAP, self.maxDropVsBaseline) = (minMAP, maxDropVsBaseline)
    }

    enum CodingKeys: String, CodingKey {
        case minMAP = "min_map"
        case maxDropVsBaseline = "max_drop_vs_baseline"
    }

    /// nil when the candidate passes; else the rule it breaks, with the figures. With no rule set (a set scored and
    /// logged only), nothing is a breach, an undefined mAP included.
    public func breach(candidate: COCOEvaluation, baseline: COCOEvaluation?) -> String? {
        guard minMAP != nil || maxDropVsBaseline != nil else { return nil }
        guard let map = candidate.map else { return "the candidate's mAP is undefined (no ground truth it could find)" }
        if let minMAP, map < minMAP {
            return String(format: "mAP %.4f is below min_map %.4f", map, minMAP)
        }
        if let maxDropVsBaseline, let base = baseline?.map, base - map > maxDropVsBaseline {
            return String(format: "mAP %.4f is %.4f below the baseline's %.4f (max_drop_vs_baseline %.4f)",
                map, base - map, base, maxDropVsBaseline)
        }
        return nil
    }
}

/// Why a model could not be scored on a golden set.
public enum GoldenSetError: Error, Equatable, CustomStringConvertible {
    case noMatchingClasses(path: String, reason: String)
    case image(id: Int, path: String, reason: String)
    /// The scoring was cut short after `imagesScored` images.
    case cancelled(path: String, imagesScored: Int)

    public var description: String {
        switch self {
        case .noMatchingClasses(let path, let reason): "golden set \(path): \(reason)"
        case .image(let id, let path, let reason): "golden set image \(id) (\(path)): \(reason)"
        case .cancelled(let path, let count): "golden set \(path): scoring cancelled after \(count) images"
        }
    }
}

/// Which data-set category a model class counts as: the same name (case, spaces and punctuation aside), or the
/// other spelling of the same class in COCO and VOC (either way: a model with Darknet's VOC-style names against COCO's
/// categories too), or what the user maps.
public struct CategoryMatcher: Sendable {
    /// COCO's and VOC's names for the same classes (labelme's examples and many plant data sets use VOC's; Darknet's
    /// coco.names, hence the yolov3-tiny models, says aeroplane, motorbike, sofa, tvmonitor).
    public static let aliases = [
        ["airplane", "aeroplane"], ["motorcycle", "motorbike"], ["couch", "sofa"], ["tv", "tvmonitor", "tv/monitor"],
        ["dining table", "diningtable"], ["potted plant", "pottedplant"],
    ]

    private let byClass: [Int: Int]
    public let unmatchedModelClasses: [String]

    /// - Parameter extra: `NAME=CATEGORY` pairs, checked first.
    public init(dataset: COCODataset, modelClasses: [String], extra: [String] = []) throws(CategoryMapError) {
        func key(_ name: String) -> String { name.lowercased().filter { $0.isLetter || $0.isNumber } }
        let categories = Dictionary(dataset.categories.map { (key($0.name), $0.id) }, uniquingKeysWith: { a, _ in a })
        var mapped: [String: String] = [:]
        for entry in extra {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, categories[key(parts[1])] != nil else { throw CategoryMapError(entry: entry) }
            mapped[key(parts[0])] = parts[1]
        }
        var spellings: [String: [String]] = [:]
        for group in Self.aliases { for name in group { spellings[key(name)] = group } }
        var byClass: [Int: Int] = [:], unmatched: [String] = []
        for (id, name) in modelClasses.enumerated() {
            let candidates = [mapped[key(name)], name].compactMap { $0 } + (spellings[key(name)] ?? [])
            if let category = candidates.lazy.compactMap({ categories[key($0)] }).first {
                byClass[id] = category
            } else {
                unmatched.append(name)
            }
        }
        self.byClass = byClass
        unmatchedModelClasses = unmatched
    }

    public func category(forClass id: Int) -> Int? { byClass[id] }
}

/// A class map entry that is not `NAME=CATEGORY` with a category of the data set.
public struct CategoryMapError: Error, Equatable, CustomStringConvertible {
    public var entry: String
    public var description: String { "class map \(entry): expected NAME=CATEGORY with a category of the data set" }
}
