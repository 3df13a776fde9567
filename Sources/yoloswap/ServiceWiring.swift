import AuditLog
import Foundation
import HotSwap
import Logging
import ModelSigning
import Server

/// Builds the audit trail and the signature verifier the configuration asks for.
enum ServiceWiring {
    struct Services {
        var audit: (any AuditSink)?
        var auditReader: (any AuditReader)?
        var verifier: (any ModelVerifier)?
    }

    static func make(configuration: ServerConfiguration, logger: Logger) throws -> Services {
        let log = try AuditLog(directory: configuration.stateDirectory)
        let trail = AuditTrail(log: log)
        var verifier: (any ModelVerifier)?
        if !configuration.trustedKeys.isEmpty || configuration.requireSignature {
            verifier = try SignatureVerifier(trustedKeyFiles: configuration.trustedKeys,
                requireSignature: configuration.requireSignature)
        }
        return Services(audit: trail, auditReader: trail, verifier: verifier)
    }
}

/// The server's audit sink and reader over the hash-chained SQLite log.
struct AuditTrail: AuditSink, AuditReader {
    let log: AuditLog

    func record(_ r: AuditRecord) throws {
        // Request-supplied text may hold NUL characters, which the log refuses: record them visibly instead.
        func clean(_ s: String?) -> String? { s?.replacingOccurrences(of: "\u{0}", with: "\\0") }
        try log.append(actor: r.actor, remoteAddress: clean(r.remoteAddress), action: r.action, slot: clean(r.slot),
            modelPath: clean(r.modelPath), version: clean(r.version), sha256: clean(r.sha256),
            signatureKeyID: r.signatureKeyID, result: r.result, reason: clean(r.reason),
            durationMs: r.durationMs.isFinite ? r.durationMs : nil, time: r.time)
    }

    func entries(slot: String?, since: Date?, limit: Int) throws -> [AuditEntryView] {
        try log.entries(slot: slot, since: since, limit: limit).map { e in
            AuditEntryView(id: e.id ?? 0, time: e.time, actor: e.actor, remoteAddress: e.remoteAddress,
                action: e.action, slot: e.slot, modelPath: e.modelPath, version: e.version, sha256: e.sha256,
                signatureKeyID: e.signatureKeyID, result: e.result, reason: e.reason, durationMs: e.durationMs,
                previousHash: e.previousHash, hash: e.hash)
        }
    }
}
