import Foundation
import Testing
import UringServer

/// Cluster-wide offsets: Redis gives every chat line its offset (one script), every node
/// delivers the room's lines in that order, and a member recovers on any node.
@Suite("Cluster: cluster-wide offsets", .serialized)
struct ClusterOffsetsTests {
    static func node(_ redis: RedisProcess, _ id: String, _ mode: IOModeSetting, historySize: Int = 100,
                     waitForLink: Bool = true) throws -> Server {
        let s = try startClusterNode(redisPort: redis.port, id: id, mode: mode, historySize: historySize)
        // A join before the link is up is answered at once with a provisional epoch: give the
        // link a moment (not a requirement: some tests start with Redis unreachable).
        if waitForLink { _ = try? ClusterIntegrationTests.eventually(3) { try clusterStats(s)["connected"] as? Bool == true } }
        return s
    }

    static func chats(_ c: TestClient, _ n: Int, timeout: Double = 10) throws -> [(offset: Int, text: String)] {
        var out: [(Int, String)] = []
        while out.count < n {
            let m = try c.read(until: "chat", timeout: timeout)
            out.append((m["offset"] as? Int ?? -1, m["text"] as? String ?? ""))
        }
        return out
    }

    static func member(_ port: Int, _ name: String, _ room: String) throws -> (TestClient, JSONObject) {
        let c = try TestClient(port: port)
        _ = try c.hello(name)
        return (c, try c.join(room))
    }

