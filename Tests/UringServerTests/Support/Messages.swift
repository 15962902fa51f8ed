// Checks and readers over the messages a TestClient receives.

import Foundation
import Testing

/// Reads the next message and checks it is `{"type":"error","code":code,"message":<non-empty>}`.
func expectError(_ c: TestClient, _ code: String, _ context: String = "",
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
    let m = try c.read()
    #expect(m.type == "error", "expected error \(code) \(context), got \(m)", sourceLocation: sourceLocation)
    #expect(m["code"] as? String == code, "expected code \(code) \(context), got \(m)", sourceLocation: sourceLocation)
    #expect(!((m["message"] as? String) ?? "").isEmpty, "error needs a message: \(m)", sourceLocation: sourceLocation)
}

/// Pings twice and returns every message other than the pongs that arrived meanwhile (two
/// round trips: anything the server queued for `c` before the first ping is out by the second).
func drainWithPings(_ c: TestClient) throws -> [JSONObject] {
    var other: [JSONObject] = []
    for _ in 0..<2 {
        try c.send(["type": "ping"])
        _ = try c.read(until: "pong", skipped: &other)
    }
    return other
}

/// Whether `msgs` hold a presence event of `type` about `user`.
func hasPresence(_ msgs: [JSONObject], _ type: String = "user_joined", user: String) -> Bool {
    msgs.contains { $0.type == type && $0["user"] as? String == user }
}

/// Reads until EOF or reset; returns the messages (lines that do not parse are skipped: a cut
/// slow consumer may see a message truncated mid-way). Throws only on timeout.
@discardableResult
func readMessagesToEOF(_ c: TestClient, timeout: Double) throws -> [JSONObject] {
    let deadline = Date().addingTimeInterval(timeout)
    var msgs: [JSONObject] = []
    while true {
        do {
            let line = try c.readLineBytes(timeout: max(0, deadline.timeIntervalSinceNow))
            if let m = try? J.parse(line) { msgs.append(m) }
        } catch ClientError.closed, ClientError.reset {
            return msgs
        } catch ClientError.timeout {
            throw ClientError.timeout("EOF (got \(msgs.count) messages, last: \(msgs.suffix(2)))")
        }
    }
}

/// Milliseconds since the epoch, for sanity-checking `ts` fields.
func nowMillis() -> Double { Date().timeIntervalSince1970 * 1000 }

/// `ts` must be a number of milliseconds close to now.
func isPlausibleTimestamp(_ v: Any?) -> Bool {
    guard let n = v as? NSNumber else { return false }
    return abs(n.doubleValue - nowMillis()) < 10 * 60 * 1000
}

/// Index of the first position where `a` and `b` differ (including a length difference).
func firstMismatch(_ a: [String], _ b: [String]) -> Int? {
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return a.count == b.count ? nil : min(a.count, b.count)
}
