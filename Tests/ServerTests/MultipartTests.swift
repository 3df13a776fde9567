import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import Server

/// The field `image` of a multipart body: its bytes come out exactly as sent, and bodies without a usable one get
/// problem details naming what is wrong.
@Suite("multipart/form-data bodies of POST /v1/detect", .serialized)
struct MultipartTests {
    typealias H = ServerHarness

    /// A body, its content type, and the bytes the field `image` holds.
    struct Shape: Sendable, CustomTestStringConvertible {
        var name: String
        var contentType: String
        var body: [UInt8]
        var image: [UInt8]
        var testDescription: String { name }
    }

    /// Image bytes that hold every near-miss of the delimiter "\r\n--XyZ": each lacks or changes one byte.
    static let trickyImage: [UInt8] = Array(H.busJPEG.readableBytesView.prefix(1000))
        + Array("\r\n--XyQ\r\n--Xy\r\r\n--XyZ".utf8).dropLast() + Array("\n--XyZ\r--XyZ--XyZ\r\n-XyZ\r\n--xyz".utf8)
        + Array("\r\n--XY".utf8) + [0, 13, 10, 45, 45, 88, 121, 0xFF, 13]

    static func part(_ boundary: String, name: String, _ content: [UInt8], filename: String? = nil) -> [UInt8] {
        var head = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\""
        if let filename { head += "; filename=\"\(filename)\"" }
        return Array((head + "\r\nContent-Type: application/octet-stream\r\n\r\n").utf8) + content + Array("\r\n".utf8)
    }

    static let shapes: [Shape] = {
        let image = trickyImage
        let bus = Array(H.busJPEG.readableBytesView)
        return [
            Shape(name: "CRLF, one part", contentType: "multipart/form-data; boundary=XyZ",
                body: part("XyZ", name: "image", bus) + Array("--XyZ--\r\n".utf8), image: bus),
            Shape(name: "quoted boundary with a space and other fields around the image",
                contentType: "multipart/form-data; charset=utf-8; boundary=\"Xy Z:(1)\"",
                body: Array("preamble\r\n".utf8) + part("Xy Z:(1)", name: "note", Array("hello".utf8))
                    + part("Xy Z:(1)", name: "image", bus, filename: "image") + part("Xy Z:(1)", name: "extra", [1])
                    + Array("--Xy Z:(1)--\r\nepilogue".utf8),
                image: bus),
            Shape(name: "field name in another case, filename 'image' on an earlier part",
                contentType: "Multipart/Form-Data; BOUNDARY=XyZ",
                body: part("XyZ", name: "photo", [9, 9], filename: "image") + part("XyZ", name: "IMAGE", bus)
                    + Array("--XyZ--".utf8),
                image: bus),
            Shape(name: "UTF-8 in a header value (a filename)", contentType: "multipart/form-data; boundary=XyZ",
                body: part("XyZ", name: "image", bus, filename: "Bürger-Straße.jpg") + Array("--XyZ--\r\n".utf8),
                image: bus),
            Shape(name: "near-delimiters inside the image", contentType: "multipart/form-data; boundary=XyZ",
                body: part("XyZ", name: "before", Array("\r\n--XyQ".utf8)) + part("XyZ", name: "image", image)
                    + Array("--XyZ--\r\n".utf8),
                image: image),
        ]
    }()

    @Test("the field 'image' comes out byte for byte", arguments: shapes)
    func extractsImage(_ shape: Shape) async throws {
        let reader = try MultipartFieldReader(contentType: shape.contentType, field: "image")
        // Fed in uneven chunks, so that delimiters straddle chunk edges.
        var offset = 0
        var size = 1
        while offset < shape.body.count {
            let end = min(shape.body.count, offset + size)
            try await reader.feed(ByteBuffer(bytes: shape.body[offset..<end]))
            offset = end
            size = size * 3 % 997 + 1
        }
        #expect(try reader.content() == shape.image)
    }

