import Foundation

/// JPEGs of the kinds a decoder must get right, written by OpenCV (the repository's `.venv`) at test time, so that no
/// binary image is committed: chroma subsamplings, grayscale, restart markers, progressive, odd and tiny sizes.
public enum GeneratedJPEGs {
    /// One generated file: what it exercises, and its bytes.
    public struct File: Sendable, CustomStringConvertible {
        public var name: String
        public var bytes: [UInt8]
        /// Progressive: libjpeg reads every scan before the first row, so the two-thread decode does not take it.
        public var isProgressive: Bool { name.hasPrefix("progressive") }
        public var description: String { name }
    }

    /// Whether the generator can run (the repository's Python venv with OpenCV, made by scripts/setup).
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: Repository.path(".venv/bin/python")) }

    /// The files, generated once per test process; empty when the venv is missing (tests say so with `available`).
    public static let files: [File] = (try? generate()) ?? []

    /// Textured content (gradients plus seeded noise, so the entropy-coded data is not trivial), each kind written by
    /// `cv2.imwrite` with the parameters named.
    static let script = """
        import sys, os, numpy as np, cv2
        out = sys.argv[1]
        def image(w, h, seed):
            rng = np.random.default_rng(seed)
            y, x = np.mgrid[0:h, 0:w]
            base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // max(w + h - 2, 1)], -1)
            noise = rng.integers(-40, 41, size=(h, w, 3))
            return np.clip(base + noise, 0, 255).astype(np.uint8)
        S = {"444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
             "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "440": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
             "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}
        def write(name, img, *params):
            ok = cv2.imwrite(os.path.join(out, name + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92, *params])
            assert ok, name
        for i, (w, h) in enumerate([(333, 257), (640, 481)]):
            for s, v in S.items():
                write(f"sampling{s}-{w}x{h}", image(w, h, i), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, v)
        write("gray-311x203", cv2.cvtColor(image(311, 203, 3), cv2.COLOR_BGR2GRAY))
        write("gray-odd-97x301", cv2.cvtColor(image(97, 301, 4), cv2.COLOR_BGR2GRAY))
        write("restart1-420-400x300", image(400, 300, 5), cv2.IMWRITE_JPEG_RST_INTERVAL, 1)
        write("restart7-444-257x333", image(257, 333, 6), cv2.IMWRITE_JPEG_RST_INTERVAL, 7,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, S["444"])
        write("progressive-420-400x300", image(400, 300, 7), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
        for w, h in [(1, 1), (7, 5), (16, 3), (3, 17), (600, 9), (9, 600)]:
            write(f"tiny-420-{w}x{h}", image(w, h, w * 1000 + h))
        write("tiny-444-600x7", image(600, 7, 8), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, S["444"])
        """

    static func generate() throws -> [File] {
        guard available else { return [] }
        let directory = try TemporaryDirectory(prefix: "generated-jpegs")
        let result = try runProcess(Repository.path(".venv/bin/python"), ["-c", script, directory.path])
        guard result.status == 0 else {
            fatalError("generating test JPEGs failed (\(result.status)): \(result.stderr)")
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        return try names.map { name in
            File(
                name: String(name.dropLast(4)),
                bytes: [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.file(name)))))
        }
    }
}
