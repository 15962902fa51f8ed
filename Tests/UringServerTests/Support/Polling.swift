// Waiting for the server to get somewhere: poll a condition, or /stats, until it holds or time
// runs out.

import Foundation

/// Polls `f` until it returns true (every 20 ms) or time runs out.
func pollUntil(_ timeout: Double, _ f: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try f() { return true }
        if Date() > deadline { return false }
        Thread.sleep(forTimeInterval: 0.02)
    }
}

/// Polls /stats (every 100 ms) until `ok` holds; returns the last stats read and whether `ok`
/// held. A failed request (e.g. refused by a connection limit) just counts as "not yet".
func statsEventually(_ port: Int, timeout: Double = 3, _ ok: (JSONObject) -> Bool) -> (stats: JSONObject, ok: Bool) {
    let deadline = Date().addingTimeInterval(timeout)
    var last: JSONObject = [:]
    while true {
        if let r = try? httpGet(port, "/stats"), r.statusLine.hasPrefix("HTTP/1.1 200"),
           let s = try? J.parse(Array(r.body.utf8)) {
            last = s
            if ok(s) { return (s, true) }
        }
        if Date() > deadline { return (last, false) }
        Thread.sleep(forTimeInterval: 0.1)
    }
}
