import Foundation
import Testing
import UringServer

/// Cluster mode keeps today's delivery, with node-local offsets: a chat line from another node
/// takes this node's next offset in the room's log, so every member of a node sees one order
/// and can recover lines from other nodes on this node (cluster-wide offsets are the next step).
@Suite("Cluster: node-local offsets", .serialized)
struct ClusterOffsetsTests {
    private func chats(_ c: TestClient, _ n: Int) throws -> [(offset: Int, text: String)] {
        var out: [(Int, String)] = []
        while out.count < n {
            let m = try c.read(until: "chat", timeout: 10)
            out.append((m["offset"] as? Int ?? -1, m["text"] as? String ?? ""))
        }
        return out
    }

    @Test("lines from two nodes: each node's members see consecutive offsets; recovery on a node covers remote lines",
          arguments: [IOModeSetting.uring, .epoll])
    func nodeLocalOffsets(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = try ClusterIntegrationTests.node(redis, "oa-\(mode)", mode)
        let b = try ClusterIntegrationTests.node(redis, "ob-\(mode)", mode)
        defer { a.stop(); b.stop() }
        func member(_ port: Int, _ name: String) throws -> (TestClient, JSONObject) {
            let c = try TestClient(port: port)
            _ = try c.hello(name)
            return (c, try c.join("o"))
        }
        let (sa, _) = try member(a.port, "sa"), (sb, _) = try member(b.port, "sb")
        let (ra, _) = try member(a.port, "ra")
        var (rb, joinedB) = try member(b.port, "rb")
        #expect(try ClusterIntegrationTests.eventually(5) {
            try sa.send(["type": "send_chat", "room": "o", "text": "warmup"])
            try sb.send(["type": "send_chat", "room": "o", "text": "warmup"])
            return (try? rb.read(until: "chat", timeout: 0.3)) != nil && (try? ra.read(until: "chat", timeout: 0.3)) != nil
        }, "the nodes never exchanged a line")
        Thread.sleep(forTimeInterval: 0.5)
        for c in [sa, sb, ra, rb] { while (try? c.read(timeout: 0.2)) != nil {} }

        for i in 0..<50 {
            try sa.send(["type": "send_chat", "room": "o", "text": "a\(i)"])
            try sb.send(["type": "send_chat", "room": "o", "text": "b\(i)"])
        }
        var lastB = 0
        for (name, r) in [("a", ra), ("b", rb)] {
            let got = try chats(r, 100)
            let offs = got.map(\.offset)
            #expect(offs == Array(offs[0]..<(offs[0] + 100)), "node \(name): offsets not consecutive: \(offs.prefix(12))…")
            #expect(got.filter { $0.text.hasPrefix("a") }.map(\.text) == (0..<50).map { "a\($0)" })
            #expect(got.filter { $0.text.hasPrefix("b") }.map(\.text) == (0..<50).map { "b\($0)" })
            if name == "b" { lastB = offs.last! }
        }

        // rb drops; node a's sender goes on; rb comes back to node b and recovers a's lines there.
        rb.closeAbruptly()
        for i in 0..<5 { try sa.send(["type": "send_chat", "room": "o", "text": "r\(i)"]) }
        _ = try chats(ra, 5)
        Thread.sleep(forTimeInterval: 0.3)
        rb = try TestClient(port: b.port)
        _ = try rb.hello("rb")
        try rb.send(["type": "join_room", "room": "o", "epoch": joinedB["epoch"] as? String ?? "", "since": lastB])
        joinedB = try rb.read(until: "joined")
        #expect(joinedB["recovered"] as? Bool == true, "\(joinedB)")
        #expect(joinedB["missed"] as? Int == 5)
        #expect(try chats(rb, 5).map(\.text) == (0..<5).map { "r\($0)" })
    }
}
