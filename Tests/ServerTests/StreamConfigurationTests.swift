import Foundation
import Server
import Streams
import TestSupport
import Testing

/// `streams.run`: the streams the service starts with itself, read and checked with the configuration.
@Suite("Configured streams")
struct StreamConfigurationTests {
    /// A media folder holding `line-a.mp4` (only its existence matters here) and the `streams:` section's keys that
    /// allow it, indented as the section's.
    private static func media() throws -> (TemporaryDirectory, String) {
        let folder = try TemporaryDirectory()
        try Data("not a video".utf8).write(to: URL(fileURLWithPath: folder.path + "/line-a.mp4"))
        return (folder, """
              media_dir: "\(folder.path)"
              output_dir: "\(folder.path)"
              allowed_urls: ["udp://127.0.0.1:"]
            """)
    }

    @Test("entries are read as POST /v1/streams takes them, names and all")
    func parsed() throws {
        let (folder, head) = try Self.media()
        defer { withExtendedLifetime(folder) {} }
        let config = try ServerConfiguration.parse("""
            streams:
            \(head)
              run:
                - { name: line-a, source: line-a.mp4, slot: default, fps_cap: 15, back_pressure: block,
                    frames_in_flight: 2, outputs: { file: line-a.jsonl }, conf: 0.4 }
                - { name: cam.2, source: "udp://127.0.0.1:5000", outputs: ~ }
                - { name: cam-3, source: "udp://127.0.0.1:5001", outputs: {} }
            """, base: "/srv")
        #expect(config.configuredStreams.map(\.name) == ["line-a", "cam.2", "cam-3"])
        let first = try #require(config.configuredStreams.first)
        #expect(first.source == "line-a.mp4" && first.slot == "default" && first.fpsCap == 15)
        #expect(first.backPressure == .block && first.framesInFlight == 2 && first.confidence == 0.4)
        #expect(first.outputs?.file == "line-a.jsonl")
        #expect(config.configuredStreams.last?.slot == nil, "no slot: the default one, chosen at start")
        #expect(config.configuredStreams.dropFirst().allSatisfy { $0.outputs?.file == nil && $0.outputs?.video == nil })
        #expect(try ServerConfiguration.parse("streams:\n\(head)", base: "/srv").configuredStreams.isEmpty)
    }

