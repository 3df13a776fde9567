/// One detection to evaluate, in COCO's results format (`image_id`, `category_id`, `bbox`, `score`).
public struct COCODetection: Sendable, Equatable, Codable {
    public var imageID: Int
    public var categoryID: Int
    public var bbox: COCOBox
    public var score: Double

    public init(imageID: Int, categoryID: Int, bbox: COCOBox, score: Double) {
        (self.imageID, self.categoryID, self.bbox, self.score) = (imageID, categoryID, bbox, score)
    }

    enum CodingKeys: String, CodingKey {
        case bbox, score
        case imageID = "image_id"
        case categoryID = "category_id"
    }
}

/// COCO's detection figures for one set of detections: the twelve numbers `COCOeval.summarize()` prints, and AP per
/// category. A figure that has nothing to average (no ground truth in its area range, say) is nil, where COCOeval
/// prints -1.
public struct COCOEvaluation: Sendable, Equatable, Codable {
    /// In COCOeval's order: AP@[.5:.95], AP@.5, AP@.75, AP small, medium, large; AR with 1, 10 and 100 detections
    /// per image; AR small, medium, large.
    public var stats: [Double?]
    public var perCategory: [CategoryResult]
    /// What the user should know about the input (see `COCOEvaluator.evaluate`).
    public var warnings: [String]

    public init(stats: [Double?], perCategory: [CategoryResult], warnings: [String]) {
        (self.stats, self.perCategory, self.warnings) = (stats, perCategory, warnings)
    }

    public struct CategoryResult: Sendable, Equatable, Codable {
        public var id: Int
        public var name: String
        /// AP@[.5:.95] and AP@.5 over every area, 100 detections per image; nil without ground truth.
        public var ap: Double?
        public var ap50: Double?
        public var groundTruth: Int
        public var detections: Int

        enum CodingKeys: String, CodingKey {
            case id, name, ap, ap50, detections
            case groundTruth = "ground_truth"
        }
    }

    enum CodingKeys: String, CodingKey {
        case stats, warnings
        case perCategory = "per_category"
    }

    public static let statNames = [
        "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small", "AR_medium",
        "AR_large",
    ]

    public var map: Double? { stats[0] }
    public var map50: Double? { stats[1] }
}

/// COCO's bounding-box evaluation, as pycocotools' `COCOeval` (iouType `bbox`) computes it: greedy matching per image
/// and category at ten IoU thresholds 0.50…0.95, crowd regions ignored, area ranges all / small (< 32²) / medium /
/// large (> 96²) by the annotation's area, at most 1, 10 and 100 detections per image and category, precision
/// interpolated at 101 recall points. The arithmetic follows COCOeval step by step (same thresholds from
/// `np.linspace`, same stable sorts, same ε) so that the figures agree to 1e-4 or better; `EvaluationTests` checks it
/// against pycocotools.
///
/// Thread-safety: stateless; call from any thread. The work is O(images × categories × detections × ground truth).
public enum COCOEvaluator {
    /// `np.linspace(.5, .95, 10)` and `np.linspace(0, 1, 101)`: start + i·step, the last one exactly the end.
    static func linspace(_ start: Double, _ end: Double, _ count: Int) -> [Double] {
        let step = (end - start) / Double(count - 1)
        return (0..<count).map { $0 == count - 1 ? end : start + Double($0) * step }
    }
    static let iouThresholds = linspace(0.5, 0.95, 10)
    static let recallThresholds = linspace(0, 1, 101)
    static let areaRanges: [ClosedRange<Double>] = [0...1e10, 0...1024, 1024...9216, 9216...1e10]
    static let maxDetections = [1, 10, 100]

