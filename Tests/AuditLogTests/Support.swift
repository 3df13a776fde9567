import Foundation
import TestSupport

extension TemporaryDirectory {
    /// Where the tests keep the audit database, inside the directory.
    var database: String { file("audit.sqlite") }
}

/// Tampers with the database from outside, as an attacker with file access would: Python's sqlite3 module, a
/// separate SQLite connection in a separate process.
enum ExternalSQLite {
    /// The documented canonical encoding and hash, written independently of the Swift implementation.
    private static let script = #"""
        import hashlib, sqlite3, struct, sys
        db = sqlite3.connect(sys.argv[1])
        db.row_factory = sqlite3.Row

        def entry_hash(r):
            def line(name, value):
                if value is None:
                    return f"{name}=-\n"
                return f"{name}={len(value.encode('utf-8'))}:{value}\n"
            d = r["duration_ms"]
            text = "yoloswap-audit-v1\n"
            text += line("id", str(r["id"])) + line("time_us", str(r["time_us"]))
            for name in ["actor", "remote_address", "action", "slot", "model_path", "version", "sha256",
                         "signature_key_id", "result", "reason"]:
                text += line(name, r[name])
            text += line("duration_ms", None if d is None else struct.pack(">d", float(d)).hex())
            text += line("previous_hash", r["previous_hash"])
            return hashlib.sha256(text.encode("utf-8")).hexdigest()

        command = sys.argv[2]
        if command == "execute":
            db.executescript(sys.argv[3])
        elif command == "rehash":
            row = db.execute("SELECT * FROM audit_entry WHERE id = ?", (int(sys.argv[3]),)).fetchone()
            db.execute("UPDATE audit_entry SET hash = ? WHERE id = ?", (entry_hash(row), row["id"]))
        elif command == "check":
            for row in db.execute("SELECT * FROM audit_entry ORDER BY id"):
                print(row["id"], "ok" if entry_hash(row) == row["hash"] else "bad")
        db.commit()
        """#

    /// Runs the script; returns its standard output.
    @discardableResult
    static func run(_ database: String, _ arguments: String...) throws -> String {
        let result = try runProcess("/usr/bin/python3", ["-c", script, database] + arguments)
        guard result.status == 0 else { throw ScriptFailed(message: result.stderr) }
        return result.stdout
    }

    static func execute(_ database: String, _ sql: String) throws { try run(database, "execute", sql) }

    struct ScriptFailed: Error { let message: String }
}
