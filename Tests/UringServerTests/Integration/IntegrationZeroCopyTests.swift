// Zero-copy sends (IORING_OP_SEND_ZC) over real sockets: big deliveries arrive intact and in
// order whether a send went out zero-copy (result CQE, then the notification that releases the
// buffer) or plain, and /stats counts them. Loopback peers make the kernel copy, which it
// reports; the server then stops using SEND_ZC for that peer.

import Foundation
import Testing
import UringServer

@Suite("Integration: zero-copy sends")
struct IntegrationZeroCopyTests {

    @Test("messages over send_zc_threshold arrive intact and in order; /stats counts SEND_ZC", arguments: allIOModes)
    func bigMessages(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.sendZCThreshold = 1024
            c.sharedBlockThreshold = 0   // plain buffers: sends of shared blocks are never SEND_ZC
            c.rateLimitPerSec = 0
            c.presence = false
        }) { server in
            let port = server.port
            let pub = try TestClient(port: port)
            try pub.hello("zc-pub")
            let subs = try TestClient.members(3, port: port, user: "zc-sub-", room: "zc-room")
            try pub.join("zc-room")
            // Each text is distinct and over the threshold (a line of ~3 KB per delivery).
            let n = 60
            func text(_ i: Int) -> String {
                String(repeating: "\(i % 10)", count: 2000 + i * 17) + "#\(i)"
            }
            for i in 0..<n { try pub.send(["type": "send_chat", "room": "zc-room", "text": text(i)]) }
            for s in subs {
                for i in 0..<n {
                    let m = try s.read(until: "chat")
                    #expect(m["text"] as? String == text(i), "delivery \(i) differs (\((m["text"] as? String)?.count ?? -1) chars)")
                }
            }
            let (stats, _) = statsEventually(port, timeout: 3) { s in
                mode == .epoll || statsTotal(s, "zero_copy_sends") >= subs.count
            }
            let sends = statsTotal(stats, "zero_copy_sends"), copied = statsTotal(stats, "zero_copy_copied")
            if mode == .uring {
                // At least the first big send to each subscriber went zero-copy; on loopback the
                // kernel copied it, said so, and later sends to that peer were plain ones.
                #expect(sends >= subs.count, "zero_copy_sends \(sends)")
                #expect(copied == sends, "loopback: every SEND_ZC is reported copied (\(copied) of \(sends))")
                #expect(sends < n * subs.count / 2, "after a copied report, sends to that peer are plain (\(sends))")
            } else {
                #expect(sends == 0 && copied == 0, "epoll mode has no SEND_ZC: \(sends), \(copied)")
            }
        }
    }

    @Test("send_zc_threshold: parsed, 0 disables, bad values refused")
    func config() throws {
        var c = ServerConfig()
        try c.set("send_zc_threshold", "0")
        #expect(c.sendZCThreshold == 0)
        try c.set("send_zc_threshold", "65536")
        #expect(c.sendZCThreshold == 65536)
        #expect(throws: ConfigError.self) { try c.set("send_zc_threshold", "-1") }
        #expect(throws: ConfigError.self) { try c.set("send_zc_threshold", "lots") }
        #expect(ServerConfig().sendZCThreshold == 16384)
    }
}