    @Test("refused with the entry's key and the reason", arguments: [
        ("- { source: line-a.mp4 }", "streams.run[0].name is required"),
        ("- { name: a, source: line-a.mp4 }\n    - { name: a, source: line-a.mp4 }",
            "streams.run[1].name 'a' names two"),
        ("- { name: \"two words\", source: line-a.mp4 }", "streams.run[0] ('two words'): name 'two words' must be"),
        ("- { name: -lead, source: line-a.mp4 }", "starting with a letter or digit"),
        ("- { name: a, source: missing.mp4 }", "streams.run[0] ('a'): source 'missing.mp4' is not allowed"),
        ("- { name: a, source: ../escape.mp4 }", "streams.run[0] ('a'): source '../escape.mp4' is not allowed"),
        ("- { name: a, source: \"rtsp://10.0.0.1/cam\" }", "matches no streams.allowed_urls prefix"),
        ("- { name: a, source: /dev/video0 }", "not in streams.allowed_devices"),
        ("- { name: a, source: line-a.mp4, fps_cap: 0 }", "fps_cap must lie in 0.001...1000.0"),
        ("- { name: a, source: line-a.mp4, frames_in_flight: 9 }", "frames_in_flight must lie in 1...8"),
        ("- { name: a, source: line-a.mp4, outputs: { file: ../out.jsonl } }", "output '../out.jsonl' is not allowed"),
        ("- { name: a, source: line-a.mp4, outputs: { file: x.mkv, video: x.mkv } }", "name the same file"),
        ("- { name: a, source: line-a.mp4, outputs: { video: x.webm } }",
            "output 'x.webm' is not allowed: a video's name must end in .3gp, .avi, .flv"),
        ("- { name: a, source: line-a.mp4, outputs: { mqtt: true } }", "no MQTT connection"),
        ("- { name: a, source: line-a.mp4, fps: 10 }", "streams.run[0].fps is not a key of a stream"),
        ("- { name: a, source: line-a.mp4, outputs: { fle: x.jsonl } }", "streams.run[0].outputs.fle is not a key"),
        ("- { name: a, source: line-a.mp4, outputs: { file: x.ts } }\n    - { name: b, source: line-a.mp4, "
            + "outputs: { video: x.ts } }", "streams.run[1] ('b'): output 'x.ts' is not allowed: stream 'a'"),
        // An output that is a source (media_dir and output_dir are one folder here): the stream's own, another's.
        ("- { name: a, source: line-a.mp4, outputs: { video: line-a.mp4 } }",
            "output 'line-a.mp4' is not allowed: it is the stream's own source"),
        ("- { name: a, source: line-a.mp4 }\n    - { name: b, source: \"udp://127.0.0.1:5000\", "
            + "outputs: { file: line-a.mp4 } }", "streams.run[1] ('b'): output 'line-a.mp4' is not allowed: stream 'a' reads it"),
    ])
    func refused(entries: String, message: String) throws {
        let (folder, head) = try Self.media()
        defer { withExtendedLifetime(folder) {} }
        let yaml = """
            streams:
            \(head)
              run:
                \(entries)
            """
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(yaml, base: "/srv") }
        #expect(error?.message.contains(message) == true, "\(String(describing: error))")
    }

    @Test("no more configured streams than streams.max_streams")
    func overLimit() throws {
        let (folder, head) = try Self.media()
        defer { withExtendedLifetime(folder) {} }
        let yaml = """
            streams:
            \(head)
              max_streams: 1
              run: [{ name: a, source: line-a.mp4 }, { name: b, source: line-a.mp4 }]
            """
        let error = #expect(throws: ConfigurationError.self) { try ServerConfiguration.parse(yaml, base: "/srv") }
        #expect(error?.message == "streams.run lists 2 streams; streams.max_streams allows 1",
            "\(String(describing: error))")
    }

    @Test("streams.max_pixels: the detect limit by default, set within 1...8192², refused outside; a tiny fps_cap too")
    func maxPixelsAndCap() throws {
        let (folder, head) = try Self.media()
        defer { withExtendedLifetime(folder) {} }
        #expect(try ServerConfiguration.parse("streams:\n\(head)", base: "/srv").streamMaxPixels == 50_000_000)
        let set = try ServerConfiguration.parse("streams:\n\(head)\n  max_pixels: 2073600", base: "/srv")
        #expect(set.streamMaxPixels == 1920 * 1080)
        for bad in ["0", "67108865", "-5"] {
            let error = #expect(throws: ConfigurationError.self) {
                try ServerConfiguration.parse("streams:\n\(head)\n  max_pixels: \(bad)", base: "/srv")
            }
            #expect(error?.message.contains("streams.max_pixels must lie in 1...67108864") == true,
                "\(String(describing: error))")
        }
        // A cap of one frame in 10^30 s would overflow the stream's wait: refused with the entry's key.
        let error = #expect(throws: ConfigurationError.self) {
            try ServerConfiguration.parse("streams:\n\(head)\n  run: [{ name: a, source: line-a.mp4, fps_cap: 1e-30 }]",
                base: "/srv")
        }
        #expect(error?.message.contains("fps_cap must lie in 0.001...1000.0") == true, "\(String(describing: error))")
    }

    @Test("streams.keep_alive_s: 15 s by default, set within 0.1...3600, refused outside")
    func keepAlive() throws {
        let (folder, head) = try Self.media()
        defer { withExtendedLifetime(folder) {} }
        #expect(try ServerConfiguration.parse("streams:\n\(head)", base: "/srv").streamKeepAlive == .seconds(15))
        let set = try ServerConfiguration.parse("streams:\n\(head)\n  keep_alive_s: 2.5", base: "/srv")
        #expect(set.streamKeepAlive == .milliseconds(2500))
        for bad in ["0", "0.05", "3601", "-1", ".nan", ".inf"] {
            let error = #expect(throws: ConfigurationError.self) {
                try ServerConfiguration.parse("streams:\n\(head)\n  keep_alive_s: \(bad)", base: "/srv")
            }
            #expect(error?.message.contains("streams.keep_alive_s must lie in 0.1...3600") == true,
                "\(bad): \(String(describing: error))")
        }
    }
}
