// The performance monitor: a breached threshold raises `overloaded` and sheds the non-critical
// flags (presence, and a plugin gated by its own non-critical flag); after the figures stay
// under every threshold for monitor_hold_ms, everything comes back.

import Foundation
import Testing
import UringServer

/// The example `WhoAmIPlugin` has no feature flag of its own (`featureFlag` is nil) and is a
/// final class, so it is gated here by delegation: same messages, same replies, plus
/// `featureFlag = "enable_whoami"` (declared non-critical in the config's `flags`).
final class OpsGatedWhoAmI: MessageProcessor {
    let inner: WhoAmIPlugin
    init(_ env: PluginEnvironment) { inner = WhoAmIPlugin(env) }
    var featureFlag: String? { "enable_whoami" }
    func canHandle(_ type: String) -> Bool { inner.canHandle(type) }
    func process(_ m: IncomingMessage, _ reactor: Reactor) throws(ProtocolError) { try inner.process(m, reactor) }
}

@Suite("Ops: performance monitor")
struct OpsMonitorTests {

    @Test("error rate over max_error_rate → overloaded, presence and whoami shed; recovered after the hold",
          arguments: allIOModes)
    func errorRateSheds(mode: IOModeSetting) throws {
        try withOpsServer(mode, configure: { c in
            c.maxErrorRate = 0.1
            c.monitorHoldMs = 500
            c.rateLimitPerSec = 0          // the recovery sends 20000 pings as fast as it can
            opsSet(&c, "flags", "enable_chat_rooms:critical,enable_presence,enable_compression,enable_whoami")
        }, register: [{ OpsGatedWhoAmI($0) }]) { server in
            let port = server.port
            let st0 = try opsStats(port)
            #expect(st0["overloaded"] as? Bool == false)
            #expect(opsFlag(st0, "enable_whoami")?["critical"] as? Bool == false, "\(st0["flags"] ?? "")")

            let obs = try TestClient(port: port)
            try obs.hello("mon-obs")
            try obs.join("mon")
            try obs.send(["type": "whoami"])
            let who = try obs.read()
            #expect(who.type == "whoami" && who["user"] as? String == "mon-obs", "\(who)")
            let p1 = try TestClient(port: port)
            try p1.hello("mon-p1")
            try p1.join("mon")
            #expect(try obs.read(until: "user_joined", timeout: 2)["user"] as? String == "mon-p1")

            // 50 malformed lines: 50 errors out of ~55 messages.
            let bad = try TestClient(port: port)
            try bad.send(String(repeating: "{bad json}\n", count: 50))
            for _ in 0..<50 { try expectError(bad, "bad_json") }

            let (over, isOver) = opsStatsEventually(port, timeout: 3) { s in
                s["overloaded"] as? Bool == true && opsFlag(s, "enable_presence")?["shed"] as? Bool == true
            }
            #expect(isOver, "within 3 s: overloaded and enable_presence shed; got \(over)")
            let breaches = (over["breaches"] as? [String]) ?? []
            #expect(breaches.contains { $0.hasPrefix("error_rate") }, "breaches: \(breaches)")
            #expect(opsFlag(over, "enable_whoami")?["shed"] as? Bool == true, "\(over["flags"] ?? "")")
            #expect(opsFlag(over, "enable_compression")?["shed"] as? Bool == true)
            #expect(opsFlag(over, "enable_chat_rooms")?["shed"] as? Bool == false, "critical flags are never shed")
            #expect(opsFlag(over, "enable_presence")?["enabled"] as? Bool == true, "shedding is not the operator's switch")
            #expect((opsNum(over["error_rate"]) ?? 0) > 0.1, "\(over["error_rate"] ?? "")")
            let metrics = opsParseMetrics(try opsGet(port, "/metrics").body)
            #expect(metrics["tcpserver_overloaded"] == 1)

            // Shed: presence stops, whoami is refused, rooms (critical) still work.
            let p2 = try TestClient(port: port)
            try p2.hello("mon-p2")
            try p2.join("mon")
            let seen = try opsDrainWithPings(obs)
            #expect(!opsPresence(seen, user: "mon-p2"), "presence is shed: \(seen)")
            try obs.send(["type": "whoami"])
            try expectError(obs, "feature_disabled", "whoami while shed")
            try p2.send(["type": "send_chat", "room": "mon", "text": "still here"])
            #expect(try obs.read(until: "chat")["text"] as? String == "still here")

            // 20000 good messages bring the one-minute error rate to ~0.0025.
            let good = try TestClient(port: port)
            try good.hello("mon-good")
            let batch = String(repeating: "{\"type\":\"ping\"}\n", count: 1000)
            for _ in 0..<20 {
                try good.send(batch)
                for _ in 0..<1000 { _ = try good.read(until: "pong") }
            }
            // Hysteresis: the first clear evaluation leaves the flags shed; only one at least
            // monitor_hold_ms later restores them (evaluations are a second apart).
            var heldClear = false
            let (clear, isClear) = opsStatsEventually(port, timeout: 6) { s in
                if s["overloaded"] as? Bool == true && (s["breaches"] as? [String])?.isEmpty == true {
                    heldClear = true
                    #expect(opsFlag(s, "enable_presence")?["shed"] as? Bool == true, "still shed during the hold")
                }
                return s["overloaded"] as? Bool == false && opsFlag(s, "enable_presence")?["shed"] as? Bool == false
            }
            #expect(heldClear, "never saw the hold (breaches cleared, still overloaded)")
            #expect(isClear, "within 6 s of the error rate falling: overloaded=false, presence back; got \(clear)")
            #expect((opsNum(clear["error_rate"]) ?? 1) < 0.1, "\(clear["error_rate"] ?? "")")
            #expect(opsFlag(clear, "enable_whoami")?["shed"] as? Bool == false)
            #expect((clear["breaches"] as? [String])?.isEmpty == true, "\(clear["breaches"] ?? "")")

            let p3 = try TestClient(port: port)
            try p3.hello("mon-p3")
            try p3.join("mon")
            let uj = try obs.read(until: "user_joined", timeout: 2)
            #expect(uj["user"] as? String == "mon-p3", "presence is back: \(uj)")
            try obs.send(["type": "whoami"])
            let who2 = try obs.read(until: "whoami")
            #expect(who2["user"] as? String == "mon-obs" && (who2["rooms"] as? [String]) == ["mon"], "\(who2)")
        }
    }

    @Test("max_memory_mb=1 → overloaded with a memory breach", arguments: allIOModes)
    func memoryBreach(mode: IOModeSetting) throws {
        try withOpsServer(mode, configure: { $0.maxMemoryMB = 1 }) { server in
            let (s, ok) = opsStatsEventually(server.port, timeout: 3) { $0["overloaded"] as? Bool == true }
            #expect(ok, "RSS is over 1 MB: \(s)")
            let breaches = (s["breaches"] as? [String]) ?? []
            #expect(breaches.contains { $0.hasPrefix("memory_mb") && $0.contains("> 1.0") }, "breaches: \(breaches)")
            #expect(opsFlag(s, "enable_presence")?["shed"] as? Bool == true)
            #expect(opsFlag(s, "enable_chat_rooms")?["shed"] as? Bool == false)
            #expect(opsNum((s["thresholds"] as? JSONObject)?["max_memory_mb"]) == 1)
        }
    }
}
