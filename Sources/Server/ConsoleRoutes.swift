import AuditLog
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Primitives

// What the web console reads besides the slots and the audit trail: the event stream, request statistics, the model
// repository's files and the audit chain's state; and the console's own files.

extension APIRoutes {
    /// `/v1/whoami`, `/v1/events/stream`, `/v1/stats`, `/v1/repository`, `/v1/audit/verify`.
    func registerConsoleAPI(on v1: RouterGroup<YOLOSwapRequestContext>) {
        v1.get("whoami") { _, context in
            let principal = try require(.viewer, context)
            return try json(WhoAmIDTO(name: principal.name, role: principal.role.rawValue), status: .ok)
        }
        let stream = EventStream(manager: control.manager, repository: control.repository,
            keepAlive: .seconds(configuration.eventsKeepAliveSeconds), bufferLimit: configuration.eventsClientBuffer)
        v1.get("events/stream") { request, context in
            _ = try require(.viewer, context)
            let lastEventID = request.headers[HTTPField.Name("Last-Event-ID")!]
            let slot = request.uri.queryParameters.get("slot")
            if let slot { try checkSlotFilter(slot) }
            return stream.response(lastEventID: lastEventID, slot: slot, viewer: try viewerDeadline(context))
        }
        v1.get("stats") { request, context in
            _ = try require(.viewer, context)
            let window = try intParameter(request.uri.queryParameters.get("window"), name: "window", default: 60,
                range: 1...RequestStats.capacity)
            return try json(control.requestStats.snapshot(window: window), status: .ok)
        }
        let repository = control.repository
        let listing = BlockingQueue(label: "yoloswap.repository")
        v1.get("repository") { _, context in
            _ = try require(.viewer, context)
            let (models, truncated) = await listing.run { repository.models() }
            return try json(RepositoryDTO(models: models, truncated: truncated), status: .ok)
        }
        v1.get("audit/verify") { _, context in
            _ = try require(.operator, context)
            guard let audit = control.audit else { throw Problem.notFound("the audit log is not enabled") }
            return try json(AuditVerificationDTO(try await audit.verify()), status: .ok)
        }
    }

    /// Refuses a `slot=` filter that names no slot (400 when empty, 404 when unknown): a typo would otherwise filter
    /// out every event, an empty answer that looks like a quiet slot.
    func checkSlotFilter(_ slot: String) throws {
        guard !slot.isEmpty else { throw Problem.badRequest("slot= is empty: name a slot, or leave the filter out") }
        guard control.manager.slot(slot) != nil else {
            throw Problem.notFound("no slot '\(slot.prefix(utf8Bytes: 64))'")
        }
    }

    /// The console's files at `/`, `/console.js`, `/console.css` (when `server.console` is on).
    func registerConsole(on router: Router<YOLOSwapRequestContext>) {
        guard configuration.console else { return }
        for (path, asset) in ConsoleAsset.all {
            router.get(RouterPath(path)) { request, _ in asset.response(ifNoneMatch: request.headers[.ifNoneMatch]) }
        }
    }
}

// MARK: - Static files

/// One of the console's files, embedded in the binary (SwiftPM `embedInCode` resources from `Sources/Server/Console`),
/// with the headers it is served with.
///
/// Every file is revalidated on each load (`Cache-Control: no-cache` with a strong `ETag`, the file's SHA-256), so a
/// new binary's console is never mixed with an old cached one. The Content-Security-Policy allows scripts, styles
/// and connections from the service's own origin only — no inline script or style, no other site — and images from
/// the page itself (the photo under test is drawn from memory).
///
/// Thread-safety: immutable.
struct ConsoleAsset: Sendable {
    let body: ByteBuffer
    let contentType: String
    let etag: String

    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; "
        + "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        + "frame-ancestors 'none'"

    init(_ bytes: [UInt8], contentType: String) {
        body = ByteBuffer(bytes: bytes)
        self.contentType = contentType
        etag = "\"" + Hex.string(SHA256.hash(data: bytes)).prefix(32) + "\""
    }

