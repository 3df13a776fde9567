import Foundation
import ImageCodecs
import TestSupport

/// Files and tools the tests read: the repository's sample photos and its Python venv (for OpenCV references).
enum TestSupport {
    static func photoURL(_ name: String) -> URL { Repository.url("models/images/\(name)") }

    static func hasPhoto(_ name: String) -> Bool {
        FileManager.default.fileExists(atPath: photoURL(name).path)
    }

    static func photo(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: photoURL(name)))
    }

    static let python = Repository.url(".venv/bin/python")

    static var hasOpenCV: Bool { FileManager.default.isExecutableFile(atPath: python.path) }

    struct PythonFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// What `cv2.imread(path, flags)` returns, as RGB: the reference our decoder must match.
    static func openCVDecode(_ path: URL, flags: String = "cv2.IMREAD_COLOR") throws -> RGBImage {
        let output = FileManager.default.temporaryDirectory
            .appendingPathComponent("opencv-ref-\(UUID().uuidString).rgb")
        defer { try? FileManager.default.removeItem(at: output) }
        let script = """
            import cv2, sys
            im = cv2.imread(sys.argv[1], \(flags))
            assert im is not None, "cv2.imread failed"
            open(sys.argv[2], "wb").write(cv2.cvtColor(im, cv2.COLOR_BGR2RGB).tobytes())
            print(im.shape[1], im.shape[0])
            """
        let printed = try runPython(script, arguments: [path.path, output.path])
        let size = printed.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard size.count == 2 else { throw PythonFailed(description: "unexpected output: \(printed)") }
        return RGBImage(width: size[0], height: size[1], pixels: [UInt8](try Data(contentsOf: output)))
    }

    /// Runs a Python script with the repository venv; returns its stdout.
    @discardableResult
    static func runPython(_ script: String, arguments: [String] = []) throws -> String {
        let result = try runProcess(python.path, ["-c", script] + arguments)
        guard result.status == 0 else {
            throw PythonFailed(description: "python exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    /// The largest per-byte difference between two equally sized images.
    static func maxAbsDifference(_ a: RGBImage, _ b: RGBImage) -> Int {
        precondition(a.width == b.width && a.height == b.height)
        var worst = 0
        for i in a.pixels.indices { worst = max(worst, abs(Int(a.pixels[i]) - Int(b.pixels[i]))) }
        return worst
    }

    /// A smooth deterministic image, different along each axis, so any flip or rotation shows.
    static func gradient(width: Int, height: Int) -> RGBImage {
        var pixels: [UInt8] = []
        pixels.reserveCapacity(width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                pixels += [
                    UInt8(x * 255 / max(width - 1, 1)), UInt8(y * 255 / max(height - 1, 1)),
                    UInt8((x + 2 * y) * 255 / max(width + 2 * height - 3, 1)),
                ]
            }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    static func writeTemporary(_ bytes: [UInt8], suffix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("codecs-\(UUID().uuidString).\(suffix)")
        try Data(bytes).write(to: url)
        return url
    }
}

/// CRC-32 (ISO-HDLC, the PNG chunk CRC), for crafting PNG chunks in tests.
func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

func bigEndian32(_ value: Int) -> [UInt8] {
    [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
}

/// One PNG chunk: length, type, data, CRC over type + data.
func pngChunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let typeBytes = Array(type.utf8)
    return bigEndian32(data.count) + typeBytes + data + bigEndian32(Int(crc32(typeBytes + data)))
}
