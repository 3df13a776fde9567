import AuditLog
import Foundation
import HotSwap
import Logging
import ModelSigning
import Server

/// Builds the audit trail and the signature verifier the configuration asks for.
enum ServiceWiring {
    struct Services {
        var audit: AuditTrail
        var verifier: (any ModelVerifier)?
    }

    static func make(configuration: ServerConfiguration, logger: Logger) throws -> Services {
        let audit = AuditTrail(log: try AuditLog(directory: configuration.stateDirectory))
        var verifier: (any ModelVerifier)?
        if !configuration.trustedKeys.isEmpty || configuration.requireSignature {
            verifier = try SignatureVerifier(trustedKeyFiles: configuration.trustedKeys,
                requireSignature: configuration.requireSignature)
        }
        return Services(audit: audit, verifier: verifier)
    }
}

/// Ed25519 signatures in the load pipeline's verifying stage: `SignatureVerifier.verify(path:sha256:version:)` is
/// already the shape of HotSwap's `ModelVerifier`. The conformance lives here, where the service is wired, so that
/// neither module depends on the other.
extension SignatureVerifier: ModelVerifier {}
