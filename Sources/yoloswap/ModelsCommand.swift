import ArgumentParser
import Foundation

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `yoloswap models ...`: a client of a running server's control plane.
struct ModelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models", abstract: "Manage a running server's model slots.",
        subcommands: [List.self, Status.self, Load.self, Switch.self, Rollback.self, Routes.self,
            ReleaseCommand.self])

    struct Connection: ParsableArguments {
        @Option(help: "Server URL.") var server = "http://127.0.0.1:8080"
        @Option(help: "Bearer token (default: $YOLOSWAP_TOKEN).") var token: String?
        @Option(help: ArgumentHelp("Seconds to wait for the server's answer.",
            discussion: "apply and release start --wait answer once their loads have ended."))
        var timeout = 600

        func validate() throws {
            guard (1...86_400).contains(timeout) else { throw ValidationError("--timeout lies in 1...86400 seconds") }
        }

        var client: APIClient {
            get throws {
                guard let url = URL(string: server), url.scheme != nil else {
                    throw ValidationError("--server must be a URL such as http://127.0.0.1:8080")
                }
                return APIClient(base: url, token: token ?? ProcessInfo.processInfo.environment["YOLOSWAP_TOKEN"],
                    timeout: Double(timeout))
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the slots and their active models.")
        @OptionGroup var connection: Connection
        func run() async throws {
            let object = try await connection.client.json("GET", "/v1/slots")
            for slot in (object["slots"] as? [[String: Any]]) ?? [] {
                let active = slot["active"] as? [String: Any]
                let standby = slot["standby"] as? [String: Any]
                print("\(slot["name"] ?? "?")  generation \(slot["generation"] ?? "?")  active \(active?["id"] ?? "-")"
                    + (active.map { "  on \($0["provider"] ?? "?")" } ?? "")
                    + "  standby \(standby?["id"] ?? "-")  in-flight \(slot["in_flight"] ?? 0)")
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one slot in full (JSON).")
        @OptionGroup var connection: Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await connection.client.print("GET", "/v1/slots/\(slot.pathEscaped)") }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a model (path in the server's model repository), showing progress until it ends.")
        @OptionGroup var connection: Connection
        @Option(help: "Slot name.") var slot = "default"
        @Option(help: "Version label.") var version: String?
        @Option(help: "Expected SHA-256 of the model file.") var sha256: String?
        @Flag(help: "Switch it in as soon as it is ready.") var activate = false
        @Flag(help: "Accept different classes, task or output format.") var allowSchemaChange = false
        @Option(help: "Execution provider, one the slot permits: cpu, cuda[:id] or tensorrt[:id].")
        var provider: String?
        @Flag(help: "Accept another provider or device than the active model's.") var allowDeviceChange = false
        @Option(help: "Swap policy: availability-preserving, resource-preserving or auto.") var policy: String?
        @Argument(help: "Model path relative to the server's model repository.") var model: String

        func run() async throws {
            let client = try connection.client
            var body: [String: Any] = ["model": model, "activate": activate, "allow_schema_change": allowSchemaChange]
            if let version { body["version"] = version }
            if let sha256 { body["sha256"] = sha256 }
            if let provider { body["provider"] = provider }
            if allowDeviceChange { body["allow_device_change"] = true }
            if let policy { body["policy"] = policy }
            var op = try await client.json("POST", "/v1/slots/\(slot.pathEscaped)/load", body: body)
            guard let id = op["id"] as? String else { throw failure("the server answered without an id") }
            var last = ""
            while true {
                let state = op["state"] as? String ?? "?"
                if state != last {
                    printError(String(format: "%@: %@ (%.2f s)", model, state, op["elapsed_s"] as? Double ?? 0))
                    last = state
                }
                if ["ready", "failed", "cancelled"].contains(state) { break }
                try await Task.sleep(for: .milliseconds(200))
                op = try await client.json("GET", "/v1/operations/\(id)")
            }
            let data = try JSONSerialization.data(withJSONObject: op, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
            if last != "ready" {
                printError("yoloswap: load \(last): \(op["reason"] as? String ?? "")")
                throw ExitCode(1)
            }
        }
    }

    struct Switch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Switch the staged model in.")
        @OptionGroup var connection: Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await connection.client.print("POST", "/v1/slots/\(slot.pathEscaped)/switch") }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Roll back to the standby or the previous model.")
        @OptionGroup var connection: Connection
        @Argument(help: "Slot name.") var slot = "default"
        func run() async throws { try await connection.client.print("POST", "/v1/slots/\(slot.pathEscaped)/rollback") }
    }

    struct Routes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the product → slot routes, or set them with --set product=slot (repeatable).")
        @OptionGroup var connection: Connection
        @Option(help: "A route product=slot; all given routes replace the current ones.") var set: [String] = []
        func run() async throws {
            guard !set.isEmpty else { return try await connection.client.print("GET", "/v1/routes") }
            var routes: [String: String] = [:]
            for entry in set {
                let kv = entry.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2, !kv[0].isEmpty, !kv[1].isEmpty else {
                    throw ValidationError("--set takes product=slot, got '\(entry)'")
                }
                routes[kv[0]] = kv[1]
            }
            try await connection.client.print("PUT", "/v1/routes", body: ["routes": routes])
        }
    }
}

/// A small JSON client for the server's API.
struct APIClient {
    let base: URL
    let token: String?
    /// Seconds a request may wait for its answer (URLSession's default of 60 would cut off a load that takes longer,
    /// which the server finishes anyway).
    var timeout: Double = 600

    func json(_ method: String, _ path: String, body: [String: Any]? = nil) async throws -> [String: Any] {
        try await json(method, path, data: try body.map { try JSONSerialization.data(withJSONObject: $0) },
            contentType: "application/json")
    }

    /// Sends `data` as the body (with `contentType`) and answers the JSON object the server returns.
    func json(_ method: String, _ path: String, data body: Data?, contentType: String) async throws -> [String: Any] {
        let (data, status) = try await send(method, path, body: body, contentType: contentType)
        let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        guard (200..<300).contains(status) || (status == 422 && object["state"] != nil) else {
            let detail = object["detail"] as? String ?? String(decoding: data, as: UTF8.self)
            printError("yoloswap: \(method) \(path): HTTP \(status): \(detail)")
            throw ExitCode(1)
        }
        return object
    }

    func print(_ method: String, _ path: String, body: [String: Any]? = nil) async throws {
        let object = try await json(method, path, body: body)
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
        Swift.print(String(decoding: data, as: UTF8.self))
    }

    private func send(_ method: String, _ path: String, body: Data?, contentType: String) async throws
        -> (Data, Int)
    {
        // A query (`?dry_run=true`) is kept as it is: appendingPathComponent would escape its `?`.
        let parts = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var components = URLComponents(url: base.appendingPathComponent(String(parts[0])),
            resolvingAgainstBaseURL: false)
        if parts.count == 2 { components?.percentEncodedQuery = String(parts[1]) }
        guard let url = components?.url else { throw ValidationError("cannot form a URL for \(path)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = timeout
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = body
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        do {
            let (data, response) = try await URLSession.shared.data(for: request)
            return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
        } catch {
            printError("yoloswap: cannot reach \(base): \(error.localizedDescription)")
            throw ExitCode(1)
        }
    }
}

extension String {
    var pathEscaped: String { addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? self }
}
