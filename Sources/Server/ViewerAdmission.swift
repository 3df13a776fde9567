import Primitives

/// Counts the long responses held open (the console's event stream, a video stream's results and preview) and refuses
/// one past `server.max_viewers` in all, or past `server.max_viewers_per_token` for one principal. Each holds a
/// connection, a task and a bounded buffer for as long as its viewer likes; without a cap, one viewer token could take
/// every connection the server has (`server.max_connections`) and leave the detection clients in the listen backlog.
///
/// Thread-safety: all members may be used from any thread (one lock).
final class ViewerAdmission: Sendable {
    let total: Int
    let perPrincipal: Int
    private let counts = Locked<(total: Int, byName: [String: Int])>((0, [:]))

    init(total: Int, perPrincipal: Int) {
        self.total = total
        self.perPrincipal = perPrincipal
    }

    /// One admitted viewer: its place is given back when the ticket goes (the response has ended, or was dropped
    /// unsent — its body, which holds the ticket, never ran).
    final class Ticket: Sendable {
        private let admission: ViewerAdmission
        private let name: String

        fileprivate init(_ admission: ViewerAdmission, name: String) {
            self.admission = admission
            self.name = name
        }

        deinit { admission.leave(name) }
    }

    /// Admits a viewer of principal `name`.
    /// - Throws: `Problem` 429 naming the limit that was reached.
    func admit(_ name: String) throws(Problem) -> Ticket {
        let refusal = counts.withLock { c -> String? in
            if c.total >= total { return "\(total) long responses (event streams, results, previews) are open" }
            let mine = c.byName[name, default: 0]
            if mine >= perPrincipal { return "\(perPrincipal) long responses of '\(name)' are open" }
            c.total += 1
            c.byName[name] = mine + 1
            return nil
        }
        if let refusal {
            throw Problem(.tooManyRequests, "Too Many Requests",
                detail: "\(refusal): close one first (server.max_viewers, server.max_viewers_per_token)",
                retryAfter: 5)
        }
        return Ticket(self, name: name)
    }

    /// Viewers open now, in all and of `name`.
    func open(_ name: String? = nil) -> Int {
        counts.withLock { c in name.map { c.byName[$0, default: 0] } ?? c.total }
    }

    private func leave(_ name: String) {
        counts.withLock { c in
            c.total -= 1
            let left = c.byName[name, default: 1] - 1
            c.byName[name] = left > 0 ? left : nil
        }
    }
}
