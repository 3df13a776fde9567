/// How ``ImageDecoder/decode(_:options:)`` decodes an image.
///
/// Fields and defaults:
/// - `maxPixels` (50 000 000): images whose header declares more pixels (width × height, before any DCT
///   scaling) are rejected with ``ImageDecodeError/tooLarge(width:height:maxPixels:)`` before anything is allocated.
///   A limit above `Int.max / 3` (the most pixels whose RGB bytes an `Int` can count) is applied as `Int.max / 3`.
/// - `applyEXIFOrientation` (true): rotate/flip the decoded image as its EXIF orientation tag (2–8) says,
///   as OpenCV's `cv2.imread(path, IMREAD_COLOR)` does. Applies to JPEG APP1/Exif and PNG eXIf.
/// - `minimumDecodedSize` (nil): when set, JPEGs much larger than this are decoded with libjpeg-turbo's DCT
///   scaling (1/2, 1/4, 1/8, ...) to the smallest scale whose result is still at least this size on both axes
///   (the axes as seen after EXIF orientation). A fast path for callers that will downscale anyway; PNGs are
///   always decoded at full size.
public struct DecodeOptions: Sendable {
    public var maxPixels: Int
    public var applyEXIFOrientation: Bool
    public var minimumDecodedSize: (width: Int, height: Int)?

    public init(
        maxPixels: Int = 50_000_000, applyEXIFOrientation: Bool = true,
        minimumDecodedSize: (width: Int, height: Int)? = nil
    ) {
        self.maxPixels = maxPixels
        self.applyEXIFOrientation = applyEXIFOrientation
        self.minimumDecodedSize = minimumDecodedSize
    }
}