    /// Evaluates `detections` against `dataset`.
    ///
    /// Detections on an image the data set does not have are an error (COCOeval asserts the same); detections of a
    /// category it does not have are not counted, nor are detections with a non-finite score or box.
    public static func evaluate(_ detections: [COCODetection], on dataset: COCODataset) throws(COCOEvaluationError)
        -> COCOEvaluation
    {
        let imageIDs = dataset.images.map(\.id).sorted()
        let categoryIDs = dataset.categories.map(\.id).sorted()
        let knownImages = Set(imageIDs), knownCategories = Set(categoryIDs)
        var warnings: [String] = []
        if let unknown = detections.first(where: { !knownImages.contains($0.imageID) }) {
            throw .unknownImage(unknown.imageID)
        }
        let usable = detections.filter { $0.score.isFinite && $0.bbox.isValid }
        if usable.count < detections.count {
            warnings.append("\(detections.count - usable.count) detections with a non-finite score or box not counted")
        }
        // COCOeval records a match as the ground truth's id, 0 meaning none: a match to an annotation whose id is 0
        // counts as a false positive. Kept, so that figures agree with it; said, so that the user can renumber.
        if dataset.annotations.contains(where: { $0.id == 0 }) {
            warnings.append("an annotation has id 0: COCOeval (and this evaluation, which follows it) never counts a "
                + "detection matched to it as correct; number annotations from 1")
        }

        struct Key: Hashable { var image: Int, category: Int }
        var truths: [Key: [COCODataset.Annotation]] = [:]
        for a in dataset.annotations { truths[Key(image: a.imageID, category: a.categoryID), default: []].append(a) }
        // Detections get ids 1, 2, ... in the order given, as `COCO.loadRes` numbers them.
        var found: [Key: [(id: Int, detection: COCODetection)]] = [:]
        for (index, d) in usable.enumerated() where knownCategories.contains(d.categoryID) {
            found[Key(image: d.imageID, category: d.categoryID), default: []].append((index + 1, d))
        }

        let t = iouThresholds.count, r = recallThresholds.count
        // precision[category][area][maxDet] = T × R values; recall[category][area][maxDet] = T values; -1: undefined.
        var precision = [[[[Double]]]](
            repeating: .init(repeating: .init(repeating: [], count: maxDetections.count), count: areaRanges.count),
            count: categoryIDs.count)
        var recall = precision
        for (k, category) in categoryIDs.enumerated() {
            // Per image, the matches with every area range, computed once with the most detections.
            let images = imageIDs.map { image -> (truth: [COCODataset.Annotation], found: [(Int, COCODetection)]) in
                let key = Key(image: image, category: category)
                return (truths[key] ?? [], stableSortedByScore(found[key] ?? []).prefix(maxDetections.last!).map { $0 })
            }
            for (a, range) in areaRanges.enumerated() {
                let matched = images.compactMap { match(truth: $0.truth, found: $0.found, range: range) }
                for (m, maxDet) in maxDetections.enumerated() {
                    (precision[k][a][m], recall[k][a][m]) = accumulate(matched, maxDet: maxDet, t: t, r: r)
                }
            }
        }

        func summarize(ap: Bool, iou: Double? = nil, area: Int = 0, maxDet: Int = 2) -> Double? {
            let selected: [Int] = iou.map { v in iouThresholds.indices.filter { iouThresholds[$0] == v } }
                ?? Array(iouThresholds.indices)
            var values: [Double] = []
            for k in categoryIDs.indices {
                for ti in selected {
                    if ap {
                        let p = precision[k][area][maxDet]
                        if !p.isEmpty { values += p[(ti * r)..<((ti + 1) * r)].filter { $0 > -1 } }
                    } else if let v = recall[k][area][maxDet].dropFirst(ti).first, v > -1 {
                        values.append(v)
                    }
                }
            }
            return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
        }
        let stats = [
            summarize(ap: true), summarize(ap: true, iou: 0.5), summarize(ap: true, iou: 0.75),
            summarize(ap: true, area: 1), summarize(ap: true, area: 2), summarize(ap: true, area: 3),
            summarize(ap: false, maxDet: 0), summarize(ap: false, maxDet: 1), summarize(ap: false),
            summarize(ap: false, area: 1), summarize(ap: false, area: 2), summarize(ap: false, area: 3),
        ]
        let names = Dictionary(dataset.categories.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        let perCategory = categoryIDs.enumerated().map { k, id -> COCOEvaluation.CategoryResult in
            let p = precision[k][0][2]
            func mean(_ values: ArraySlice<Double>) -> Double? {
                values.isEmpty || values.contains(-1) ? nil : values.reduce(0, +) / Double(values.count)
            }
            return .init(
                id: id, name: names[id] ?? "\(id)", ap: mean(p[...]), ap50: mean(p.prefix(r)),
                groundTruth: dataset.annotations.count { $0.categoryID == id && !$0.isCrowd },
                detections: usable.count { $0.categoryID == id })
        }
        return COCOEvaluation(stats: stats, perCategory: perCategory, warnings: warnings)
    }

    /// Best score first; equal scores keep their order (`np.argsort(kind='mergesort')`), by the ids given in order.
    static func stableSortedByScore(_ found: [(id: Int, detection: COCODetection)]) -> [(Int, COCODetection)] {
        found.sorted { ($0.detection.score, $1.id) > ($1.detection.score, $0.id) }
    }

    /// One image and category in one area range: `COCOeval.evaluateImg`.
    struct ImageMatches {
        var scores: [Double]
        /// T × D: the matched ground truth's id (0: none), and whether the detection is ignored.
        var matches: [[Int]]
        var ignored: [[Bool]]
        var truthIgnored: [Bool]
    }

    static func match(truth: [COCODataset.Annotation], found: [(Int, COCODetection)], range: ClosedRange<Double>)
        -> ImageMatches?
    {
        guard !truth.isEmpty || !found.isEmpty else { return nil }
        // Ground truth outside the range, or crowd, is ignored; ignored ones go last, order otherwise kept.
        let ignoreFlags = truth.map { $0.isCrowd || !range.contains($0.area) }
        let order = truth.indices.filter { !ignoreFlags[$0] } + truth.indices.filter { ignoreFlags[$0] }
        let gt = order.map { truth[$0] }, gtIgnored = order.map { ignoreFlags[$0] }
        let ious = found.map { d in gt.map { iou(d.1.bbox, $0.bbox, crowd: $0.isCrowd) } }
        var matches = [[Int]](repeating: .init(repeating: 0, count: found.count), count: iouThresholds.count)
        var ignored = [[Bool]](repeating: .init(repeating: false, count: found.count), count: iouThresholds.count)
        if !gt.isEmpty && !found.isEmpty {
            for (ti, threshold) in iouThresholds.enumerated() {
                var truthMatched = [Bool](repeating: false, count: gt.count)
                for di in found.indices {
                    var best = min(threshold, 1 - 1e-10)
                    var m = -1
                    for g in gt.indices {
                        // A ground truth already matched takes no second detection, unless it is a crowd.
                        if truthMatched[g] && !gt[g].isCrowd { continue }
                        // Having a real match, stop at the ignored ones (they come last).
                        if m > -1 && !gtIgnored[m] && gtIgnored[g] { break }
                        if ious[di][g] < best { continue }
                        best = ious[di][g]
                        m = g
                    }
                    guard m > -1 else { continue }
                    ignored[ti][di] = gtIgnored[m]
                    matches[ti][di] = gt[m].id
                    truthMatched[m] = true
                }
            }
        }
        // An unmatched detection outside the area range is ignored too.
        for (di, d) in found.enumerated() where !range.contains(d.1.bbox.area) {
            for ti in iouThresholds.indices where matches[ti][di] == 0 { ignored[ti][di] = true }
        }
        return ImageMatches(scores: found.map(\.1.score), matches: matches, ignored: ignored, truthIgnored: gtIgnored)
    }

    /// Intersection over union of boxes (`maskUtils.iou` on boxes); for a crowd region, over the detection's area.
    static func iou(_ d: COCOBox, _ g: COCOBox, crowd: Bool) -> Double {
        let w = min(d.x + d.width, g.x + g.width) - max(d.x, g.x)
        guard w > 0 else { return 0 }
        let h = min(d.y + d.height, g.y + g.height) - max(d.y, g.y)
        guard h > 0 else { return 0 }
        let intersection = w * h
        return intersection / (crowd ? d.area : d.area + g.area - intersection)
    }

    /// Precision at the recall thresholds (T × R) and the final recall (T) over every image: `COCOeval.accumulate`
    /// for one category, area range and detection limit; all -1 where there is no ground truth to find.
    static func accumulate(_ images: [ImageMatches], maxDet: Int, t: Int, r: Int) -> ([Double], [Double]) {
        let truthCount = images.reduce(0) { $0 + $1.truthIgnored.count { !$0 } }
        guard truthCount > 0 else {
            return ([Double](repeating: -1, count: t * r), [Double](repeating: -1, count: t))
        }
        // Every image's first maxDet detections, then all of them by score (stable: image order, then rank).
        var entries: [(score: Double, image: Int, index: Int)] = []
        for (i, image) in images.enumerated() {
            for index in 0..<min(maxDet, image.scores.count) { entries.append((image.scores[index], i, index)) }
        }
        entries.sort { ($0.score, $1.image, $1.index) > ($1.score, $0.image, $0.index) }
        var precision: [Double] = [], recall: [Double] = []
        for ti in 0..<t {
            var tp = 0.0, fp = 0.0
            var recalls: [Double] = [], precisions: [Double] = []
            for e in entries {
                let image = images[e.image]
                if !image.ignored[ti][e.index] {
                    if image.matches[ti][e.index] != 0 { tp += 1 } else { fp += 1 }
                }
                recalls.append(tp / Double(truthCount))
                precisions.append(tp / (fp + tp + Double.ulpOfOne))
            }
            recall.append(recalls.last ?? 0)
            // Precision made non-increasing from the right, then read at each recall threshold (the first point
            // whose recall reaches it; 0 beyond the last).
            for i in stride(from: precisions.count - 1, to: 0, by: -1) where precisions[i] > precisions[i - 1] {
                precisions[i - 1] = precisions[i]
            }
            var q = [Double](repeating: 0, count: r)
            var p = 0
            for (ri, threshold) in recallThresholds.enumerated() {
                while p < recalls.count && recalls[p] < threshold { p += 1 }
                if p < recalls.count { q[ri] = precisions[p] }
            }
            precision += q
        }
        return (precision, recall)
    }
}

/// Why detections could not be evaluated.
public enum COCOEvaluationError: Error, Equatable, CustomStringConvertible {
    case unknownImage(Int)

    public var description: String {
        switch self {
        case .unknownImage(let id): "a detection is on image \(id), which the data set does not have"
        }
    }
}
