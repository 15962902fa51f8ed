import Foundation
import Testing
import UringServer

/// Three tcpserver nodes sharing one room through a real redis-server.
@Suite("Cluster: three nodes over Redis", .serialized)
struct ClusterIntegrationTests {
    static func node(_ redis: RedisProcess, _ id: String, _ mode: IOModeSetting) throws -> Server {
        try startClusterNode(redisPort: redis.port, id: id, mode: mode)
    }

    static func eventually(_ seconds: Double, _ cond: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try cond() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return try cond()
    }

    /// Joins until the cluster-wide count in `joined` reaches `expected` (the count of other
    /// nodes arrives with the link's refresh, so a fresh join may first see fewer).
    static func memberCount(_ port: Int, _ room: String) throws -> Int {
        let probe = try TestClient(port: port)
        _ = try probe.hello("probe-\(UUID().uuidString.prefix(6))")
        let n = try probe.join(room)["members"] as? Int ?? -1
        probe.close()
        return n - 1   // not counting the probe itself
    }

    @Test("messages from each node reach members on every node, in order per sender", arguments: [IOModeSetting.uring, .epoll])
    func crossNodeDelivery(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let nodes = try (1...3).map { try Self.node(redis, "n\($0)-\(mode)", mode) }
        defer { for n in nodes { n.stop() } }
        let members = try nodes.enumerated().map { i, n -> TestClient in
            let c = try TestClient(port: n.port)
            _ = try c.hello("m\(i)")
            _ = try c.join("global")
            return c
        }
        // Every node's subscription is in place once a message from each node gets through.
        #expect(try Self.eventually(5) {
            try members[0].send(["type": "send_chat", "room": "global", "text": "warmup"])
            return (try? members[1].read(until: "chat", timeout: 0.3)) != nil
        }, "node 1 → node 2 never delivered")
        Thread.sleep(forTimeInterval: 0.5)
        for m in members { while (try? m.read(timeout: 0.2)) != nil {} }   // drain warm-up traffic

        let perSender = 100
        for i in 0..<perSender {
            for (s, m) in members.enumerated() {
                try m.send(["type": "send_chat", "room": "global", "text": "s\(s)-\(i)"])
            }
        }
        for (r, m) in members.enumerated() {
            var seen: [Int: [Int]] = [:]
            var got = 0
            while got < perSender * 2 {
                let msg = try m.read(until: "chat", timeout: 10)
                guard let text = msg["text"] as? String, text.hasPrefix("s") else { continue }
                let parts = text.dropFirst().split(separator: "-")
                seen[Int(parts[0])!, default: []].append(Int(parts[1])!)
                got += 1
            }
            for s in 0..<3 where s != r {
                #expect(seen[s] == Array(0..<perSender), "member on node \(r) from node \(s): \(seen[s]?.prefix(10) ?? [])…")
            }
            #expect(seen[r] == nil, "a member never gets its own message back (echo off)")
        }
    }

    @Test("cluster-wide counts; a killed node's members leave the count; Redis restarts are survived")
    func countsKillAndRedisRestart() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = try Self.node(redis, "a", .uring)
        let b = try Self.node(redis, "b", .epoll)
        defer { a.stop(); b.stop() }
        // Node c is a child process, so it can be SIGKILLed like a crash.
        let c = try ChildServer(args: ["--port", "0", "--threads", "1", "--log-file", "", "--presence", "false",
                                       "--cluster", "redis", "--redis-port", String(redis.port), "--node-id", "c"])
        let line = try #require(c.waitForStartLine(), "node c did not start: \(c.stderr)")
        let cPort = try #require(addressPort(line))

        var clients: [TestClient] = []
        var total = 0
        for (port, node, n) in [(a.port, "a", 2), (b.port, "b", 1), (cPort, "c", 3)] {
            for i in 0..<n {
                let t = try TestClient(port: port)
                _ = try t.hello("u\(port)-\(i)")
                total += 1
                // Even the first member on a node gets the cluster-wide count in `joined`
                // (the node fetches the other nodes' counts before it answers).
                let joined = try t.join("count")
                #expect(joined["members"] as? Int == total, "join #\(total) on node \(node): \(joined)")
                clients.append(t)
            }
            // The next node's first join must find this node's count in Redis.
            #expect(Self.eventually(5) { redis.query(["HGET", "tcpserver:members:{count}", node])?.hasPrefix("\(n):") == true },
                    "node \(node) published its count")
        }
        #expect(try Self.eventually(5) { try Self.memberCount(a.port, "count") == 6 }, "a sees 6 members")
        #expect(try Self.eventually(5) { try Self.memberCount(b.port, "count") == 6 }, "b sees 6 members")
        #expect(try Self.eventually(5) {
            let stats = try J.parse(Array(try httpRequest(port: b.port, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").body.utf8))
            let rooms = (stats["cluster"] as? [String: Any])?["room_members"] as? [String: Any]
            return rooms?["count"] as? Int == 6
        }, "/stats cluster.room_members is cluster-wide")

        kill(c.process.processIdentifier, SIGKILL)
        _ = c.waitForExit()
        // c's heartbeat expires (node TTL 3 s) and its 3 members drop out.
        #expect(try Self.eventually(8) { try Self.memberCount(a.port, "count") == 3 }, "after c died, a sees 3")

        // Redis goes away: a chat line cannot get its cluster-wide offset, so the sender gets
        // an error and the failure is counted (ClusterOffsetsTests covers the id).
        redis.kill()
        let sender = clients[0], remote = clients[2]
        try sender.send(["type": "send_chat", "room": "count", "text": "while redis is down"])
        #expect(try sender.read(until: "error", timeout: 5)["code"] as? String == "cluster_unavailable")
        // The link thread counts the failure when it finds the connection gone (asynchronously
        // to the send above), so poll for it.
        var cluster: [String: Any] = [:]
        let counted = try Self.eventually(5) {
            let stats = try httpRequest(port: a.port, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").body
            cluster = try J.parse(Array(stats.utf8))["cluster"] as? [String: Any] ?? [:]
            return (cluster["publish_failures"] as? Int ?? 0) >= 1
        }
        #expect(counted, "failed publishes counted: \(cluster)")

        // Redis back on the same port: the links reconnect and resubscribe.
        try redis.restart()
        #expect(try Self.eventually(10) {
            try sender.send(["type": "send_chat", "room": "count", "text": "after restart"])
            guard let m = try? remote.read(until: "chat", timeout: 0.5) else { return false }
            return m["text"] as? String == "after restart"
        }, "cross-node delivery resumes after Redis restarts")
    }
}
