import Foundation
import Testing
import UringServer

/// Chat batching: consecutive lines of one room drained together go to Redis as one chat
/// script call; each sender still gets its own offset, in order, or its own error.
@Suite("Cluster: chat lines batched per room", .serialized)
struct ClusterBatchTests {
    /// Script calls Redis ran so far (EVAL before the script is loaded, EVALSHA after).
    static func scriptCalls(_ redis: RedisProcess) -> Int {
        let info = redis.query(["INFO", "commandstats"]) ?? ""
        var n = 0
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_evalsha:") || line.hasPrefix("cmdstat_eval:") {
            if let r = line.range(of: "calls="), let end = line[r.upperBound...].firstIndex(of: ",") {
                n += Int(line[r.upperBound..<end]) ?? 0
            }
        }
        return n
    }

    static func burst(room: String, prefix: String, _ n: Int) -> String {
        (0..<n).map { "{\"type\":\"send_chat\",\"room\":\"\(room)\",\"text\":\"\(prefix)\($0)\",\"id\":\"\(prefix)\($0)\"}\n" }.joined()
    }

    @Test("many lines in one write: fewer script calls than lines; every ack distinct, consecutive, in order, as members on another node get them",
          arguments: [IOModeSetting.uring, .epoll])
    func pipelinedLinesBatch(mode: IOModeSetting) throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = try ClusterOffsetsTests.node(redis, "ba-\(mode)", mode)
        let b = try ClusterOffsetsTests.node(redis, "bb-\(mode)", mode)
        defer { a.stop(); b.stop() }
        let (sa, _) = try ClusterOffsetsTests.member(a.port, "sa", "k")
        let (rb, _) = try ClusterOffsetsTests.member(b.port, "rb", "k")
        try ClusterOffsetsTests.warmUp(sa, [rb], room: "k")

        let n = 200
        let callsBefore = Self.scriptCalls(redis)
        try sa.send(Self.burst(room: "k", prefix: "p", n))
        var acks: [(id: String, offset: Int)] = []
        while acks.count < n {
            let ack = try sa.read(until: "ack", timeout: 10)
            acks.append((ack["id"] as? String ?? "?", ack["offset"] as? Int ?? -1))
        }
        let calls = Self.scriptCalls(redis) - callsBefore
        #expect(acks.map(\.id) == (0..<n).map { "p\($0)" }, "acks in send order")
        let first = acks[0].offset
        #expect(first > 0 && acks.map(\.offset) == Array(first..<(first + n)), "distinct, consecutive: \(acks.map(\.offset).prefix(10))")
        let onB = try ClusterOffsetsTests.chats(rb, n)
        #expect(onB.map(\.text) == (0..<n).map { "p\($0)" }, "inbox order kept")
        #expect(onB.map(\.offset) == acks.map(\.offset), "members on the other node see the acked offsets")
        #expect(calls > 0 && calls < n, "\(n) lines in one write took \(calls) script calls: not batched")
        #expect(try ClusterOffsetsTests.clusterStats(a)["publish_failures"] as? Int == 0)
    }

    @Test("a batch that fails (a script error, then Redis killed with the batch in flight): every sender id gets cluster_unavailable, every line counted")
    func failedBatch() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = try ClusterOffsetsTests.node(redis, "fa", .uring)
        let b = try ClusterOffsetsTests.node(redis, "fb", .epoll)
        defer { a.stop(); b.stop() }
        let (sa, _) = try ClusterOffsetsTests.member(a.port, "sa", "f")
        let (rb, _) = try ClusterOffsetsTests.member(b.port, "rb", "f")
        try ClusterOffsetsTests.warmUp(sa, [rb], room: "f")
        func failures() throws -> Int { try ClusterOffsetsTests.clusterStats(a)["publish_failures"] as? Int ?? -1 }
        func expectAllRefused(_ prefix: String, _ n: Int, _ before: Int) throws {
            // Each refused line: the error with its id, then the id's ack without an offset.
            var refused = Set<String>()
            while refused.count < n {
                let m = try sa.read(timeout: 10)
                if m.type == "ack" {
                    #expect(m["offset"] == nil, "a refused line has no offset: \(m)")
                    continue
                }
                #expect(m.type == "error" && m["code"] as? String == "cluster_unavailable", "\(m)")
                refused.insert(m["id"] as? String ?? "?")
            }
            #expect(refused == Set((0..<n).map { "\(prefix)\($0)" }))
            #expect(try ClusterIntegrationTests.eventually(5) { try failures() - before >= n }, "every line counted")
        }

        // The room's meta is not a hash any more: the script fails (WRONGTYPE) for the batch.
        _ = redis.query(["DEL", "tcpserver:meta:{f}"])
        _ = redis.query(["SET", "tcpserver:meta:{f}", "x"])
        let n = 100
        var before = try failures()
        try sa.send(Self.burst(room: "f", prefix: "e", n))
        try expectAllRefused("e", n, before)

        // Redis stops with batches written to it, then dies: their senders all get errors.
        _ = redis.query(["DEL", "tcpserver:meta:{f}"])
        redis.signal(SIGSTOP)
        before = try failures()
        try sa.send(Self.burst(room: "f", prefix: "k", n))
        Thread.sleep(forTimeInterval: 0.3)
        redis.signal(SIGKILL)  // still stopped: it never runs the calls (kill() sends SIGCONT first)
        redis.kill()
        try expectAllRefused("k", n, before)
        #expect((try? rb.read(until: "chat", timeout: 0.5)) == nil, "nothing half-delivered")
    }
}
