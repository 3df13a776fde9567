/// An axis-aligned box in pixels: (x1, y1) top-left, (x2, y2) bottom-right.
public struct Box: Sendable, Equatable, Codable {
    public var x1: Double, y1: Double, x2: Double, y2: Double
    public init(x1: Double, y1: Double, x2: Double, y2: Double) {
        self.x1 = x1
        self.y1 = y1
        self.x2 = x2
        self.y2 = y2
    }

    public var area: Double { max(0, x2 - x1) * max(0, y2 - y1) }

    /// Intersection over union with `other` (0 when either box is empty).
    public func iou(_ other: Box) -> Double {
        let iw = max(0, min(x2, other.x2) - max(x1, other.x1))
        let ih = max(0, min(y2, other.y2) - max(y1, other.y1))
        let inter = iw * ih
        let union = area + other.area - inter
        return union > 0 ? inter / union : 0
    }
}

/// One detected object, in original-image pixels.
///
/// Codable as the detection JSON that the CLI (`detect --format json`) and the service (`POST /v1/detect`) both
/// write: `{"box": {"x1", "x2", "y1", "y2"}, "class_id", "class_name", "confidence"}` (keys in the sorted order
/// that `JSONEncoder.yoloswap` writes).
public struct Detection: Sendable, Equatable, Codable {
    enum CodingKeys: String, CodingKey {
        case classID = "class_id"
        case className = "class_name"
        case confidence, box
    }

    public var classID: Int
    public var className: String
    public var confidence: Float
    public var box: Box

    public init(classID: Int, className: String, confidence: Float, box: Box) {
        self.classID = classID
        self.className = className
        self.confidence = confidence
        self.box = box
    }
}

/// Post-processing thresholds, Ultralytics' defaults.
///
/// - `confidence`: keep candidates scoring strictly above this (0.25).
/// - `iou`: suppress a box whose IoU with a kept box of the same class is strictly above this (0.7).
/// - `maxDetections`: keep at most this many, best first (300); of a YOLOv10 end-to-end output, the first this many
///   rows over the threshold in the model's order, before the class filter (as Ultralytics).
/// - `classes`: keep only these class ids (nil = all).
/// - `agnostic`: suppress across classes.
public struct DetectionOptions: Sendable, Equatable {
    public var confidence: Float
    public var iou: Float
    public var maxDetections: Int
    public var classes: Set<Int>?
    public var agnostic: Bool

    public init(confidence: Float = 0.25, iou: Float = 0.7, maxDetections: Int = 300, classes: Set<Int>? = nil,
                agnostic: Bool = false) {
        self.confidence = confidence
        self.iou = iou
        self.maxDetections = maxDetections
        self.classes = classes
        self.agnostic = agnostic
    }

    /// The most detections a request may ask for (the HTTP API's `max_det`). NMS makes up to 30 000 ×
    /// `maxDetections` IoU tests when the candidates do not suppress each other, so the limit bounds one request's
    /// work; it is above Ultralytics' default (300) and COCO's evaluation (100).
    public static let maxDetectionsLimit = 1000
}
