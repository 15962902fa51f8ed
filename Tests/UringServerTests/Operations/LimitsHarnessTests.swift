// Limits driven through ProtocolHarness (one reactor over a memory backend): exact counts and
// single-turn output sizes that real sockets cannot pin down. The real-socket versions are in
// LimitsTests / LimitsSlowConsumerTests.

import Foundation
import Testing
import UringServer
import UringServerTesting

private func lines(_ bytes: [UInt8]) -> [JSONObject] {
    bytes.split(separator: UInt8(ascii: "\n")).compactMap { try? J.parse(Array($0)) }
}

private func harnessConfig(_ f: (inout ServerConfig) -> Void) -> ServerConfig {
    var c = ServerConfig()
    quietMonitor(&c)
    f(&c)
    return c
}

@Suite("Limits: deterministic (ProtocolHarness)")
struct LimitsHarnessTests {

    @Test("rate limit: burst 10 → hello + 9 pongs, the other 21 pings rate_limited")
    func rateExact() {
        let h = ProtocolHarness(config: harnessConfig { c in
            c.rateLimitPerSec = 10
            c.rateLimitBurst = 10
        })
        let id = h.connect()
        h.feed(id, Array(("{\"type\":\"hello\",\"user\":\"r\"}\n" + String(repeating: "{\"type\":\"ping\"}\n", count: 30)).utf8))
        let out = lines(h.takeOutput(id))
        #expect(out.first?.type == "welcome")
        #expect(out.filter { $0.type == "pong" }.count == 9, "\(out.count) messages")
        #expect(out.filter { $0["code"] as? String == "rate_limited" }.count == 21)
        #expect(!h.isClosed(id))
    }

    @Test("rate_limit_strikes=5: the 5th rate_limited in a row closes")
    func strikesExact() {
        let h = ProtocolHarness(config: harnessConfig { c in
            c.rateLimitPerSec = 10
            c.rateLimitBurst = 10
            c.rateLimitStrikes = 5
        })
        let id = h.connect()
        h.feed(id, Array(("{\"type\":\"hello\",\"user\":\"r\"}\n" + String(repeating: "{\"type\":\"ping\"}\n", count: 30)).utf8))
        let out = lines(h.takeOutput(id))
        #expect(out.filter { $0.type == "pong" }.count == 9)
        let errors = out.filter { $0.type == "error" }
        #expect(errors.count == 5 && errors.allSatisfy { $0["code"] as? String == "rate_limited" }, "\(errors)")
        #expect(h.isClosed(id), "closed after the 5th strike")
    }

    /// Two members; `a` sends 60 chats of 30 KB in one receive, so `b`'s queue reaches ~1.8 MB
    /// within one turn.
    private func overrun(hard: Int, soft: Int) -> (bOut: [JSONObject], bClosed: Bool) {
        let h = ProtocolHarness(config: harnessConfig { c in
            c.outboundHardBytes = hard
            c.outboundSoftBytes = soft
            c.outboundSoftSeconds = 60
        })
        let a = h.connect(), b = h.connect()
        h.feed(a, Array("{\"type\":\"hello\",\"user\":\"a\"}\n{\"type\":\"join_room\",\"room\":\"r\"}\n".utf8))
        h.feed(b, Array("{\"type\":\"hello\",\"user\":\"b\"}\n{\"type\":\"join_room\",\"room\":\"r\"}\n".utf8))
        _ = h.takeOutput(a)
        _ = h.takeOutput(b)
        let chat = "{\"type\":\"send_chat\",\"room\":\"r\",\"text\":\"" + String(repeating: "y", count: 30_000) + "\"}\n"
        h.feed(a, Array(String(repeating: chat, count: 60).utf8))
        return (lines(h.takeOutput(b)), h.isClosed(b))
    }

    @Test("outbound_hard_bytes=1 MiB is a hard cap, whatever outbound_soft_bytes is",
          arguments: [512 << 10, 1 << 20, 4 << 20])
    func hardCapIndependentOfSoft(soft: Int) {
        let (out, closed) = overrun(hard: 1 << 20, soft: soft)
        let chats = out.filter { $0.type == "chat" }.count
        #expect(closed, "soft=\(soft): ~1.8 MB queued in one turn is over the 1 MiB hard cap, but the member was not cut (\(chats) chats delivered)")
        #expect(out.last?["code"] as? String == "slow_consumer", "soft=\(soft): last message \(out.last ?? [:])")
    }

    /// The cut names, per room, the last offset queued to the member before it: all 60 lines
    /// (then dropped with the rest of its output), so it can rejoin with `since`.
    @Test("slow_consumer names the last offset queued per room")
    func cutNamesOffsets() {
        let (out, closed) = overrun(hard: 1 << 20, soft: 1 << 20)
        #expect(closed)
        let cut = out.last ?? [:]
        #expect(cut["code"] as? String == "slow_consumer")
        #expect((cut["offsets"] as? [String: Any])?["r"] as? Int == 60, "\(cut)")
    }
}
