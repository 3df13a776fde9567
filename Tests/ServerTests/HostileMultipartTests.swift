import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Primitives
import TestSupport
import Testing

/// Multipart bodies built to make a naive delimiter search quadratic: long runs of the boundary's own characters that
/// fall one byte short of a delimiter. Each request must be answered within seconds, whatever its status.
@Suite("hostile multipart bodies of POST /v1/detect are answered promptly", .serialized)
struct HostileMultipartTests {
    typealias H = ServerHarness

    /// How long a request may take on a loaded two-core machine running a debug build (the naive search took minutes
    /// to hours on such bodies).
    static let answerWithin = Duration.seconds(30)

    @Test("a boundary of 70 000 hyphens with 20 MB of near-delimiters before it is refused or parsed in seconds")
    func longBoundary() async throws {
        let boundary = String(repeating: "-", count: 70_000)
        let status = try await answer(boundary: boundary, preamble: Self.nearDelimiters(boundary, bytes: 19_500_000))
        let answered = try #require(status, "no answer within \(Self.answerWithin)")
        #expect(answered == .badRequest)
    }

    @Test("a 70-character boundary with 4 MB of near-delimiters around and inside the image is parsed in seconds")
    func longestLegalBoundary() async throws {
        let boundary = String(repeating: "-", count: 70)
        let near = Self.nearDelimiters(boundary, bytes: 2_000_000)
        var inside = [UInt8]()
        inside.reserveCapacity(2_100_000)
        while inside.count < 2_000_000 { inside += Array("\r\n--\(boundary.dropLast())x".utf8) }
        let status = try await answer(boundary: boundary, preamble: near, afterImage: inside)
        let answered = try #require(status, "no answer within \(Self.answerWithin)")
        // The image part is the JPEG followed by the near-delimiters: the decoder may accept or refuse the tail.
        #expect(answered == .ok || answered == .badRequest, "\(answered)")
    }

    /// Runs of `boundary.count + 1` hyphens separated by "x": each run is one hyphen short of "--" + boundary.
    static func nearDelimiters(_ boundary: String, bytes: Int) -> [UInt8] {
        let run = [UInt8](repeating: UInt8(ascii: "-"), count: boundary.utf8.count + 1) + [UInt8(ascii: "x")]
        var out = [UInt8]()
        out.reserveCapacity(bytes + run.count)
        while out.count < bytes { out += run }
        return out
    }

    /// Posts a multipart body (preamble, then the field `image` holding the bus photo and `afterImage`) and returns the
    /// status, or nil when no answer came within ``answerWithin``.
    func answer(boundary: String, preamble: [UInt8], afterImage: [UInt8] = []) async throws -> HTTPResponse.Status? {
        // The server's own request timeout (10 s by default, which reading the body spends too) is set past this
        // test's bound, so that what is measured is the parse, answered whatever its status.
        let harness = try await ServerHarness(requestTimeoutMilliseconds: 120_000)
        defer { Task { await harness.cleanUp() } }
        var body = ByteBuffer(bytes: preamble)
        body.writeString("\r\n--\(boundary)\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n")
        var jpeg = H.busJPEG
        body.writeBuffer(&jpeg)
        body.writeBytes(afterImage)
        body.writeString("\r\n--\(boundary)--\r\n")
        let sent = body
        return try await harness.test { client in
            let status = Locked<HTTPResponse.Status?>(nil)
            let request = Task {
                try await client.execute(uri: "/v1/detect", method: .post,
                    headers: H.headers(token: "carol-token", contentType: "multipart/form-data; boundary=\(boundary)"),
                    body: sent) { response in status.withLock { $0 = response.status } }
            }
            guard await eventually(timeout: Self.answerWithin, { status.withLock { $0 != nil } }) else {
                return nil
            }
            try await request.value
            return status.withLock { $0 }
        }
    }
}
