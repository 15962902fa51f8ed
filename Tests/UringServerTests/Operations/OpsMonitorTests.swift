// The performance monitor: a breached threshold raises `overloaded` and sheds the non-critical
// flags (presence, and a plugin gated by its own non-critical flag); after the figures stay
// under every threshold for monitor_hold_ms, everything comes back. Only the server's own
// trouble counts: client errors (bad_json, …) are reported as client_error_rate and never shed;
// real load (p99 latency) does.

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

/// The example `WhoAmIPlugin` has no feature flag of its own (`featureFlag` is nil) and is a
/// final class, so it is gated here by delegation: same messages, same replies, plus
/// `featureFlag = "enable_whoami"` (declared non-critical in the config's `flags`).
final class GatedWhoAmI: MessageProcessor {
    let inner: WhoAmIPlugin
    init(_ env: PluginEnvironment) { inner = WhoAmIPlugin(env) }
    var featureFlag: String? { "enable_whoami" }
    func canHandle(_ type: String) -> Bool { inner.canHandle(type) }
    func process(_ m: IncomingMessage, _ context: PluginContext) throws(ProtocolError) { try inner.process(m, context) }
}

@Suite("Ops: performance monitor")
struct OpsMonitorTests {

    @Test("client errors never shed: 100 bad_json lines leave error_rate at 0, client_error_rate reports them",
          arguments: allIOModes)
    func clientErrorsNeverShed(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.maxErrorRate = 0.01          // the default; the other thresholds stay quiet
            c.monitorBreachSeconds = 1     // a breach would shed at the next evaluation
            setConfig(&c, "flags", "enable_chat_rooms:critical,enable_presence,enable_compression,enable_whoami")
        }, register: [{ GatedWhoAmI($0) }]) { server in
            let port = server.port
            let obs = try TestClient(port: port)
            try obs.hello("ce-obs")
            try obs.join("ce")

            // One misbehaving client: 100 malformed lines, 100 errors out of ~103 messages.
            let bad = try TestClient(port: port)
            try bad.send(String(repeating: "{bad json}\n", count: 100))
            for _ in 0..<100 { try expectError(bad, "bad_json") }

            // The per-reactor figures roll once a second.
            let (first, counted) = statsEventually(port, timeout: 5) { (jsonDouble($0["client_error_rate"]) ?? 0) > 0.01 }
            #expect(counted, "client_error_rate shows the bad lines within 5 s: \(first)")
            // For 3 s (three evaluations and more): reported, never shed.
            let until = Date().addingTimeInterval(3.2)
            var polls = 0
            while Date() < until {
                let s = try fetchStats(port)
                polls += 1
                #expect(s["overloaded"] as? Bool == false, "client errors must not overload: \(s["breaches"] ?? "")")
                #expect((s["breaches"] as? [String])?.isEmpty == true, "\(s["breaches"] ?? "")")
                let shed = ((s["flags"] as? [JSONObject]) ?? []).filter { $0["shed"] as? Bool != false }
                #expect(shed.isEmpty, "nothing shed: \(shed)")
                #expect((jsonDouble(s["client_error_rate"]) ?? 0) > 0.01, "client_error_rate: \(s["client_error_rate"] ?? "nil")")
                #expect(jsonDouble(s["error_rate"]) == 0, "error_rate counts server failures only: \(s["error_rate"] ?? "nil")")
                #expect(statsTotal(s, "client_errors") >= 100, "\(s["totals"] ?? "")")
                #expect(statsTotal(s, "server_failures") == 0, "\(s["totals"] ?? "")")
                Thread.sleep(forTimeInterval: 0.25)
            }
            #expect(polls >= 6)
            let metrics = parseMetrics(try httpGet(port, "/metrics").body)
            #expect((metrics["tcpserver_errors_sent_total"] ?? 0) >= 100, "\(metrics.filter { $0.key.contains("error") })")
            #expect(metrics["tcpserver_server_failures_total"] == 0, "\(metrics.filter { $0.key.contains("fail") })")
            #expect(metrics["tcpserver_overloaded"] == 0)

            // Presence and the gated plugin still work.
            let p = try TestClient(port: port)
            try p.hello("ce-new")
            try p.join("ce")
            #expect(try obs.read(until: "user_joined", timeout: 3)["user"] as? String == "ce-new")
            try obs.send(["type": "whoami"])
            #expect(try obs.read(until: "whoami")["user"] as? String == "ce-obs")
        }
    }

    @Test("real overload (p99 latency under load) → overloaded, presence and whoami shed; recovered after the hold",
          arguments: allIOModes)
    func realOverloadSheds(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.maxLatencyMs = loadLatencyMs
            c.monitorHoldMs = 500          // monitor_breach_s stays 3: the load must last
            c.rateLimitPerSec = 0          // the publisher sends as fast as it can
            setConfig(&c, "flags", "enable_chat_rooms:critical,enable_presence,enable_compression,enable_whoami")
        }, register: [{ GatedWhoAmI($0) }]) { server in
            let port = server.port
            #expect(statsFlag(try fetchStats(port), "enable_whoami")?["critical"] as? Bool == false)

            // The load: a room of 50 members, drained by one thread reading as fast as it can.
            let members = try TestClient.members(50, port: port, user: "load-m", room: "load")
            let stop = Locked(false)
            let drained = Locked(0)
            let fds = members.map(\.fd)
            let drainer = HelperThread { drainSockets(fds, stop: stop, bytes: drained) }
            defer {
                stop.withLock { $0 = true }
                #expect(drainer.join(timeout: 30), "drain thread did not stop")
            }

            // Calm first: the set-up (50 joins, each announced) may itself have breached; the
            // monitor judges the last second once a second, so give it two.
            Thread.sleep(forTimeInterval: 2.2)
            let (calm, isCalm) = statsEventually(port, timeout: 15) { s in
                s["overloaded"] as? Bool == false && (s["breaches"] as? [String])?.isEmpty == true
            }
            try #require(isCalm, "an idle server is not overloaded: \(calm["breaches"] ?? "") p99 \(calm["latency_p99_ms"] ?? "")")

            let obs = try TestClient(port: port)
            try obs.hello("mon-obs")
            try obs.join("mon")
            try obs.send(["type": "whoami"])
            let who = try obs.read()
            #expect(who.type == "whoami" && who["user"] as? String == "mon-obs", "\(who)")
            let p1 = try TestClient(port: port)
            try p1.hello("mon-p1")
            try p1.join("mon")
            #expect(try obs.read(until: "user_joined", timeout: 3)["user"] as? String == "mon-p1")

            // A publisher sends pipelined batches of 1000 chats (and a ping, to keep one batch
            // in flight) until told to stop.
            let pub = try TestClient(port: port, timeout: 60)
            try pub.hello("load-pub")
            try pub.join("load")
            let loadStop = Locked(false)
            let batches = Locked(0)
            let loadError = Locked<String?>(nil)
            let text = String(repeating: "x", count: 64)
            let batch = String(repeating: "{\"type\":\"send_chat\",\"room\":\"load\",\"text\":\"\(text)\"}\n", count: 1000)
                + "{\"type\":\"ping\"}\n"
            let loader = HelperThread {
                do {
                    while !loadStop.value {
                        try pub.send(batch)
                        _ = try pub.read(until: "pong", timeout: 60)
                        batches.withLock { $0 += 1 }
                    }
                } catch {
                    loadError.withLock { $0 = "\(error)" }
                }
            }
            var loadStopped = false
            func stopLoad() {
                if loadStopped { return }
                loadStopped = true
                loadStop.withLock { $0 = true }
                #expect(loader.join(timeout: 60), "load thread did not stop")
            }
            defer { stopLoad() }

            // Load until the monitor sheds (a debug build cannot keep p99 under the threshold at
            // this rate; the breach must hold monitor_breach_s = 3 evaluations); up to ~15 s on
            // a busy box.
            let started = Date()
            let (over, isOver) = statsEventually(port, timeout: 15) { s in
                s["overloaded"] as? Bool == true && statsFlag(s, "enable_presence")?["shed"] as? Bool == true
            }
            try #require(isOver, "overloaded and enable_presence shed under load within 15 s; got \(over) after \(batches.value) batches, load error \(loadError.value ?? "none")")
            let breaches = (over["breaches"] as? [String]) ?? []
            #expect(breaches.contains { $0.hasPrefix("latency_p99_ms") }, "breaches: \(breaches)")
            #expect((jsonDouble(over["latency_p99_ms"]) ?? 0) > loadLatencyMs, "\(over["latency_p99_ms"] ?? "")")
            #expect(statsFlag(over, "enable_whoami")?["shed"] as? Bool == true, "\(over["flags"] ?? "")")
            #expect(statsFlag(over, "enable_compression")?["shed"] as? Bool == true)
            #expect(statsFlag(over, "enable_chat_rooms")?["shed"] as? Bool == false, "critical flags are never shed")
            #expect(statsFlag(over, "enable_presence")?["enabled"] as? Bool == true, "shedding is not the operator's switch")
            #expect(jsonDouble(over["error_rate"]) == 0, "no server failures under load: \(over["error_rate"] ?? "")")
            let metrics = parseMetrics(try httpGet(port, "/metrics").body)
            #expect(metrics["tcpserver_overloaded"] == 1)

            // Shed (the load still running): presence stops, whoami is refused, rooms (critical)
            // still work.
            let p2 = try TestClient(port: port)
            try p2.hello("mon-p2")
            try p2.join("mon")
            let seen = try drainWithPings(obs)
            #expect(!hasPresence(seen, user: "mon-p2"), "presence is shed: \(seen)")
            try obs.send(["type": "whoami"])
            try expectError(obs, "feature_disabled", "whoami while shed")
            try p2.send(["type": "send_chat", "room": "mon", "text": "still here"])
            #expect(try obs.read(until: "chat")["text"] as? String == "still here")
            #expect(statsEventually(port, timeout: 0) { $0["overloaded"] as? Bool == true }.ok,
                    "still overloaded while the load runs (else the checks above proved nothing)")

            stopLoad()
            #expect(loadError.value == nil, "load: \(loadError.value ?? "")")
            let loadSeconds = Date().timeIntervalSince(started)

            // Hysteresis: the first clear evaluation leaves the flags shed; only one at least
            // monitor_hold_ms later restores them (evaluations are a second apart).
            var heldClear = false
            var p99s: [Double] = []
            let (clear, isClear) = statsEventually(port, timeout: 15) { s in
                p99s.append(jsonDouble(s["latency_p99_ms"]) ?? -1)
                if s["overloaded"] as? Bool == true && (s["breaches"] as? [String])?.isEmpty == true {
                    heldClear = true
                    #expect(statsFlag(s, "enable_presence")?["shed"] as? Bool == true, "still shed during the hold")
                }
                return s["overloaded"] as? Bool == false && statsFlag(s, "enable_presence")?["shed"] as? Bool == false
            }
            #expect(heldClear, "never saw the hold (breaches cleared, still overloaded)")
            #expect(isClear, "within 15 s of the load stopping: overloaded=false, presence back; got \(clear); p99 seen: \(p99s)")
            #expect(statsFlag(clear, "enable_whoami")?["shed"] as? Bool == false)
            #expect((clear["breaches"] as? [String])?.isEmpty == true, "\(clear["breaches"] ?? "")")
            #expect(batches.value > 0 && drained.value > 0,
                    "load: \(batches.value) batches in \(Int(loadSeconds)) s, \(drained.value) bytes drained")

            let p3 = try TestClient(port: port)
            try p3.hello("mon-p3")
            try p3.join("mon")
            let uj = try obs.read(until: "user_joined", timeout: 3)
            #expect(uj["user"] as? String == "mon-p3", "presence is back: \(uj)")
            try obs.send(["type": "whoami"])
            let who2 = try obs.read(until: "whoami")
            #expect(who2["user"] as? String == "mon-obs" && (who2["rooms"] as? [String]) == ["mon"], "\(who2)")
            _ = (members, p1)
        }
    }

    @Test("max_memory_mb=1 → overloaded with a memory breach against max_memory_mb + 8 MB per reactor + 32 KiB per connection",
          arguments: allIOModes)
    func memoryBreach(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.maxMemoryMB = 1
            c.monitorBreachSeconds = 1
        }) { server in
            let (s, ok) = statsEventually(server.port, timeout: 5) { $0["overloaded"] as? Bool == true }
            #expect(ok, "RSS is over 1 MB: \(s)")
            let breaches = (s["breaches"] as? [String]) ?? []
            let memory = breaches.first { $0.hasPrefix("memory_mb") }
            #expect(memory != nil, "breaches: \(breaches)")
            if let memory {
                // "memory_mb RSS > LIMIT (max_memory_mb 1.0 + memory_per_reactor_mb 8.0 × 2 reactors
                // + memory_per_connection_kb 32 × N connections)"
                #expect(memory.contains("(max_memory_mb 1.0 + memory_per_reactor_mb 8.0 × 2 reactors + memory_per_connection_kb 32 × "), "\(memory)")
                let parsed = parseMemoryBreach(memory)
                #expect(parsed != nil, "unparsable: \(memory)")
                if let (rss, limit, n) = parsed {
                    #expect(abs(limit - (1 + 8 * 2 + Double(32 * n) / 1024)) < 1e-9, "limit = 1 MB + 8 MB × 2 + 32 KiB × \(n): \(memory)")
                    #expect(rss > limit, "\(memory)")
                }
            }
            #expect(statsFlag(s, "enable_presence")?["shed"] as? Bool == true)
            #expect(statsFlag(s, "enable_chat_rooms")?["shed"] as? Bool == false)
            let thresholds = s["thresholds"] as? JSONObject
            #expect(jsonDouble(thresholds?["max_memory_mb"]) == 1)
            #expect(jsonInt(thresholds?["memory_per_connection_kb"]) == 32, "the default: \(thresholds ?? [:])")
        }
    }

    @Test("memory_limit_mb = max_memory_mb + memory_per_reactor_mb × reactors + memory_per_connection_kb × connections / 1024", arguments: allIOModes)
    func memoryLimitScales(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.maxMemoryMB = 100_000        // far over the test process's RSS: no breach
            c.memoryPerConnectionKB = 100
            c.memoryPerReactorMB = 3
        }) { server in
            let port = server.port
            let s0 = try fetchStats(port)
            #expect(jsonInt((s0["thresholds"] as? JSONObject)?["memory_per_connection_kb"]) == 100, "\(s0["thresholds"] ?? "")")
            var clients: [TestClient] = []
            for k in 0..<10 {
                let c = try TestClient(port: port)
                try c.hello("mem\(k)")
                clients.append(c)
            }
            // Connection counts come from the per-reactor snapshots (a second old at most).
            let (s, ok) = statsEventually(port, timeout: 5) { (jsonInt($0["connections"]) ?? 0) >= 10 }
            #expect(ok, "10 connections counted: \(s["connections"] ?? "nil")")
            let n = jsonInt(s["connections"]) ?? -1
            #expect((10...12).contains(n), "connections: \(n)")   // plus the /stats requests, maybe
            let limit = jsonDouble(s["memory_limit_mb"]) ?? -1
            let expected = 100_000 + 3 * 2 + Double(100 * n) / 1024
            #expect(abs(limit - expected) <= 0.0011, "memory_limit_mb \(limit), expected \(expected) for \(n) connections")
            #expect(limit >= 100_000 + 6 + 1000.0 / 1024 - 0.0011, "at least 10 connections' allowance: \(limit)")
            #expect(s["overloaded"] as? Bool == false, "\(s["breaches"] ?? "")")
            _ = clients
        }
    }
}

/// The p99 threshold the load test sets (the default is 10 ms): the debug build under the
/// publisher's load measured 15–45 ms; idle (a few pings, /stats polls) it shows 0.
let loadLatencyMs = 1.0

/// "memory_mb RSS > LIMIT (max_memory_mb M + K KiB × N connections)" → (RSS, LIMIT, N).
func parseMemoryBreach(_ s: String) -> (rss: Double, limit: Double, connections: Int)? {
    let parts = s.split(separator: " ")
    guard parts.count >= 10, parts[0] == "memory_mb", parts[2] == ">",
          let rss = Double(parts[1]), let limit = Double(parts[3]),
          let x = parts.lastIndex(of: "×"), x + 1 < parts.count, let n = Int(parts[x + 1]) else { return nil }
    return (rss, limit, n)
}
