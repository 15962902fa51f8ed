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
        try runInterleaved(mode, spliceThreshold: 0)
    }

    /// The same traffic with room batches spliced (tee + splice through pipes): members with
    /// nothing else queued take batches from their pipe, the late reader's pipe fills and it
    /// falls back to shared blocks queued behind it, pongs queue behind pipes, binary members
    /// take messages one by one. Every stream must still be complete and in order.
    @Test("spliced room batches: intact and in order with pipes, blocks, pongs and a late reader",
          arguments: allIOModes)
    func spliced(mode: IOModeSetting) throws {
        try runInterleaved(mode, spliceThreshold: 1024)
    }

    /// io_uring with sockets accepted straight into the fixed-file table: they have no fd
    /// until their first spliced batch asks for one (IORING_OP_FIXED_FD_INSTALL); that batch
    /// goes as a shared block, the later ones by splice.
    @Test("spliced room batches over io_uring accept descriptors (fd installed on demand)")
    func splicedAcceptDescriptors() throws {
        try runInterleaved(.uring, spliceThreshold: 1024, descriptors: .accept)
    }

    private func runInterleaved(_ mode: IOModeSetting, spliceThreshold: Int, descriptors: UringDescriptorSetting = .auto) throws {
        try withServer(mode, configure: { c in
            c.uringDirectDescriptors = descriptors
            c.sharedBlockThreshold = 512
            c.spliceThreshold = spliceThreshold
            c.sendZCThreshold = 0
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            let pub = try TestClient(port: port)
            try pub.hello("sb-pub")
            let bin = try TestClient(port: port, framing: .binary)
            let late = try TestClient(port: port, framing: .jsonLines, receiveBuffer: 4096)
            // Batches need RoomBatch.minMembers members on a reactor: with two reactors, enough
            // line readers that each has several.
            var readers = [("binary", bin), ("late", late)]
            for k in 0..<(spliceThreshold > 0 ? 8 : 1) {
                readers.append(("lines\(k)", try TestClient(port: port, framing: .jsonLines)))
            }
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
            for (name, c) in readers where name != "late" { try c.send(["type": "ping"]) }
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
            // The path under test was taken (or not): batches were spliced only when enabled.
            // (/stats counters are published once a second.)
            let (stats, _) = statsEventually(port, timeout: 3) { s in
                statsTotal(s, "deliveries") >= n * readers.count && (spliceThreshold == 0 || statsTotal(s, "spliced_batches") > 0)
            }
            let spliced = statsTotal(stats, "spliced_batches")
            if spliceThreshold > 0 {
                #expect(spliced > 0, "no batch was spliced")
            } else {
                #expect(spliced == 0, "splice_threshold 0 spliced \(spliced) batches")
            }
        }
    }

    /// Members that go away while their pipes still hold batches (one closes, one resets): the
    /// pipes are dropped with them and everyone else keeps getting every message.
    @Test("spliced room batches: members leaving with full pipes do not disturb the others",
          arguments: [(IOModeSetting.uring, UringDescriptorSetting.auto), (.epoll, .auto), (.uring, .accept)])
    func splicedMembersLeave(mode: IOModeSetting, descriptors: UringDescriptorSetting) throws {
        try withServer(mode, configure: { c in
            c.uringDirectDescriptors = descriptors
            c.spliceThreshold = 1024
            c.sendZCThreshold = 0
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            let pub = try TestClient(port: port)
            try pub.hello("sp-pub")
            let stay = try TestClient.members(8, port: port, user: "sp-stay-", room: "sp-room")
            let leave = try TestClient.members(2, port: port, user: "sp-leave-", room: "sp-room", receiveBuffer: 4096)
            try pub.join("sp-room")
            func text(_ i: Int) -> String { String(repeating: "\(i % 10)", count: 3000 + i * 7) + "#\(i)" }
            let n = 200
            for i in 0..<n / 2 { try pub.send(["type": "send_chat", "room": "sp-room", "text": text(i), "id": i]) }
            for i in 0..<n / 2 {
                do { _ = try pub.read(until: "ack") } catch { Issue.record("ack \(i): \(error)"); throw error }
            }
            // The leavers read nothing: their sockets and pipes are full. Now they go.
            leave[0].close()
            leave[1].closeAbruptly()
            for i in n / 2..<n { try pub.send(["type": "send_chat", "room": "sp-room", "text": text(i), "id": i]) }
            for i in n / 2..<n {
                do { _ = try pub.read(until: "ack") } catch { Issue.record("ack \(i): \(error)"); throw error }
            }
            for (k, c) in stay.enumerated() {
                for i in 0..<n {
                    let m: JSONObject
                    do { m = try c.read(until: "chat", timeout: 10) } catch { Issue.record("member \(k): delivery \(i): \(error)"); throw error }
                    #expect(m["text"] as? String == text(i), "member \(k): delivery \(i) differs")
                    if m["text"] as? String != text(i) { return }
                }
                try c.pingExpectingPongNext()
            }
            let (stats, _) = statsEventually(port, timeout: 3) { s in statsTotal(s, "closed") >= 2 }
            #expect(statsTotal(stats, "spliced_batches") > 0)
            #expect(statsTotal(stats, "closed") >= 2, "both leavers were closed")
            // Once the room is quiet, the reactors close their pipes: the descriptors a load
            // opened go back (the soak checks the server's fd count returns to its start).
            let (idle, closed) = statsEventually(port, timeout: 5) { s in openPipes(s) == 0 }
            #expect(closed, "pipes still open a few seconds after the last batch: \(openPipes(idle))")
        }
    }

    /// `reactors[].open_pipes` summed over the reactors (negative when /stats lacks it).
    private func openPipes(_ stats: JSONObject) -> Int {
        guard let rs = stats["reactors"] as? [JSONObject] else { return -1 }
        return rs.reduce(0) { $0 + (jsonInt($1["open_pipes"]) ?? -1_000) }
    }

    @Test("splice_threshold: parsed, 0 disables, bad values refused")
    func spliceConfig() throws {
        var c = ServerConfig()
        try c.set("splice_threshold", "0")
        #expect(c.spliceThreshold == 0)
        try c.set("splice_threshold", "8192")
        #expect(c.spliceThreshold == 8192)
        #expect(throws: ConfigError.self) { try c.set("splice_threshold", "-1") }
        #expect(throws: ConfigError.self) { try c.set("splice_threshold", "\(1 << 20)") }
        #expect(throws: ConfigError.self) { try c.set("splice_threshold", "lots") }
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
