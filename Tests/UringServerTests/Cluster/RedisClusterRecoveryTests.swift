// Cluster-wide offsets on a real Redis Cluster (part of the serialized RedisClusterTests suite:
// they share its 6 redis-servers): a member that drops mid-stream and comes back on another
// node recovers exactly what it missed, then live lines, with no duplicate and no hole.

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

extension RedisClusterTests {
    @Test("a member drops mid-stream on one node of 3, rejoins another with since: exactly the missed lines in order, then live ones",
          arguments: [IOModeSetting.uring, .epoll])
    func reconnectToAnotherNode(mode: IOModeSetting) throws {
        let rc = try RedisClusterProcess.shared()
        // The room lives on a master other than the one the nodes were configured with.
        let target = try #require(rc.roomsOnEachMaster(prefix: "rj-\(mode)-").first { $0.master != rc.livePort })
        let room = target.room
        // History deep enough for everything published while the member is away.
        let nodes = try (1...3).map { try Self.node(rc, "rj\($0)-\(mode)", mode, historySize: 1000) }
        defer { for n in nodes { n.stop() } }
        // Links up on all 3 masters first: a join answered before its node follows the room's
        // stream carries a provisional epoch (the join waits only so long for Redis).
        try #require(try Self.eventually(10) {
            try nodes.allSatisfy {
                let s = try Self.clusterStats($0.port)
                return s["connected"] as? Bool == true && s["masters"] as? Int == 3
            }
        }, "links up: \(Self.statsText(nodes[0].port))")
        let publisher = try TestClient(port: nodes[1].port)
        _ = try publisher.hello("pub")
        _ = try publisher.join(room)
        let member = try TestClient(port: nodes[0].port)
        _ = try member.hello("ra")
        let joined = try member.join(room)
        let epoch = try #require(joined["epoch"] as? String, "\(joined)")
        let watcher = try TestClient(port: nodes[2].port)
        _ = try watcher.hello("rc")
        _ = try watcher.join(room)
        #expect(try Self.eventually(5) {
            try publisher.send(["type": "send_chat", "room": room, "text": "warmup"])
            return [member, watcher].allSatisfy { (try? $0.read(until: "chat", timeout: 0.3)) != nil }
        }, "warm-up delivery across nodes")
        Thread.sleep(forTimeInterval: 0.3)
        for c in [member, watcher, publisher] { while (try? c.read(timeout: 0.15)) != nil {} }

        // The publisher sends n0…n(total-1), 2 ms apart, from its own thread.
        let total = 300
        let sender = Thread {
            for k in 0..<total {
                try? publisher.send(["type": "send_chat", "room": room, "text": "n\(k)"])
                usleep(2000)
            }
        }
        sender.start()
        // The member reads part of the stream, then its connection drops (RST).
        var lastSeen = (offset: -1, k: -1)
        while lastSeen.k < 80 {
            let m = try member.read(until: "chat", timeout: 10)
            let k = Int((m["text"] as? String ?? "").dropFirst()) ?? -1
            #expect(k == lastSeen.k + 1, "live order before the drop: \(k) after \(lastSeen.k)")
            lastSeen = (m["offset"] as? Int ?? -1, k)
        }
        member.closeAbruptly()
        usleep(100_000)  // lines keep coming meanwhile
        // Back on node 3 (another master's room, another node), with since = the last offset seen.
        let back = try TestClient(port: nodes[2].port)
        _ = try back.hello("ra")
        try back.send(["type": "join_room", "room": room, "epoch": epoch, "since": lastSeen.offset])
        let rejoined = try back.read(until: "joined")
        #expect(rejoined["recovered"] as? Bool == true, "\(rejoined)")
        #expect(rejoined["missed"] as? Int ?? 0 >= 1, "lines were published while the member was away: \(rejoined)")
        var got: [(offset: Int, k: Int)] = []
        while got.last?.k != total - 1 {
            let m = try back.read(until: "chat", timeout: 10)
            got.append((m["offset"] as? Int ?? -1, Int((m["text"] as? String ?? "").dropFirst()) ?? -1))
        }
        #expect(got.map(\.k) == Array((lastSeen.k + 1)..<total), "missed then live, in order: \(got.map(\.k).prefix(20))…")
        #expect(got.map(\.offset) == Array((lastSeen.offset + 1)...(lastSeen.offset + got.count)),
                "no duplicate, no hole: \(got.map(\.offset).prefix(20))…")
        #expect(nodes.allSatisfy { Self.stat($0.port, "publish_failures") == 0 && Self.stat($0.port, "lost_messages") == 0 })
        #expect(try Self.clusterStats(nodes[0].port)["redis_mode"] as? String == "cluster")
    }
}
