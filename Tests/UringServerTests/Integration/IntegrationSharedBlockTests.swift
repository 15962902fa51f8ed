// Shared message blocks over real sockets: fan-out messages at or over shared_block_threshold
// are queued by reference (one block, an iovec per recipient) and interleaved with each
// connection's own bytes (small messages, frame headers, pongs). Every recipient must get every
// message intact and in order, whatever its framing, including one that reads nothing until the
// end (its sends go out in pieces, resuming in the middle of blocks).

import Foundation
import Testing
import UringServer

@Suite("Integration: shared message blocks")
struct IntegrationSharedBlockTests {

    @Test("big and small messages interleave intact and in order: lines, binary frames, a late reader",
          arguments: allIOModes)
    func interleaved(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in
            c.sharedBlockThreshold = 512
            c.sendZCThreshold = 0
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            let pub = try TestClient(port: port)
            try pub.hello("sb-pub")
            let lines = try TestClient(port: port, framing: .jsonLines)
            let bin = try TestClient(port: port, framing: .binary)
            let late = try TestClient(port: port, framing: .jsonLines, receiveBuffer: 4096)
            let readers = [("lines", lines), ("binary", bin), ("late", late)]
            for (name, c) in readers {
                try c.hello("sb-\(name)")
                try c.join("sb-room")
            }
            try pub.join("sb-room")   // senders must be members (no echo: it gets only acks)
            // Odd messages are small (copied per recipient), even ones big (a shared block):
            // each connection's output alternates own bytes and blocks. Big ones vary in size
            // so partial sends stop at different offsets inside them.
            let n = 300
            func text(_ i: Int) -> String {
                i % 2 == 1 ? "small #\(i)" : String(repeating: "\(i % 10)", count: 600 + (i * 997) % 50_000) + "#\(i)"
            }
            var expected: [String] = []
            for i in 0..<n {
                try pub.send(["type": "send_chat", "room": "sb-room", "text": text(i), "id": i])
                expected.append(text(i))
            }
            // A pong (own bytes) in the middle of the subscribers' streams.
            try lines.send(["type": "ping"])
            try bin.send(["type": "ping"])
            // The publisher gets its acks: every message was accepted before anyone reads.
            for i in 0..<n {
                let a = try pub.read(until: "ack")
                #expect(a["id"] as? Int == i, "ack \(i): \(a)")
            }
            for (name, c) in readers {
                var skipped: [JSONObject] = []
                for i in 0..<n {
                    let m = try c.read(until: "chat", timeout: 10, skipped: &skipped)
                    let got = m["text"] as? String
                    #expect(got == expected[i], "\(name): delivery \(i) differs (\(got?.count ?? -1) chars, expected \(expected[i].count))")
                    if got != expected[i] { return }
                }
                #expect(skipped.allSatisfy { $0.type == "pong" }, "\(name): only pongs besides chats: \(skipped.prefix(3))")
                if name != "late" {
                    let pongs = skipped.count
                    if pongs == 0 { _ = try c.read(until: "pong") }
                }
            }
            // Everyone is still connected and answers in order.
            for (_, c) in readers { try c.pingExpectingPongNext() }
        }
    }

    @Test("shared_block_threshold: parsed, 0 disables, bad values refused")
    func config() throws {
        var c = ServerConfig()
        #expect(c.sharedBlockThreshold == 1024)
        try c.set("shared_block_threshold", "0")
        #expect(c.sharedBlockThreshold == 0)
        try c.set("shared_block_threshold", "4096")
        #expect(c.sharedBlockThreshold == 4096)
        #expect(throws: ConfigError.self) { try c.set("shared_block_threshold", "-5") }
        #expect(throws: ConfigError.self) { try c.set("shared_block_threshold", "big") }
    }
}