    static let all: [(String, ConsoleAsset)] = [
        ("/", ConsoleAsset(PackageResources.index_html, contentType: "text/html; charset=utf-8")),
        ("/console.js", ConsoleAsset(PackageResources.console_js, contentType: "text/javascript; charset=utf-8")),
        ("/console.css", ConsoleAsset(PackageResources.console_css, contentType: "text/css; charset=utf-8")),
    ]

    func response(ifNoneMatch: String?) -> Response {
        var headers: HTTPFields = [
            .contentType: contentType, .cacheControl: "no-cache", .eTag: etag,
            .contentSecurityPolicy: Self.contentSecurityPolicy,
        ]
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] = "same-origin"
        if let ifNoneMatch, ifNoneMatch.split(separator: ",").contains(where: {
            $0.trimmingCharacters(in: .whitespaces) == etag
        }) {
            return Response(status: .notModified, headers: headers)
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }
}

// MARK: - Repository listing and audit verification

/// `GET /v1/whoami`: the token's name and role (what the console may offer).
struct WhoAmIDTO: Encodable {
    var name: String
    var role: String
}

/// A model file in the repository, as `GET /v1/repository` lists it.
struct RepositoryModelDTO: Encodable, Sendable {
    /// Relative to the repository: what `POST /v1/slots/{slot}/load` takes.
    var path: String
    var bytes: Int
    /// Whether a `MODEL.sig` lies beside it.
    var signed: Bool
}

struct RepositoryDTO: Encodable {
    var models: [RepositoryModelDTO]
    /// True when the listing stopped at its limit.
    var truncated: Bool
}

extension ModelRepository {
    /// Files listed at most.
    static let listingLimit = 1000
    /// Folders entered at most below the root.
    static let listingDepth = 4

    /// The `.onnx` regular files in the repository, sorted by path: hidden entries skipped, symbolic links not
    /// followed (a load resolves and checks its path anyway), at most `listingDepth` folders deep and
    /// `listingLimit` files, and whether a file was left out past that. Blocking (reads folders): call it off the
    /// cooperative pool.
    func models() -> (models: [RepositoryModelDTO], truncated: Bool) {
        var found: [RepositoryModelDTO] = []
        var truncated = false
        let manager = FileManager.default
        func walk(_ folder: String, _ prefix: String, depth: Int) {
            guard let names = try? manager.contentsOfDirectory(atPath: folder) else { return }
            for name in names.sorted() where !name.hasPrefix(".") {
                guard !truncated else { return }
                let path = folder + "/" + name
                guard let attributes = try? manager.attributesOfItem(atPath: path),
                    let type = attributes[.type] as? FileAttributeType
                else { continue }
                if type == .typeDirectory, depth < Self.listingDepth {
                    walk(path, prefix + name + "/", depth: depth + 1)
                } else if type == .typeRegular, name.hasSuffix(".onnx") {
                    // One past the limit says the listing is cut, without being listed.
                    guard found.count < Self.listingLimit else {
                        truncated = true
                        return
                    }
                    found.append(RepositoryModelDTO(path: prefix + name,
                        bytes: (attributes[.size] as? NSNumber)?.intValue ?? 0,
                        signed: manager.fileExists(atPath: path + ".sig")))
                }
            }
        }
        walk(root, "", depth: 0)
        return (found, truncated)
    }
}

/// `GET /v1/audit/verify`'s answer: the chain walked from its first entry to the recorded head.
struct AuditVerificationDTO: Encodable {
    struct Break: Encodable {
        var sequence: Int64
        var kind: String
        var reason: String
    }
    var intact: Bool
    /// Entries that checked out.
    var entries: Int
    /// The head's hash, when intact.
    var head_hash: String?
    /// The first broken link, when not.
    var `break`: Break?

    init(_ verification: AuditVerification) {
        switch verification {
        case .intact(let entries, let headHash):
            intact = true
            self.entries = entries
            head_hash = headHash
        case .broken(let chainBreak):
            intact = false
            entries = chainBreak.verifiedEntries
            `break` = Break(sequence: chainBreak.entryID, kind: chainBreak.kind.rawValue, reason: chainBreak.reason)
        }
    }
}
