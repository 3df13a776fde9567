import Foundation
import TestSupport
import Testing

/// The Open Inference Protocol (KServe v2 / Triton) against the real binary: `tritonclient` from PyPI, unchanged
/// (tools/oip_check.py), and hostile v2 requests that must end in a clear 4xx.
@Suite("Open Inference Protocol (real binary, tritonclient)", .serialized)
struct OpenInferenceProtocolTests {
    static let yaml = """
        \(ServerProcess.demoTokens)
        slots:
          default: { model: yolov3-tiny-coco-416.onnx }
        hotswap: { warmup_runs: 1 }
        """

    /// The server with a gRPC endpoint (`grpc` settings added to `yaml`'s), and its gRPC port once it listens.
    func startWithGRPC(_ grpc: String, in scratch: TemporaryDirectory) async throws -> (ServerProcess, Int) {
        let portFile = scratch.url.appendingPathComponent("grpc.port")
        let server = try await ServerProcess(yaml: Self.yaml + "\ngrpc: { \(grpc) }",
            arguments: ["--grpc-port-file", portFile.path])
        func port() -> Int? { (try? String(contentsOf: portFile, encoding: .utf8)).flatMap { Int($0.trimmed) } }
        #expect(await eventually(timeout: .seconds(30)) { port() != nil }, "no gRPC port: \(server.log.suffix(2000))")
        return (server, try #require(port()))
    }

    /// tools/oip_check.py against the server, with `arguments` added; every FAIL line is recorded as an issue.
    func check(_ server: ServerProcess, grpcPort: Int, _ arguments: [String] = []) throws -> ProcessResult {
        let r = try runProcess(Repo.python, [
            Repository.path("tools/oip_check.py"), "--url", "127.0.0.1:\(server.port)",
            "--grpc-url", "127.0.0.1:\(grpcPort)",
            "--model", Repo.model("yolov3-tiny-coco-416.onnx"), "--image", Repo.image("bus.jpg"),
            "--viewer-token", ServerProcess.viewerToken, "--operator-token", ServerProcess.operatorToken,
        ] + arguments)
        for failure in r.stdout.split(separator: "\n") where failure.hasPrefix("FAIL") { Issue.record("\(failure)") }
        #expect(r.status == 0, "\(r.stdout.suffix(3000))\(r.stderr.suffix(3000))\n\(server.log.suffix(2000))")
        return r
    }

    /// A process's peak resident memory (`VmHWM` in `/proc/<pid>/status`), in bytes.
    static func peakResidentBytes(pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kilobytes = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first
                .flatMap({ Int($0) })
        else { return nil }
        return kilobytes * 1024
    }

    @Test("tritonclient.http and .grpc: health, metadata, config, both infer conventions, load/unload, auth, stats")
    func tritonClient() async throws {
        let scratch = try TemporaryDirectory()
        let (server, grpcPort) = try await startWithGRPC("port: 0", in: scratch)
        defer { server.stop() }
        let r = try check(server, grpcPort: grpcPort)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        // Every check ran (a crash of the script would leave some out).
        #expect(lines.filter { $0.hasPrefix("ok http") }.count >= 14, "\(r.stdout)")
        #expect(lines.filter { $0.hasPrefix("ok grpc") }.count >= 11, "\(r.stdout)")
        #expect(lines.filter { $0.hasPrefix("ok grpc hostile") }.count == 3, "\(r.stdout)")
        // The hostile messages were refused before they were decoded: 18 MiB of empty inputs decode into gigabytes.
        let peak = try #require(Self.peakResidentBytes(pid: server.process.processIdentifier))
        #expect(peak < 1 << 30, "the server's peak resident memory was \(peak >> 20) MiB")
        // The load and the refused unload went to the audit log like any other change.
        let (status, audit) = try await server.json("GET", "/v1/audit?limit=100", token: ServerProcess.operatorToken)
        #expect(status == 200)
        let entries = audit["entries"] as? [[String: Any]] ?? []
        let actions = Set(entries.compactMap { "\($0["action"] ?? "") \($0["result"] ?? "")" })
        #expect(actions.contains("unload intent") && actions.contains("unload succeeded"), "\(actions)")
        #expect(entries.contains { ($0["action"] as? String) == "unload default" && ($0["result"] as? String)
            == "refused" }, "\(actions)")
        #expect(actions.contains("load succeeded"), "\(actions)")
        // The viewer's refused gRPC load and unload are recorded under its name, as over HTTP.
        let grpcRefusals = entries.filter {
            ($0["action"] as? String)?.hasPrefix("gRPC ") == true && ($0["result"] as? String) == "refused"
        }
        #expect(Set(grpcRefusals.compactMap { $0["action"] as? String }) == ["gRPC load", "gRPC unload"],
            "\(grpcRefusals)")
        #expect(grpcRefusals.allSatisfy { ($0["actor"] as? String) == "carol" }, "\(grpcRefusals)")
    }

    @Test("gRPC over TLS (grpc.tls_cert / tls_key): a client trusting the certificate is served, plaintext is not")
    func grpcTLS() async throws {
        let scratch = try TemporaryDirectory()
        let cert = scratch.url.appendingPathComponent("cert.pem").path
        let key = scratch.url.appendingPathComponent("key.pem").path
        let openssl = try await runProcess("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", cert,
        ])
        try #require(openssl.status == 0, "\(openssl.stderr)")
        let (server, grpcPort) = try await startWithGRPC("port: 0, tls_cert: \(cert), tls_key: \(key)", in: scratch)
        defer { server.stop() }
        let r = try check(server, grpcPort: grpcPort, ["--tls-root", cert])
        #expect(r.stdout.contains("2 passed, 0 failed"), "\(r.stdout)")
    }

    @Test("hostile v2 bodies: sizes that overflow or do not add up, bad JSON, wrong shapes → 4xx with an error")
    func hostileRequests() async throws {
        let server = try await ServerProcess(yaml: Self.yaml)
        defer { server.stop() }
        let viewer = ServerProcess.viewerToken
        func infer(_ json: String, binary: [UInt8] = [], headerLength: Int? = nil) async throws -> (Int, String) {
            var body = Data(json.utf8)
            body.append(contentsOf: binary)
            var headers: [String: String] = [:]
            if let headerLength { headers["Inference-Header-Content-Length"] = String(headerLength) }
            let (status, data) = try await server.request("POST", "/v2/models/default/infer", token: viewer,
                body: body, contentType: "application/octet-stream", headers: headers)
            let error = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            return (status, error?["error"] as? String ?? "<no error field: \(String(decoding: data, as: UTF8.self))>")
        }
        let huge = "[1, 3, 4611686018427387904, 4611686018427387904]"
        let cases: [(String, [UInt8], Int?, Int, String)] = [
            (#"{"inputs":[{"name":"images","datatype":"FP32","shape":\#(huge),"data":[1]}]}"#, [], nil, 400,
             "too many elements"),
            (#"{"inputs":[{"name":"images","datatype":"FP32","shape":[1,3,416,416],"parameters":{"binary_data_size":9223372036854775807}}]}"#,
             [0, 0, 0, 0], nil, 400, "binary_data_size"),
            (#"{"inputs":[{"name":"images","datatype":"FP32","shape":[-1,3,416,416],"data":[]}]}"#, [], nil, 400,
             "negative"),
            (#"{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":8}}]}"#,
             [255, 255, 255, 127, 1, 2, 3, 4], nil, 400, "past the data's end"),
            (#"{"inputs":[{"name":"images","datatype":"FP32","shape":[1,3,2,2],"data":[1,2,3]}]}"#, [], nil, 400,
             "12 elements"),
            (#"{"inputs":[{"name":"images","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#,
             [0, 0, 0, 0, 9], nil, 400, "do not add up"),
            (#"{"inputs":[{"name":"images","datatype":"COMPLEX","shape":[1],"data":[1]}]}"#, [], nil, 400,
             "unknown datatype"),
            (#"{"inputs":["#, [], nil, 400, "invalid inference request JSON"),
            (#"{"inputs":[]}"#, [], 1_000_000, 400, "Inference-Header-Content-Length"),
            (#"{"inputs":[{"name":"images","datatype":"FP32","shape":[1,3,2,2],"data":[[[[1,2],[3,4]]]]}]}"#, [], nil,
             400, "12 elements"),
            (#"{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":["bm90IGFuIGltYWdl"]}]}"#, [], nil,
             400, "unsupported image format"),
        ]
        for (json, binary, headerLength, expected, fragment) in cases {
            let jsonLength = binary.isEmpty && headerLength == nil ? nil : headerLength ?? json.utf8.count
            let (status, error) = try await infer(json, binary: binary, headerLength: jsonLength)
            #expect(status == expected, "\(json.prefix(120)): \(status) \(error)")
            #expect(error.contains(fragment), "\(json.prefix(120)): \(error)")
        }
        // base64 as `base64` writes it, a line break every 76 characters, is an image.
        let wrapped = try Data(contentsOf: URL(fileURLWithPath: Repo.image("bus.jpg")))
            .base64EncodedString(options: [.lineLength76Characters, .endLineWithLineFeed])
        #expect(wrapped.contains("\n"))
        let (wrappedStatus, wrappedAnswer) = try await infer(#"{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"data":[""#
            + wrapped.replacingOccurrences(of: "\n", with: "\\n") + #""]}]}"#)
        #expect(wrappedStatus == 200, "\(wrappedAnswer)")
        // A finite input whose output is not (3e38 everywhere: every value of yolov3-tiny's output is NaN) cannot be
        // answered in JSON: 500 saying so, counted by the statistics as a failure, not a success.
        func counts() async throws -> (success: Int, fail: Int) {
            let (_, data) = try await server.request("GET", "/v2/models/default/stats", token: viewer)
            let stats = ((try JSONSerialization.jsonObject(with: data)) as? [String: Any])?["model_stats"]
                as? [[String: Any]] ?? []
            func count(_ kind: String) -> Int {
                stats.reduce(0) { total, entry in
                    let figures = (entry["inference_stats"] as? [String: Any])?[kind] as? [String: Any]
                    return total + (figures?["count"] as? Int ?? 0)
                }
            }
            return (count("success"), count("fail"))
        }
        let before = try await counts()
        let size = 3 * 416 * 416 * 4
        let header = #"{"inputs":[{"name":"images","datatype":"FP32","shape":[1,3,416,416],"#
            + #""parameters":{"binary_data_size":\#(size)}}]}"#
        let large = withUnsafeBytes(of: Float(3e38).bitPattern.littleEndian) { Array($0) }
        let (nonFinite, message) = try await infer(header,
            binary: Array([[UInt8]](repeating: large, count: size / 4).joined()), headerLength: header.utf8.count)
        #expect(nonFinite == 500 && message.contains("ask for it as binary data"), "\(nonFinite) \(message)")
        let after = try await counts()
        #expect(after.success == before.success && after.fail == before.fail + 1, "\(before) → \(after)")
        // Unknown model and version: 404, in the protocol's error shape.
        let (status, data) = try await server.request("GET", "/v2/models/default/versions/nope", token: viewer)
        #expect(status == 404)
        #expect(((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["error"] is String)
        let (missing, _) = try await server.request("GET", "/v2/models/nope/ready", token: viewer)
        #expect(missing == 404)
        // Inference on a model no slot serves is counted under slot "unknown", not under the name sent (each name
        // would be a series of its own).
        let (unknown, _) = try await server.request("POST", "/v2/models/made-up-model/infer", token: viewer,
            body: Data(#"{"inputs":[]}"#.utf8), contentType: "application/json")
        #expect(unknown == 404)
        let metrics = String(decoding: try await server.request("GET", "/metrics").1, as: UTF8.self)
        #expect(!metrics.contains("made-up-model") && metrics.contains(#"slot="unknown""#),
            "\(metrics.split(separator: "\n").filter { $0.contains("requests_total") })")
        // The server still serves.
        let (ready, _) = try await server.request("GET", "/v2/health/ready")
        #expect(ready == 200)
    }
}
