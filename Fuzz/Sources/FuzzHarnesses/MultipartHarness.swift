import Dispatch
import NIOCore
import Server

/// The `multipart/form-data` body of a detect request, parsed as `Routes` does: a `MultipartFieldReader` for the field
/// `image` made from the request's `Content-Type`, fed the body in the chunks it arrives in, then asked for the field.
///
/// Input: one byte for the chunk size (1…256 bytes, so that delimiters and headers fall across chunk borders), the
/// `Content-Type` up to the first newline, then the body. A field that is found is non-empty and shorter than the body.
public enum MultipartHarness {
    public static func run(_ data: UnsafeBufferPointer<UInt8>) {
        var input = FuzzInput(data)
        let chunkSize = input.integer(in: 1...256)
        let contentType = String(decoding: input.bytes(upTo: UInt8(ascii: "\n")), as: UTF8.self)
        let body = input.rest()
        // `feed` is async, as it is in the request's task; the fuzzer's thread (the main thread) waits for it. A
        // detached task: a plain one would inherit `main`'s main-actor isolation and wait for the blocked thread.
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            defer { done.signal() }
            guard let reader = try? MultipartFieldReader(contentType: contentType, field: "image") else { return }
            var offset = 0
            while offset < body.count {
                let end = min(body.count, offset + chunkSize)
                do { try await reader.feed(ByteBuffer(bytes: body[offset..<end])) } catch { return }
                offset = end
            }
            guard let content = try? reader.content() else { return }
            precondition(!content.isEmpty && content.count < body.count, "field of \(content.count) bytes")
        }
        done.wait()
    }
}
