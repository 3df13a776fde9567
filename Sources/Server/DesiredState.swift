import Foundation
import Primitives
import Yams

/// A desired-state document: what each slot should serve, and the product → slot routes.
///
/// ```yaml
/// apiVersion: yoloswap/v1
/// kind: DesiredState
/// metadata: {name: line-a, generation: 7}        # optional
/// slots:
///   default:
///     model: yolov3-tiny-coco-416.onnx             # path in the model repository
///     version: "2026.12"                           # optional version label
///     sha256: 8f1c…                                # optional: the file must hash to this
///     require_signature: true                      # optional (false): a trusted key must have signed it
///     allow_schema_change: false                   # optional (false): accept other classes / output format
/// routes: {metal-case: default}                    # optional: replaces the routes when present
/// ```
/// JSON is YAML too: the same document may be sent as JSON. Slots the document does not name are left alone.
///
/// Thread-safety: a value.
public struct DesiredState: Sendable, Equatable, Codable {
    public struct Slot: Sendable, Equatable, Codable {
        public var model: String
        public var version: String?
        public var sha256: String?
        public var require_signature: Bool
        public var allow_schema_change: Bool
    }

    public struct Metadata: Sendable, Equatable, Codable {
        public var name: String?
        /// Set by whoever publishes the document (all replicas then report the same number); when absent the server
        /// counts the distinct documents it has accepted.
        public var generation: Int?
    }

    public var apiVersion = "yoloswap/v1"
    public var kind = "DesiredState"
    public var metadata: Metadata?
    public var slots: [String: Slot]
    public var routes: [String: String]?
}

/// Why a desired-state document was refused: the field (a dotted path such as `slots.default.sha256`) and the reason.
public struct DesiredStateError: Error, Equatable, CustomStringConvertible {
    public var field: String
    public var reason: String
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }
    /// Cut to 256 bytes of field and 1024 of reason: it goes into the audit log, the log and the status, and a field
    /// is named by the document's own keys (a 250 KB slot name made each refusal a 500 KB entry). Control characters
    /// are escaped: a key holding a newline wrote a line of its own into a plain-text log.
    public var description: String {
        let reason = reason.prefix(utf8Bytes: 1024).escapingControlCharacters
        return field.isEmpty ? reason : "\(field.prefix(utf8Bytes: 256).escapingControlCharacters): \(reason)"
    }
}

// MARK: - Parsing

extension DesiredState {
    /// Bounds on a document, which comes from outside (an HTTP body, a mounted file): each keeps parsing cheap.
    public enum Limits {
        public static let bytes = 256 << 10
        public static let slots = 64
        public static let routes = 4096
        public static let nameLength = 128
        public static let productLength = 256
        public static let pathLength = 1024
        public static let versionLength = 128
        /// Upper bound on nesting, counted before parsing (the YAML composer recurses once per level).
        public static let nesting = 256
    }

