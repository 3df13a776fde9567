import ImageCodecs
import YOLO

/// The fused JPEG decode + letterbox (`LetterboxTransform.tensor(fromJPEG:)`, two threads) as `Detector` runs it on
/// a detect request's body, with the plain decode-then-letterbox path for what it declines, into a small input.
///
/// The first byte picks the model input's side (32…540, so the tensor stays small) and whether EXIF orientation is
/// applied; the rest is the file. The tensor must be the letterbox's size, every value in 0…1 (pixels / 255, or the
/// grey padding), and the geometry must map onto the source image.
public enum FusedLetterboxHarness {
    public static func run(_ data: UnsafeBufferPointer<UInt8>) {
        var input = FuzzInput(data)
        let selector = input.byte()
        let side = 32 + Int(selector >> 1) * 4
        let transform = LetterboxTransform(target: ImageSize(width: side, height: side))
        let bytes = input.rest()
        let options = DecodeOptions(applyEXIFOrientation: selector & 1 == 0)
        let tensor: [Float]
        let geometry: LetterboxGeometry
        do {
            if let fused = try transform.tensor(fromJPEG: bytes, options: options) {
                (tensor, geometry) = (fused.tensor, fused.geometry)
            } else {
                (tensor, geometry) = transform.tensor(from: try ImageDecoder.decode(bytes, options: options))
            }
        } catch { return }
        precondition(tensor.count == 3 * side * side, "tensor of \(tensor.count) values for a \(side)² input")
        precondition(tensor.allSatisfy { $0 >= 0 && $0 <= 1 }, "tensor value outside 0...1")
        precondition(geometry.source.width > 0 && geometry.source.height > 0, "empty source")
        precondition(
            geometry.left >= 0 && geometry.top >= 0 && geometry.left + geometry.resized.width <= side
                && geometry.top + geometry.resized.height <= side, "resized image outside the input")
    }
}
