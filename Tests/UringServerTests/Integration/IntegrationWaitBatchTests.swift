// Batched waiting (wait_batch, io_uring on kernels with IORING_FEAT_MIN_TIMEOUT): a reactor
// that waits for a batch of completions must still answer a lone request promptly (the
// min-wait timer releases a partial batch) and deliver everything. Epoll mode ignores it.

import Foundation
import Testing
import UringServer

@Suite("Integration: batched waiting")
struct IntegrationWaitBatchTests {

    @Test("wait_batch 32: lone pings answered, fan-out complete and in order", arguments: allIOModes)
    func batched(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in
            c.waitBatch = 32
            c.waitBatchMicros = 200
            c.waitBatchAuto = false   // always on: lone pings must still be answered promptly
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            let a = try TestClient(port: port)
            let b = try TestClient(port: port)
            try a.hello("wb-a")
            try b.hello("wb-b")
            try a.join("wb")
            try b.join("wb")
            // One request at a time: far fewer completions than the batch size.
            let start = Date()
            for _ in 0..<20 { try a.pingExpectingPongNext() }
            let elapsed = Date().timeIntervalSince(start)
            // 20 round trips; a wait that ignored the min-wait timer would take the 100 ms
            // tick each (2 s). Generous bound for a loaded CI box.
            #expect(elapsed < 1.5, "20 lone pings took \(elapsed) s")
            for i in 0..<300 { try a.send(["type": "send_chat", "room": "wb", "text": "m\(i)"]) }
            for i in 0..<300 {
                let m = try b.read(until: "chat")
                #expect(m["text"] as? String == "m\(i)", "\(m)")
            }
        }
    }

    /// wait_batch_auto (the default): a reactor turns batched waiting on while it fans out
    /// (room messages with several deliveries each) and off again when that stops; pings alone
    /// never turn it on. /stats shows each reactor's state at its last second.
    @Test("wait_batch_auto: on while fanning out, off for pings and after the load", arguments: allIOModes)
    func auto(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            func anyOn(_ s: JSONObject) -> Bool {
                ((s["reactors"] as? [JSONObject]) ?? []).contains { $0["batched_wait"] as? Bool == true }
            }
            let pinger = try TestClient(port: port)
            try pinger.hello("wba-pinger")
            for _ in 0..<300 { try pinger.pingExpectingPongNext() }
            let (quiet, _) = statsEventually(port, timeout: 1.5) { s in statsTotal(s, "accepted") >= 1 && (s["reactors"] as? [JSONObject])?.count == 2 }
            #expect(!anyOn(quiet), "pings alone turned batched waiting on")
            let subs = try TestClient.members(16, port: port, user: "wba-sub", room: "wba")
            try pinger.join("wba")
            // Several thousand messages a second to 16 members (who need not read them: a few
            // hundred KB each) until /stats shows it, for at most 3 s.
            var on = false
            let start = Date()
            var sent = 0
            while Date().timeIntervalSince(start) < 3 && !on {
                for _ in 0..<100 { try pinger.send(["type": "send_chat", "room": "wba", "text": "x"]); sent += 1 }
                usleep(5_000)
                if sent % 1000 == 0 { on = anyOn(try fetchStats(port)) }
            }
            if mode == .uring {
                #expect(on, "fan-out of \(sent) messages did not turn batched waiting on")
            } else {
                #expect(!on, "epoll has no batched waiting")
            }
            // Quiet again: off within a second or two.
            let (after, off) = statsEventually(port, timeout: 3) { s in !anyOn(s) }
            #expect(off, "batched waiting stayed on after the load: \(after["reactors"] ?? "none")")
            withExtendedLifetime(subs) {}   // the members stay connected (in the room) throughout
        }
    }

    @Test("wait_batch, wait_batch_us, wait_batch_auto: parsed, bad values refused")
    func config() throws {
        var c = ServerConfig()
        #expect(c.waitBatch == 32 && c.waitBatchMicros == 50 && c.waitBatchAuto)
        try c.set("wait_batch", "16")
        try c.set("wait_batch_us", "20")
        try c.set("wait_batch_auto", "false")
        #expect(c.waitBatch == 16 && c.waitBatchMicros == 20 && !c.waitBatchAuto)
        #expect(throws: ConfigError.self) { try c.set("wait_batch", "-1") }
        #expect(throws: ConfigError.self) { try c.set("wait_batch_us", "forever") }
        #expect(throws: ConfigError.self) { try c.set("wait_batch_auto", "sometimes") }
    }
}
