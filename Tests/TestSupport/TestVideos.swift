import Foundation

/// Test videos made by ffmpeg from the sample photos: a slow pan over a photo with the frame number drawn on it, so
/// every frame differs and detections move. Made once per test process, in a temporary folder.
public enum TestVideos {
    public static let folder: TemporaryDirectory = { try! TemporaryDirectory(prefix: "yoloswap-videos") }()

    /// 300 frames, 30 fps, 320x240 H.264 in MP4.
    public static let h264: String = { make("pan.mp4", frames: 300, codec: ["-c:v", "libx264", "-pix_fmt", "yuv420p"]) }()
    /// 60 frames, 30 fps, 320x240 MJPEG in AVI.
    public static let mjpeg: String = { make("pan.avi", frames: 60, codec: ["-c:v", "mjpeg", "-q:v", "3"]) }()
    /// The H.264 video as MPEG-TS, for publishing over UDP.
    public static let transportStream: String = {
        make("pan.ts", frames: 300, codec: ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "15"])
    }()

    private static func make(_ name: String, frames: Int, codec: [String]) -> String {
        let out = folder.file(name)
        let filter = "scale=480:640,crop=320:240:x='min(n,160)':y='min(n,400)',"
            + "drawtext=text='%{frame_num}':x=8:y=8:fontsize=28:fontcolor=white:box=1:boxcolor=black"
        let result = try! runProcess("/usr/bin/ffmpeg", ["-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-framerate", "30", "-loop", "1", "-i", Repository.path("models/images/bus.jpg"), "-vf", filter,
            "-frames:v", String(frames)] + codec + [out])
        precondition(result.status == 0, "ffmpeg could not make \(name): \(result.stderr)")
        // Resolved: a stream's decoder opens a file source by a path with no symbolic link in it (a temporary folder
        // may lie under one).
        return URL(fileURLWithPath: out).resolvingSymlinksInPath().path
    }

    /// Frame `index` of `video` as a PNG, extracted by ffmpeg.
    public static func extractPNG(_ video: String, frame index: Int, to path: String) throws {
        let result = try runProcess("/usr/bin/ffmpeg", ["-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-i", video, "-vf", "select=eq(n\\,\(index))", "-fps_mode", "passthrough", "-frames:v", "1",
            "-pix_fmt", "rgb24", path])
        guard result.status == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: "ffmpeg: \(result.stderr)"])
        }
    }
}
