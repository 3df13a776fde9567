/// An error from ONNX Runtime or from loading it, with what was being done and ORT's own message.
public struct ORTError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, by kind.
    public enum Kind: Sendable, Equatable {
        /// No ONNX Runtime library could be loaded; `tried` lists every path attempted with its dlopen error.
        case libraryNotFound(tried: [String])
        /// The library loaded but does not offer the C API version this binary was built against.
        case apiVersionUnsupported(required: Int, libraryVersion: String)
        /// An ORT call returned a status: ORT's error code (`OrtErrorCode`) and message.
        case runtime(code: Int)
        /// An execution provider was requested that this ORT build does not include.
        case providerUnavailable(requested: String, available: [String])
        /// A tensor's element type or shape does not fit the call.
        case invalidTensor
        /// An environment variable would change how ONNX Runtime treats models (refused before it is loaded).
        case unsafeEnvironment(variable: String)
    }

    public var kind: Kind
    /// What the binding was doing ("creating session from 12.3 MB", "running session", ...).
    public var operation: String
    /// ORT's message, or a description of the problem.
    public var message: String

    public init(_ kind: Kind, operation: String, message: String) {
        self.kind = kind
        self.operation = operation
        self.message = message
    }

    public var description: String {
        switch kind {
        case .libraryNotFound(let tried):
            return "ONNX Runtime library not found (\(operation)); tried:\n"
                + tried.map { "  - \($0)" }.joined(separator: "\n")
                + "\nRun scripts/setup, or pass --ort-library / set ORT_DYLIB_PATH."
        case .apiVersionUnsupported(let required, let version):
            return "ONNX Runtime \(version) is not supported (\(operation)): a library of 1.\(required) or newer is "
                + "needed" + (message.isEmpty ? "" : " — \(message)")
        case .runtime(let code):
            return "ONNX Runtime error \(code) while \(operation): \(message)"
        case .providerUnavailable(let requested, let available):
            return "execution provider '\(requested)' is not available in this ONNX Runtime build "
                + "(available: \(available.joined(separator: ", "))) while \(operation)"
                + (message.isEmpty ? "" : ": \(message)")
        case .invalidTensor:
            return "invalid tensor while \(operation): \(message)"
        case .unsafeEnvironment(let variable):
            return "\(variable) is set (\(operation)): \(message)"
        }
    }
}
