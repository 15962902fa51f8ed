// The monitor's `backlogged` figure: a connection whose send has waited over 50 ms for its
// socket. Readers that keep up are never backlogged, however busy; a member that stops reading
// is, once its socket fills. (A stamp a millisecond in the future once wrapped the elapsed time
// and counted every busy reader as backlogged.)

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Ops: backlogged connections")
struct OpsBacklogTests {

    private func backlogged(_ s: JSONObject) -> Int {
        ((s["reactors"] as? [JSONObject]) ?? []).reduce(0) { $0 + (jsonInt($1["backlogged"]) ?? 0) }
    }

    @Test("busy readers are never backlogged; a member that stops reading is", arguments: allIOModes)
    func readersVersusStalled(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.rateLimitPerSec = 0
        }) { server in
            let port = server.port
            let members = try TestClient.members(20, port: port, user: "bl", room: "bl")
            let stop = Locked(false)
            let drained = Locked(0)
            let fds = members.map(\.fd)
            let drainer = HelperThread { drainSockets(fds, stop: stop, bytes: drained) }
            defer {
                stop.withLock { $0 = true }
                #expect(drainer.join(timeout: 30), "drain thread did not stop")
            }
            let pub = try TestClient(port: port, timeout: 30)
            try pub.hello("bl-pub")
            try pub.join("bl")
            // ~1,000 messages/s for 3 s, in bursts of 10: every member's sends are busy, none
            // waits for its socket (each takes ~100 KB/s).
            let line = "{\"type\":\"send_chat\",\"room\":\"bl\",\"text\":\"\(String(repeating: "r", count: 64))\"}\n"
            let burst = String(repeating: line, count: 10)
            var worst = 0
            let end = Date().addingTimeInterval(3)
            var nextStats = Date().addingTimeInterval(1.05)
            while Date() < end {
                try pub.send(burst)
                Thread.sleep(forTimeInterval: 0.01)
                if Date() >= nextStats {
                    worst = max(worst, backlogged(try fetchStats(port)))
                    nextStats = nextStats.addingTimeInterval(1)
                }
            }
            #expect(drained.value > 0, "the members read")
            #expect(worst == 0, "readers that keep up counted as backlogged: \(worst)")

            // One more member with a small receive window that never reads: 4.8 MB (past what
            // the kernel's socket buffers take, under outbound_soft_bytes) and its send waits.
            let stalled = try TestClient(port: port, receiveBuffer: 4096)
            try stalled.hello("bl-stalled")
            try stalled.join("bl")
            let big = "{\"type\":\"send_chat\",\"room\":\"bl\",\"text\":\"\(String(repeating: "s", count: 16_000))\"}\n"
            for _ in 0..<15 { try pub.send(String(repeating: big, count: 20)) }
            let (s, ok) = statsEventually(port, timeout: 5) { backlogged($0) >= 1 }
            #expect(ok, "the stalled member is backlogged: \(s["reactors"] ?? "")")
            _ = stalled
        }
    }
}