    /// multipart-kit 4.7.1 looks each byte of a header name up in a 128-entry table: a byte of 0x80 or more there
    /// trapped (index out of range) and killed the process. Found by the fuzz target `FuzzMultipart`.
    @Test("a byte of 0x80 or more in a part header's name is refused as malformed, whole or byte by byte",
          arguments: [
              "preamble text\r\n--a b:c?\r\nContent-Dispositio\u{DD}n: form-data; name=\"note\"\r\n\r\nhello\r\n",
              "--a b:c?\r\nContent-Disposition: form-data; name=\"note\"\r\n\u{80}: x\r\n\r\nhi\r\n",
              "--a b:c?\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--a b:c?\r\nX\u{FF}: y\r\n",
              // The second fuzz finding: a value's CRLF, then the delimiter's own bytes read as a name, then 0x87.
              "--a b:c?\r\nContent-Disposition: form\u{FF}\u{DB}\r\n--a b:c?\u{87}--\r\n",
          ], [1, 4096])
    func highByteInHeaderName(text: String, chunk: Int) async throws {
        // The high byte as one raw byte (U+0080...U+00FF written as Latin-1), not as its UTF-8 encoding.
        let body = text.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) }
            + Array("--a b:c?\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nJPEG\r\n--a b:c?--".utf8)
        let reader = try MultipartFieldReader(contentType: "multipart/form-data; boundary=\"a b:c?\"", field: "image")
        await #expect(throws: MultipartError.self) {
            var offset = 0
            while offset < body.count {
                let end = min(body.count, offset + chunk)
                try await reader.feed(ByteBuffer(bytes: body[offset..<end]))
                offset = end
            }
        }
    }

    @Test("a part's headers over 16 KiB are refused as too long, in one piece or in chunks; 16 KiB of headers pass",
          arguments: [1 << 20, 4096])
    func longHeaders(chunk: Int) async throws {
        func feed(_ body: [UInt8]) async throws -> [UInt8] {
            let reader = try MultipartFieldReader(contentType: "multipart/form-data; boundary=XyZ", field: "image")
            var offset = 0
            while offset < body.count {
                let end = min(body.count, offset + chunk)
                try await reader.feed(ByteBuffer(bytes: body[offset..<end]))
                offset = end
            }
            return try reader.content()
        }
        func body(padding: Int) -> [UInt8] {
            Array(("--XyZ\r\nContent-Disposition: form-data" + String(repeating: ";", count: padding)
                + "; name=\"image\"\r\n\r\nJPEG\r\n--XyZ--").utf8)
        }
        // The block: "--XyZ" (its last byte starts it), CRLF, the header line, CRLF and the blank line's CR.
        #expect(try await feed(body(padding: 16_000)) == Array("JPEG".utf8))
        let error = await #expect(throws: MultipartError.self) { _ = try await feed(body(padding: 4 << 20)) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("part headers longer than 16384 bytes"), "\(String(describing: error))")
    }

    @Test("each shape is accepted by POST /v1/detect", arguments: shapes.prefix(3))
    func detects(_ shape: Shape) async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: "carol-token", contentType: shape.contentType),
                body: ByteBuffer(bytes: shape.body)) { response in
                #expect(response.status == .ok)
                let body = try H.json(response)
                #expect((body["image"] as? [String: Int])?["width"] == 810)
            }
        }
    }

    static let note = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XyZ--"
    static let emptyImage = "--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n\r\n--XyZ--"

    @Test("bodies without a usable field 'image' get 400 problem details that say why", arguments: [
        ("multipart/form-data", "--XyZ\r\n\r\nx\r\n--XyZ--", "without a boundary"),
        ("multipart/form-data; boundary=", "--\r\n\r\nx\r\n----", "invalid boundary"),
        ("multipart/form-data; boundary=" + String(repeating: "b", count: 71), "x", "invalid boundary (71"),
        ("multipart/form-data; boundary=a\\b", "x", "invalid boundary"),
        ("multipart/form-data; boundary=XyZ", note, "without a non-empty field 'image'"),
        ("multipart/form-data; boundary=XyZ", emptyImage, "empty field 'image'"),
        ("multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc",
            "not closed by a delimiter"),
        ("multipart/form-data; boundary=XyZ", "--XyZ\r\nContent Disposition: x\r\n\r\nabc\r\n--XyZ--", "malformed"),
        ("multipart/form-data; boundary=XyZ", "--XyZ\r\nA: b\r\n\r\nabc\r\n--XyZ!", "malformed"),
        ("multipart/form-data; boundary=q", "--q\r\n\r\n--q--", "without a non-empty field 'image'"),
    ])
    func refused(contentType: String, body: String, detail: String) async throws {
        let harness = try await ServerHarness()
        defer { Task { await harness.cleanUp() } }
        try await harness.test { client in
            try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: "carol-token", contentType: contentType), body: ByteBuffer(string: body)) {
                response in
                #expect(response.status == .badRequest)
                #expect(response.headers[.contentType] == "application/problem+json")
                let problem = try H.json(response)
                #expect((problem["detail"] as? String)?.contains(detail) == true, "\(problem)")
            }
        }
    }

    @Test("a multipart body over the limit is 413, even after a complete field 'image'")
    func tooLarge() async throws {
        let harness = try await ServerHarness(maxBodyBytes: 100_000)
        defer { Task { await harness.cleanUp() } }
        let body = Self.part("XyZ", name: "image", [1, 2, 3]) + Array("--XyZ--\r\n".utf8)
            + [UInt8](repeating: 0, count: 100_000)
        try await harness.test { client in
            try await client.execute(uri: "/v1/detect", method: .post,
                headers: H.headers(token: "carol-token", contentType: "multipart/form-data; boundary=XyZ"),
                body: ByteBuffer(bytes: body)) { response in
                #expect(response.status == .contentTooLarge)
                let problem = try H.json(response)
                #expect(problem["title"] as? String == "Content Too Large")
            }
        }
    }
}
