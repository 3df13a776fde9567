import Foundation
import TestSupport
import Testing

/// Signed models and the tamper-evident audit log, through the real binary.
@Suite("Signed models and audit (real binary)", .serialized)
struct SignedModelsAuditTests {
    @Test("unsigned and tampered models are rejected before loading; the audit chain verifies, then breaks on an edit")
    func signaturesAndAudit() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("signed-\(UUID())")
        let repo = dir.appendingPathComponent("models")
        let state = dir.appendingPathComponent("var")
        try FileManager.default.createDirectory(at: repo, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = dir.appendingPathComponent("release.key").path
        let keygen = try await runProcess(Repo.binary, ["keygen", "--out", key])
        try #require(keygen.status == 0, "\(keygen.stderr)")

        let a = Repo.model("synthetic/yolov5-nc80-416-identity.onnx")
        let b = Repo.model("synthetic/yolov5-nc80-320-identity.onnx")
        for (name, source) in [("signed.onnx", a), ("signed-b.onnx", b), ("unsigned.onnx", b), ("tampered.onnx", b)] {
            try FileManager.default.copyItem(atPath: source, toPath: repo.appendingPathComponent(name).path)
        }
        for name in ["signed.onnx", "signed-b.onnx"] {
            let sign = try await runProcess(Repo.binary, ["sign", repo.appendingPathComponent(name).path, "--key", key,
                "--version", "1.0"])
            try #require(sign.status == 0, "\(sign.stderr)")
        }
        // A signature made for other bytes.
        try FileManager.default.copyItem(atPath: repo.appendingPathComponent("signed.onnx.sig").path,
            toPath: repo.appendingPathComponent("tampered.onnx.sig").path)
        let verify = try await runProcess(Repo.binary, ["verify", repo.appendingPathComponent("signed.onnx").path,
            "--pub", key + ".pub"])
        #expect(verify.status == 0 && verify.stdout.contains("OK"))

        let server = try await ServerProcess(yaml: """
            \(ServerProcess.demoTokens)
            model_repository: \(repo.path)
            trusted_keys: [\(key).pub]
            require_signature: true
            slots:
              default: { model: signed.onnx, version: "1.0" }
            hotswap: { warmup_runs: 1 }
            """, stateDirectory: state)
        let (_, slot) = try await server.json("GET", "/v1/slots/default", token: ServerProcess.viewerToken)
        #expect((slot["active"] as? [String: Any])?["signature_key_id"] is String)

        for (model, phrase) in [("unsigned.onnx", "unsigned"), ("tampered.onnx", "modified")] {
            let (status, op) = try await server.json("POST", "/v1/slots/default/load?wait=true",
                token: ServerProcess.operatorToken, body: ["model": model, "activate": true])
            #expect(status == 422, "\(model): \(op)")
            #expect(op["state"] as? String == "failed")
            let reason = (op["reason"] as? String ?? "").lowercased()
            #expect(reason.contains("signature") && reason.contains(phrase), "\(model): \(reason)")
            #expect((op["timings"] as? [String: Any])?["load_ms"] == nil, "\(model) reached the loading stage")
        }
        let (okStatus, ok) = try await server.json("POST", "/v1/slots/default/load?wait=true",
            token: ServerProcess.operatorToken, body: ["model": "signed-b.onnx", "version": "1.0", "activate": true])
        #expect(okStatus == 200, "\(ok)")
        let (rollback, _) = try await server.json("POST", "/v1/slots/default/rollback", token: ServerProcess.operatorToken)
        #expect(rollback == 200)
        let (_, audit) = try await server.json("GET", "/v1/audit?slot=default&limit=50",
            token: ServerProcess.operatorToken)
        let entries = (audit["entries"] as? [[String: Any]]) ?? []
        #expect(entries.count >= 4)
        #expect(entries.contains { $0["action"] as? String == "load" && $0["result"] as? String == "failed"
            && $0["actor"] as? String == "alice" })
        #expect(entries.contains { $0["action"] as? String == "rollback" && $0["result"] as? String == "succeeded" })
        // The head, as a monitoring system would keep it.
        let (headStatus, head) = try await server.json("GET", "/v1/audit/head", token: ServerProcess.viewerToken)
        #expect(headStatus == 200)
        let sequence = try #require(head["sequence"] as? Int)
        let headHash = try #require(head["hash"] as? String)
        #expect(sequence == entries.compactMap { $0["id"] as? Int }.max())
        #expect(server.stop() == 0)

        let intact = try await runProcess(Repo.binary, ["audit", "verify", "--state-dir", state.path,
            "--expect-head", "\(sequence):\(headHash)"])
        #expect(intact.status == 0, "\(intact.stdout)\(intact.stderr)")
        #expect(intact.stdout.contains("OK") && intact.stdout.contains("expected head \(sequence) present"))

        // Cut the last two entries and rewrite the head to match: the chain alone still verifies, the recorded head
        // shows the cut.
        let copy = state.deletingLastPathComponent().appendingPathComponent("cut-\(UUID())")
        try FileManager.default.copyItem(at: state, to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let cut = try await runProcess("/usr/bin/python3", ["-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            last = db.execute("select max(id) from audit_entry").fetchone()[0]
            db.execute("delete from audit_entry where id > ?", (last - 2,))
            new_last, new_hash = db.execute("select id, hash from audit_entry order by id desc limit 1").fetchone()
            db.execute("update audit_head set last_id = ?, hash = ?", (new_last, new_hash))
            db.commit()
            """, copy.appendingPathComponent("audit.sqlite").path])
        try #require(cut.status == 0, "\(cut.stderr)")
        let chainOnly = try await runProcess(Repo.binary, ["audit", "verify", "--state-dir", copy.path])
        #expect(chainOnly.status == 0, "a consistent cut is invisible to the chain alone: \(chainOnly.stdout)")
        let anchored = try await runProcess(Repo.binary, ["audit", "verify", "--state-dir", copy.path,
            "--expect-head", "\(sequence):\(headHash)"])
        #expect(anchored.status == 1)
        #expect(anchored.stdout.contains("before the expected head #\(sequence)"), "\(anchored.stdout)")
        // Edit one row behind the log's back.
        let edit = try await runProcess("/usr/bin/python3", ["-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
            table = next(t for t in tables if 'audit' in t.lower() and 'head' not in t.lower())
            row = db.execute(f"select min(id) from {table} where result = 'failed'").fetchone()[0]
            db.execute(f"update {table} set result = 'succeeded' where id = ?", (row,))
            db.commit()
            print(row)
            """, state.appendingPathComponent("audit.sqlite").path])
        try #require(edit.status == 0, "\(edit.stderr)")
        let broken = try await runProcess(Repo.binary, ["audit", "verify", "--state-dir", state.path])
        #expect(broken.status == 1)
        #expect((broken.stdout + broken.stderr).contains("BROKEN at entry #\(edit.stdout.trimmed)"),
            "\(broken.stdout)\(broken.stderr)")
    }
}