    static func clusterStats(_ s: Server) throws -> [String: Any] {
        let body = try httpRequest(port: s.port, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").body
        return try J.parse(Array(body.utf8))["cluster"] as? [String: Any] ?? [:]
    }

    /// Sends until a line from `sender` reaches every one of `readers` (subscriptions in
    /// place), then drains everything.
    static func warmUp(_ sender: TestClient, _ readers: [TestClient], room: String) throws {
        #expect(try ClusterIntegrationTests.eventually(5) {
            try sender.send(["type": "send_chat", "room": room, "text": "warmup"])
            return readers.allSatisfy { (try? $0.read(until: "chat", timeout: 0.3)) != nil }
        }, "the nodes never exchanged a line")
        Thread.sleep(forTimeInterval: 0.3)
        for c in readers + [sender] { while (try? c.read(timeout: 0.15)) != nil {} }
    }

    @Test("one offset per line on every node; acks carry it; a member reconnecting to another node recovers exactly what it missed",
          arguments: [IOModeSetting.uring, .epoll])
    func crossNodeRecovery(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let nodes = try ["A", "B", "C"].map { try Self.node(redis, "o\($0)-\(mode)", mode) }
        defer { for n in nodes { n.stop() } }
        let (ra, joinedA) = try Self.member(nodes[0].port, "ra", "o")
        let (sb, joinedB) = try Self.member(nodes[1].port, "sb", "o")
        let (rc, joinedC) = try Self.member(nodes[2].port, "rc", "o")
        // One epoch for the room, whichever node a member joined.
        let epoch = try #require(joinedA["epoch"] as? String)
        #expect(joinedB["epoch"] as? String == epoch && joinedC["epoch"] as? String == epoch, "\(joinedA) \(joinedB) \(joinedC)")
        try Self.warmUp(sb, [ra, rc], room: "o")

        // The same offsets on every node, and the acks name them.
        for i in 0..<30 { try sb.send(["type": "send_chat", "room": "o", "text": "m\(i)", "id": i]) }
        var acked: [Int: Int] = [:]
        while acked.count < 30 {
            let ack = try sb.read(until: "ack", timeout: 10)
            acked[ack["id"] as? Int ?? -1] = ack["offset"] as? Int ?? -1
        }
        let onA = try Self.chats(ra, 30), onC = try Self.chats(rc, 30)
        #expect(onA.map(\.text) == (0..<30).map { "m\($0)" })
        #expect(onA.map(\.offset) == onC.map(\.offset), "A \(onA.prefix(5)) vs C \(onC.prefix(5))")
        let first = onA[0].offset
        #expect(onA.map(\.offset) == Array(first..<(first + 30)), "consecutive: \(onA.map(\.offset).prefix(10))")
        #expect((0..<30).map { acked[$0] ?? -1 } == onA.map(\.offset), "acks \(acked)")

        // ra drops mid-stream on node A; sb goes on; ra comes back on node C with since.
        let lastSeen = onA.last!.offset
        ra.closeAbruptly()
        for i in 0..<10 { try sb.send(["type": "send_chat", "room": "o", "text": "x\(i)"]) }
        _ = try Self.chats(rc, 10)
        let back = try TestClient(port: nodes[2].port)
        _ = try back.hello("ra")
        try back.send(["type": "join_room", "room": "o", "epoch": epoch, "since": lastSeen])
        for i in 10..<15 { try sb.send(["type": "send_chat", "room": "o", "text": "x\(i)"]) }
        let joined = try back.read(until: "joined")
        #expect(joined["recovered"] as? Bool == true, "\(joined)")
        #expect(joined["missed"] as? Int ?? -1 >= 10, "\(joined)")
        let got = try Self.chats(back, 15)
        #expect(got.map(\.text) == (0..<15).map { "x\($0)" }, "missed ones in order, then live ones: \(got.map(\.text))")
        #expect(got.map(\.offset) == Array((lastSeen + 1)...(lastSeen + 15)), "no duplicate, no hole: \(got.map(\.offset))")
        #expect(!sb.received.contains { $0.type == "chat" }, "the sender (echo off) never gets its own lines")
    }

    @Test("a node joining a room late recovers from the stream; past the stream's length: recovered:false with the right missed",
          arguments: [IOModeSetting.uring, .epoll])
    func recoveryFromStreamAndTrim(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = try Self.node(redis, "ta-\(mode)", mode, historySize: 20)
        let b = try Self.node(redis, "tb-\(mode)", mode, historySize: 20)
        defer { a.stop(); b.stop() }
        let (sa, joined) = try Self.member(a.port, "sa", "t")
        let epoch = try #require(joined["epoch"] as? String)
        let since = joined["offset"] as? Int ?? -1
        // Node b has no member of "t": its history comes from the stream when one joins.
        for i in 0..<5 { try sa.send(["type": "send_chat", "room": "t", "text": "s\(i)", "id": i]) }
        for _ in 0..<5 { _ = try sa.read(until: "ack", timeout: 10) }
        let (late, j1) = try { () throws -> (TestClient, JSONObject) in
            let c = try TestClient(port: b.port)
            _ = try c.hello("late")
            try c.send(["type": "join_room", "room": "t", "epoch": epoch, "since": since])
            return (c, try c.read(until: "joined"))
        }()
        #expect(j1["recovered"] as? Bool == true && j1["missed"] as? Int == 5 && j1["epoch"] as? String == epoch, "\(j1)")
        #expect(try Self.chats(late, 5).map(\.text) == (0..<5).map { "s\($0)" })
        late.close()

        // 200 more lines: the stream (MAXLEN ~ 20) and the logs no longer hold the start.
        for i in 0..<200 { try sa.send(["type": "send_chat", "room": "t", "text": "t\(i)", "id": i]) }
        var lastOffset = 0
        for _ in 0..<200 { lastOffset = try sa.read(until: "ack", timeout: 10)["offset"] as? Int ?? -1 }
        Thread.sleep(forTimeInterval: 0.3)   // b's room is gone (no members): its join primes again
        let again = try TestClient(port: b.port)
        _ = try again.hello("again")
        try again.send(["type": "join_room", "room": "t", "epoch": epoch, "since": since])
        let j2 = try again.read(until: "joined")
        #expect(j2["recovered"] as? Bool == false, "\(j2)")
        #expect(j2["missed"] as? Int == lastOffset - since, "\(j2) last \(lastOffset)")
        #expect(j2["offset"] as? Int == lastOffset, "\(j2)")
    }

    @Test("publishing while Redis is down: the sender gets cluster_unavailable with its id, counted; Redis restarted: a new epoch, recovered:false")
    func redisDownAndRestart() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = try Self.node(redis, "da", .uring)
        let b = try Self.node(redis, "db", .epoll)
        defer { a.stop(); b.stop() }
        let (sa, joined) = try Self.member(a.port, "sa", "d")
        let (rb, _) = try Self.member(b.port, "rb", "d")
        try Self.warmUp(sa, [rb], room: "d")
        let epoch = try #require(joined["epoch"] as? String)

        // The room's counter goes backwards (a replica that missed the last writes took over):
        // the node's floor keeps the next offset past every offset its members saw.
        try sa.send(["type": "send_chat", "room": "d", "text": "f0", "id": "f0"])
        let before = try #require(try sa.read(until: "ack", timeout: 5)["offset"] as? Int)
        #expect(try Self.chats(rb, 1).map(\.offset) == [before])
        _ = redis.query(["HSET", "tcpserver:meta:{d}", "seq", "0"])
        try sa.send(["type": "send_chat", "room": "d", "text": "f1", "id": "f1"])
        #expect(try sa.read(until: "ack", timeout: 5)["offset"] as? Int == before + 1, "no offset issued twice")
        #expect(try Self.chats(rb, 1).map(\.offset) == [before + 1])

        redis.kill()
        let failures = try Self.clusterStats(a)["publish_failures"] as? Int ?? 0
        try sa.send(["type": "send_chat", "room": "d", "text": "lost?", "id": "q1"])
        let err = try sa.read(until: "error", timeout: 10)
        #expect(err["code"] as? String == "cluster_unavailable" && err["id"] as? String == "q1", "\(err)")
        #expect(try ClusterIntegrationTests.eventually(5) { (try Self.clusterStats(a)["publish_failures"] as? Int ?? 0) > failures },
                "counted")
        #expect((try? rb.read(until: "chat", timeout: 0.5)) == nil, "nothing half-delivered")

        // A fresh Redis: the room's history is gone, so the room gets a new epoch.
        try redis.restart()
        #expect(try ClusterIntegrationTests.eventually(10) {
            try sa.send(["type": "send_chat", "room": "d", "text": "after restart"])
            guard let m = try? rb.read(until: "chat", timeout: 0.5) else { return false }
            return m["text"] as? String == "after restart"
        }, "cross-node delivery resumes after Redis restarts")
        let back = try TestClient(port: b.port)
        _ = try back.hello("back")
        try back.send(["type": "join_room", "room": "d", "epoch": epoch, "since": 1])
        let j = try back.read(until: "joined")
        #expect(j["recovered"] as? Bool == false && j["epoch"] as? String != epoch, "\(j)")
    }

    @Test("a subscriber that missed lines (its pub/sub connection killed) fetches them from the stream, in order",
          arguments: [IOModeSetting.uring, .epoll])
    func gapFill(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let b = try Self.node(redis, "gb-\(mode)", mode)
        defer { b.stop() }
        let (rb, joined) = try Self.member(b.port, "rb", "g")
        let epoch = try #require(joined["epoch"] as? String)
        // Another node, played by the test: it runs the chat script itself.
        func publish(_ text: String) {
            let line = "{\"type\":\"chat\",\"room\":\"g\",\"from\":\"x\",\"text\":\"\(text)\",\"ts\":1"
            _ = redis.query(["EVAL", RedisLink.chatScriptSource, "3", "tcpserver:meta:{g}", "tcpserver:log:{g}", "tcpserver:room:{g}",
                             "PUBLISH", "other", epoch, "0", "100", "300000", "0", line, "abcdef012345"])
        }
        publish("g0")
        #expect(try Self.chats(rb, 1).map(\.offset) == [1])
        let fetchesBefore = try Self.clusterStats(b)["stream_fetches"] as? Int ?? 0
        // b's pub/sub connection dies; lines published meanwhile reach it only through the stream.
        _ = redis.query(["CLIENT", "KILL", "TYPE", "pubsub"])
        for i in 1..<30 { publish("g\(i)") }
        let got = try Self.chats(rb, 29)
        #expect(got.map(\.text) == (1..<30).map { "g\($0)" }, "in order, once: \(got.map(\.text))")
        #expect(got.map(\.offset) == Array(2...30))
        for i in 30..<35 { publish("g\(i)") }
        #expect(try Self.chats(rb, 5).map(\.offset) == Array(31...35), "live again")
        var stats = try Self.clusterStats(b)
        #expect(stats["stream_fetches"] as? Int ?? 0 > fetchesBefore, "\(stats)")
        #expect(stats["lost_messages"] as? Int == 0, "\(stats)")

        // Offsets handed out that no subscriber and no stream ever got (a failover lost them):
        // the next line shows the gap, the fetch cannot fill it, so it is counted, and a
        // `since` inside the hole is answered recovered:false.
        _ = redis.query(["HINCRBY", "tcpserver:meta:{g}", "seq", "50"])
        publish("after-hole")
        let jumped = try Self.chats(rb, 1)
        #expect(jumped.map(\.offset) == [86] && jumped[0].text == "after-hole", "\(jumped)")
        #expect(try ClusterIntegrationTests.eventually(3) {
            stats = try Self.clusterStats(b)
            return stats["lost_messages"] as? Int == 50
        }, "the hole is counted: \(stats)")
        let metrics = try httpRequest(port: b.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").body
        #expect(metrics.contains("tcpserver_cluster_lost_messages_total 50"), "/metrics")
        let probe = try TestClient(port: b.port)
        _ = try probe.hello("probe")
        try probe.send(["type": "join_room", "room": "g", "epoch": epoch, "since": 40])
        let j = try probe.read(until: "joined")
        #expect(j["recovered"] as? Bool == false && j["missed"] as? Int == 46, "\(j)")
    }

    @Test("members who joined while the node could not reach Redis get the room's history as history, not as new lines",
          arguments: [IOModeSetting.uring, .epoll])
    func primeAfterLocalJoin(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let epoch = "abcdef000001"
        func publish(_ text: String) {
            let line = "{\"type\":\"chat\",\"room\":\"w\",\"from\":\"x\",\"text\":\"\(text)\",\"ts\":1"
            _ = redis.query(["EVAL", RedisLink.chatScriptSource, "3", "tcpserver:meta:{w}", "tcpserver:log:{w}", "tcpserver:room:{w}",
                             "PUBLISH", "other", epoch, "0", "100", "300000", "0", line, epoch])
        }
        for i in 1...5 { publish("old\(i)") }
        // Redis takes no commands for 2 s: the node's join cannot wait for the room's figures
        // (500 ms) and answers with its own epoch.
        _ = redis.query(["CLIENT", "PAUSE", "2000", "ALL"])
        let pauseEnds = Date().addingTimeInterval(2)
        let b = try Self.node(redis, "pb-\(mode)", mode, waitForLink: false)
        defer { b.stop() }
        let (m, joined) = try Self.member(b.port, "m", "w")
        #expect(joined["epoch"] as? String != epoch, "\(joined)")
        // Once Redis answers, the room's log takes the cluster's epoch and its 5 lines as history.
        #expect(Date() < pauseEnds, "the join was answered while Redis was paused")
        Thread.sleep(forTimeInterval: pauseEnds.timeIntervalSinceNow + 0.5)
        publish("new")
        let got = try Self.chats(m, 1)
        #expect(got.map(\.text) == ["new"] && got.map(\.offset) == [6], "\(got)")
        let probe = try TestClient(port: b.port)
        _ = try probe.hello("probe")
        try probe.send(["type": "join_room", "room": "w", "epoch": epoch, "since": 2])
        let j = try probe.read(until: "joined")
        #expect(j["recovered"] as? Bool == true && j["missed"] as? Int == 4 && j["offset"] as? Int == 6, "\(j)")
        #expect(try Self.chats(probe, 4).map(\.text) == ["old3", "old4", "old5", "new"])
    }

    @Test("a since past a lagging node's latest offset waits for the node to catch up (then bad_since)",
          arguments: [IOModeSetting.uring, .epoll])
    func laggingNodeJoin(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let b = try Self.node(redis, "lb-\(mode)", mode)
        defer { b.stop() }
        let (rb, joined) = try Self.member(b.port, "rb", "l")
        let epoch = try #require(joined["epoch"] as? String)
        func publish(_ text: String) {
            let line = "{\"type\":\"chat\",\"room\":\"l\",\"from\":\"x\",\"text\":\"\(text)\",\"ts\":1"
            _ = redis.query(["EVAL", RedisLink.chatScriptSource, "3", "tcpserver:meta:{l}", "tcpserver:log:{l}", "tcpserver:room:{l}",
                             "PUBLISH", "other", epoch, "0", "100", "300000", "0", line, "abcdef012345"])
        }
        publish("l1")
        publish("l2")
        _ = try Self.chats(rb, 2)
        // Seen up to 4 on another node; this one has 2 so far.
        let p = try TestClient(port: b.port)
        _ = try p.hello("p")
        try p.send(["type": "join_room", "room": "l", "epoch": epoch, "since": 4, "id": "j1"])
        Thread.sleep(forTimeInterval: 0.1)
        for i in 3...5 { publish("l\(i)") }
        var skipped: [JSONObject] = []
        let j = try p.read(until: "joined", timeout: 5, skipped: &skipped)
        #expect(skipped.isEmpty && j["recovered"] as? Bool == true, "\(skipped) \(j)")
        let next = try Self.chats(p, 1)
        #expect(next.map(\.text) == ["l5"] && next.map(\.offset) == [5], "exactly what follows 4: \(next)")
        // Far ahead: after the wait, bad_since with the id, then the ack.
        let q = try TestClient(port: b.port)
        _ = try q.hello("q")
        try q.send(["type": "join_room", "room": "l", "epoch": epoch, "since": 100, "id": "j2"])
        let err = try q.read(timeout: 5)
        #expect(err["code"] as? String == "bad_since" && err["id"] as? String == "j2", "\(err)")
        let ack = try q.read(timeout: 5)
        #expect(ack.type == "ack" && ack["id"] as? String == "j2", "\(ack)")
    }
}
