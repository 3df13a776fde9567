import Foundation
import Hummingbird
import NIOCore

extension APIRoutes {
    /// `GET/PUT /v1/desired`, `GET /v1/desired/status`: the desired-state document, applied through the reconciler.
    func registerDesired(on v1: RouterGroup<YOLOSwapRequestContext>) {
        v1.get("desired") { _, context in
            _ = try require(.viewer, context)
            guard let document = desired.document else {
                throw Problem.notFound("no desired-state document has been applied")
            }
            return try json(document, status: .ok)
        }
        v1.put("desired") { request, context in
            let principal = try await requireOperator(request, context)
            // A malformed request (400, 413) is recorded as a refused call, as the other changes' are; a document
            // that is refused (422) is recorded by the reconciler.
            let (dryRun, bytes) = try await parsedChange(request, context) { () async throws -> (Bool, [UInt8]) in
                let dryRun = try boolParameter(request, "dry_run")
                var buffer: ByteBuffer
                do {
                    buffer = try await request.body.collect(upTo: DesiredState.Limits.bytes)
                } catch is NIOTooManyBytesError {
                    throw Problem(.contentTooLarge, "Content Too Large",
                        detail: "a desired-state document may have at most \(DesiredState.Limits.bytes) bytes")
                }
                return (dryRun, buffer.readBytes(length: buffer.readableBytes) ?? [])
            }
            let result = try await desired.apply(bytes, from: .http(token: principal.name), dryRun: dryRun)
            return try json(result, status: .ok)
        }
        v1.get("desired/status") { _, context in
            _ = try require(.viewer, context)
            return try json(desired.status, status: .ok)
        }
    }
}