    /// Whether `name` can name a slot (or a document): 1 to `Limits.nameLength` of A-Z a-z 0-9 . _ - (it goes into
    /// URL paths, metric labels and MQTT topics).
    public static func isName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= Limits.nameLength
            && name.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0)
                || "._-".unicodeScalars.contains($0)) }
    }

    /// Why `product` cannot be a route's product name (empty, longer than `Limits.productLength` bytes, or holding a
    /// control character), or nil when it can: the same rule for a document, `PUT /v1/routes` and the configuration.
    public static func productProblem(_ product: String) -> String? {
        guard !product.isEmpty, product.utf8.count <= Limits.productLength,
              !product.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) })
        else { return "is not a product name: 1 to \(Limits.productLength) bytes without control characters" }
        return nil
    }

    /// Parses and validates a document (YAML or JSON). Nothing is checked against a server here: see
    /// `DesiredStateReconciler` for slots, paths and routes.
    /// - Throws: `DesiredStateError` naming the first bad field; unknown keys are refused.
    public static func parse(_ bytes: [UInt8]) throws(DesiredStateError) -> DesiredState {
        guard bytes.count <= Limits.bytes else {
            throw DesiredStateError(field: "", reason: "the document has \(bytes.count) bytes; at most "
                + "\(Limits.bytes) are accepted")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DesiredStateError(field: "", reason: "the document is not UTF-8 text")
        }
        guard nestingBound(text) <= Limits.nesting else {
            throw DesiredStateError(field: "", reason: "the document is nested too deeply")
        }
        let root: Node
        do {
            // Checked before anything is read from it: numbers that would trap Yams, a tree too large to walk.
            guard let node = try YAMLInput.compose(text) else {
                throw DesiredStateError(field: "", reason: "the document is empty")
            }
            try YAMLInput.check(node)
            root = node
        } catch let error as DesiredStateError {
            throw error
        } catch let refusal as YAMLInput.Refusal {
            throw DesiredStateError(field: refusal.path, reason: refusal.reason)
        } catch {
            throw DesiredStateError(field: "", reason: "not valid YAML or JSON: \(error)")
        }
        do { return try DocumentReader().document(root) } catch let error as DesiredStateError { throw error } catch {
            throw DesiredStateError(field: "", reason: "\(error)")
        }
    }

    /// An upper bound on the document's nesting depth: the longest run of indentation and block markers opening a
    /// line, plus every flow bracket (in strings too: the bound only has to be high, never low). A line starts after
    /// every break the YAML parser knows (LF, CR, and NEL, LS, PS, whose UTF-8 ends in 0x85, 0xA8, 0xA9): counted
    /// after LF only, a document broken by CRs alone nested as deep as it liked. (After any other character ending
    /// in those bytes too: more line starts only raise the bound.)
    static func nestingBound(_ text: String) -> Int {
        var brackets = 0
        var prefix = 0
        var longestPrefix = 0
        var atLineStart = true
        for byte in text.utf8 {
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") || byte == 0x85 || byte == 0xA8
                || byte == 0xA9
            {
                atLineStart = true
                prefix = 0
                continue
            }
            if atLineStart {
                if [UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "-"), UInt8(ascii: "?"), UInt8(ascii: ":")]
                    .contains(byte)
                {
                    prefix += 1
                    longestPrefix = max(longestPrefix, prefix)
                } else {
                    atLineStart = false
                }
            }
            if byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{") { brackets += 1 }
        }
        return longestPrefix + brackets
    }
}

/// Walks the composed YAML tree, visiting only the fields the format has: however the document uses anchors and
/// aliases, the walk is bounded by `DesiredState.Limits`.
private struct DocumentReader {
    typealias Failure = DesiredStateError

    func document(_ root: Node) throws -> DesiredState {
        let fields = try mapping(root, "", allowed: ["apiVersion", "kind", "metadata", "slots", "routes"])
        guard let apiVersion = fields["apiVersion"] else { throw Failure(field: "apiVersion", reason: "is required") }
        guard try string(apiVersion, "apiVersion") == "yoloswap/v1" else {
            throw Failure(field: "apiVersion", reason: "must be yoloswap/v1")
        }
        guard let kind = fields["kind"] else { throw Failure(field: "kind", reason: "is required") }
        guard try string(kind, "kind") == "DesiredState" else {
            throw Failure(field: "kind", reason: "must be DesiredState")
        }
        guard let slotsNode = fields["slots"] else { throw Failure(field: "slots", reason: "is required") }
        let slotNodes = try mapping(slotsNode, "slots", allowed: nil, limit: DesiredState.Limits.slots)
        var slots: [String: DesiredState.Slot] = [:]
        for (name, node) in slotNodes {
            try checkName(name, "slots.\(name)", what: "a slot name")
            slots[name] = try slot(node, "slots.\(name)")
        }
        var routes: [String: String]?
        if let routesNode = fields["routes"], !isNull(routesNode) {
            var table: [String: String] = [:]
            for (product, node) in try mapping(routesNode, "routes", allowed: nil, limit: DesiredState.Limits.routes) {
                let field = "routes.\(product)"
                try checkText(product, field, limit: DesiredState.Limits.productLength, what: "a product name")
                let target = try string(node, field)
                try checkName(target, field, what: "a slot name")
                table[product] = target
            }
            routes = table
        }
        var metadata: DesiredState.Metadata?
        if let node = fields["metadata"], !isNull(node) {
            let meta = try mapping(node, "metadata", allowed: ["name", "generation"])
            var value = DesiredState.Metadata()
            if let name = meta["name"] {
                value.name = try string(name, "metadata.name")
                try checkText(value.name ?? "", "metadata.name", limit: DesiredState.Limits.nameLength, what: "a name")
            }
            if let generation = meta["generation"] {
                guard case .scalar = generation, let number = generation.int, number >= 1, number < 1 << 53 else {
                    throw Failure(field: "metadata.generation", reason: "must be a positive integer")
                }
                value.generation = number
            }
            metadata = value
        }
        return DesiredState(metadata: metadata, slots: slots, routes: routes)
    }

