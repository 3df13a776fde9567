import Foundation
import Primitives

/// A box as COCO writes it: top-left corner, width and height, in pixels of the image.
public struct COCOBox: Sendable, Equatable, Codable {
    public var x: Double, y: Double, width: Double, height: Double

    public init(x: Double, y: Double, width: Double, height: Double) {
        (self.x, self.y, self.width, self.height) = (x, y, width, height)
    }

    public var area: Double { width * height }

    /// Encoded as COCO's `[x, y, w, h]`.
    public init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        let values = try (0..<4).map { _ in try container.decode(Double.self) }
        guard container.isAtEnd else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "a bbox has 4 numbers")
        }
        self.init(x: values[0], y: values[1], width: values[2], height: values[3])
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(contentsOf: [x, y, width, height])
    }

    var isValid: Bool { [x, y, width, height].allSatisfy(\.isFinite) && width >= 0 && height >= 0 }
}

/// The ground truth of a COCO-format detection data set: the `images`, `annotations` and `categories` of an
/// instances file (segmentations, licences and the rest are not read).
///
/// Thread-safety: a value; share it freely.
public struct COCODataset: Sendable, Codable {
    public struct Image: Sendable, Codable, Equatable {
        public var id: Int
        /// Relative to the annotation file's folder (or an images root given to the evaluation).
        public var fileName: String
        public var width: Int?
        public var height: Int?

        public init(id: Int, fileName: String, width: Int? = nil, height: Int? = nil) {
            (self.id, self.fileName, self.width, self.height) = (id, fileName, width, height)
        }

        enum CodingKeys: String, CodingKey {
            case id, width, height
            case fileName = "file_name"
        }
    }

    public struct Annotation: Sendable, Codable, Equatable {
        public var id: Int
        public var imageID: Int
        public var categoryID: Int
        public var bbox: COCOBox
        /// The object's area (of its segmentation in COCO's own files), which picks its area range; the box's area
        /// when the file has none.
        public var area: Double
        /// A crowd region: never a miss, and a detection inside it is neither right nor wrong.
        public var isCrowd: Bool

        public init(id: Int, imageID: Int, categoryID: Int, bbox: COCOBox, area: Double? = nil, isCrowd: Bool = false) {
            (self.id, self.imageID, self.categoryID, self.bbox) = (id, imageID, categoryID, bbox)
            self.area = area ?? bbox.area
            self.isCrowd = isCrowd
        }

        enum CodingKeys: String, CodingKey {
            case id, bbox, area
            case imageID = "image_id"
            case categoryID = "category_id"
            case isCrowd = "iscrowd"
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let bbox = try c.decode(COCOBox.self, forKey: .bbox)
            // `iscrowd` is 0 or 1 in COCO's files; some tools write a boolean.
            let crowd: Bool
            if let number = try? c.decodeIfPresent(Int.self, forKey: .isCrowd) {
                crowd = number != 0
            } else {
                crowd = try c.decodeIfPresent(Bool.self, forKey: .isCrowd) ?? false
            }
            self.init(
                id: try c.decode(Int.self, forKey: .id), imageID: try c.decode(Int.self, forKey: .imageID),
                categoryID: try c.decode(Int.self, forKey: .categoryID), bbox: bbox,
                area: try c.decodeIfPresent(Double.self, forKey: .area), isCrowd: crowd)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(imageID, forKey: .imageID)
            try c.encode(categoryID, forKey: .categoryID)
            try c.encode(bbox, forKey: .bbox)
            try c.encode(area, forKey: .area)
            try c.encode(isCrowd ? 1 : 0, forKey: .isCrowd)
        }
    }

    public struct Category: Sendable, Codable, Equatable {
        public var id: Int
        public var name: String
        public init(id: Int, name: String) { (self.id, self.name) = (id, name) }
    }

    public var images: [Image]
    public var annotations: [Annotation]
    public var categories: [Category]

    /// Checks what the evaluation relies on: unique ids, annotations on known images and categories, boxes of finite
    /// non-negative size, finite areas.
    public init(images: [Image], annotations: [Annotation], categories: [Category]) throws(COCODatasetError) {
        (self.images, self.annotations, self.categories) = (images, annotations, categories)
        try validate()
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        images = try c.decode([Image].self, forKey: .images)
        annotations = try c.decodeIfPresent([Annotation].self, forKey: .annotations) ?? []
        categories = try c.decode([Category].self, forKey: .categories)
        try validate()
    }

    enum CodingKeys: String, CodingKey { case images, annotations, categories }

    /// The largest annotation file read (COCO 2017's val instances are 25 MB, train's 450 MB).
    public static let maxFileBytes = 1 << 30

    /// Reads an instances file of at most `maxBytes` (decoding takes about five times the file's size).
    public static func load(contentsOf path: String, maxBytes: Int = maxFileBytes) throws(COCODatasetError)
        -> COCODataset
    {
        let data: Data
        do {
            data = try RegularFile(openingForReading: path).readAll(limit: maxBytes)
        } catch {
            throw .unreadable(path: path, reason: "\(error)")
        }
        do {
            return try JSONNumbers.decode(COCODataset.self, from: data)
        } catch let error as COCODatasetError {
            throw error.located(at: path)
        } catch {
            throw .malformed(path: path, reason: (error as? DecodingError)?.summary ?? "\(error)")
        }
    }

    /// At most this many categories (LVIS has 1203): the evaluator keeps some 100 KB of figures per category, and
    /// works per image and category.
    public static let maxCategories = 4096
    /// At most this many images.
    public static let maxImages = 100_000

    private func validate() throws(COCODatasetError) {
        guard categories.count <= Self.maxCategories else {
            throw .invalid("\(categories.count) categories: at most \(Self.maxCategories) are evaluated")
        }
        guard images.count <= Self.maxImages else {
            throw .invalid("\(images.count) images: at most \(Self.maxImages) are evaluated")
        }
        func unique(_ ids: [Int], _ what: String) throws(COCODatasetError) {
            var seen = Set<Int>()
            for id in ids where !seen.insert(id).inserted { throw .invalid("two \(what) have the id \(id)") }
        }
        try unique(images.map(\.id), "images")
        try unique(categories.map(\.id), "categories")
        try unique(annotations.map(\.id), "annotations")
        let imageIDs = Set(images.map(\.id)), categoryIDs = Set(categories.map(\.id))
        for a in annotations {
            guard imageIDs.contains(a.imageID) else { throw .invalid("annotation \(a.id) is on unknown image \(a.imageID)") }
            guard categoryIDs.contains(a.categoryID) else {
                throw .invalid("annotation \(a.id) has unknown category \(a.categoryID)")
            }
            guard a.bbox.isValid, a.area.isFinite else {
                throw .invalid("annotation \(a.id) has a box or area that is not a finite, non-negative size")
            }
        }
    }
}

/// Why a data set was refused.
public enum COCODatasetError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case invalid(String)
    case invalidFile(path: String, reason: String)

    func located(at path: String) -> COCODatasetError {
        if case .invalid(let reason) = self { return .invalidFile(path: path, reason: reason) }
        return self
    }

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read the data set \(path): \(reason)"
        case .malformed(let path, let reason): "\(path) is not a COCO instances file: \(reason)"
        case .invalid(let reason): "invalid data set: \(reason)"
        case .invalidFile(let path, let reason): "invalid data set \(path): \(reason)"
        }
    }
}