    private func slot(_ node: Node, _ field: String) throws -> DesiredState.Slot {
        let fields = try mapping(node, field,
            allowed: ["model", "version", "sha256", "require_signature", "allow_schema_change"])
        guard let modelNode = fields["model"] else { throw Failure(field: "\(field).model", reason: "is required") }
        let model = try string(modelNode, "\(field).model")
        try checkText(model, "\(field).model", limit: DesiredState.Limits.pathLength, what: "a model path")
        guard !model.hasPrefix("/") else {
            throw Failure(field: "\(field).model", reason: "'\(model)' must be relative to the model repository")
        }
        guard !model.hasParentPart else {
            throw Failure(field: "\(field).model", reason: "'\(model)' may not contain '..'")
        }
        var version: String?
        if let node = fields["version"] {
            version = try string(node, "\(field).version")
            try checkText(version ?? "", "\(field).version", limit: DesiredState.Limits.versionLength,
                what: "a version")
        }
        var sha256: String?
        if let node = fields["sha256"] {
            let digest = try string(node, "\(field).sha256")
            guard digest.isASCIIHex(count: 64) else {
                throw Failure(field: "\(field).sha256", reason: "must be 64 hex digits (the SHA-256 of the model file)")
            }
            sha256 = digest.lowercased()
        }
        return DesiredState.Slot(model: model, version: version, sha256: sha256,
            require_signature: try fields["require_signature"].map { try bool($0, "\(field).require_signature") }
                ?? false,
            allow_schema_change: try fields["allow_schema_change"].map { try bool($0, "\(field).allow_schema_change") }
                ?? false)
    }

    // MARK: Scalars and mappings

    /// A mapping's entries by key (scalar keys only, no duplicates, only `allowed` keys when given, at most `limit`).
    private func mapping(_ node: Node, _ field: String, allowed: Set<String>?, limit: Int = 16) throws
        -> [String: Node]
    {
        guard case .mapping(let entries) = node else {
            throw Failure(field: field, reason: "must be a mapping")
        }
        guard entries.count <= limit else {
            throw Failure(field: field, reason: "has \(entries.count) entries; at most \(limit) are accepted")
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in entries {
            guard case .scalar(let key) = keyNode else { throw Failure(field: field, reason: "keys must be strings") }
            let path = field.isEmpty ? key.string : "\(field).\(key.string)"
            if let allowed, !allowed.contains(key.string) {
                throw Failure(field: path, reason: "unknown key (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            guard result[key.string] == nil else { throw Failure(field: path, reason: "appears twice") }
            result[key.string] = value
        }
        return result
    }

    /// An explicit YAML null (`~`, `null`, or nothing), which counts as an absent optional section.
    private func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }

    private func string(_ node: Node, _ field: String) throws -> String {
        guard case .scalar(let scalar) = node else { throw Failure(field: field, reason: "must be a string") }
        return scalar.string
    }

    private func bool(_ node: Node, _ field: String) throws -> Bool {
        guard case .scalar = node, let value = node.bool else {
            throw Failure(field: field, reason: "must be true or false")
        }
        return value
    }

    /// Slot names: what the rest of the API accepts in a URL path segment.
    private func checkName(_ name: String, _ field: String, what: String) throws {
        guard DesiredState.isName(name) else {
            throw Failure(field: field, reason: "'\(name.prefix(64))' is not \(what): 1 to "
                + "\(DesiredState.Limits.nameLength) of A-Z a-z 0-9 . _ -")
        }
    }

    /// Free text: not empty, bounded, no control characters.
    private func checkText(_ text: String, _ field: String, limit: Int, what: String) throws {
        guard !text.isEmpty, text.utf8.count <= limit,
              !text.unicodeScalars.contains(where: { CharacterSet.controlCharacters.contains($0) })
        else {
            throw Failure(field: field, reason: "is not \(what): 1 to \(limit) bytes without control characters")
        }
    }
}
