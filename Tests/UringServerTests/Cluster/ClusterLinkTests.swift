// RedisLink against real redis-server processes: each test starts its own redis-server on a free
// port (and kills it at the end), so the tests run in parallel without sharing state.

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Cluster: RedisLink over a real redis-server")
struct ClusterLinkTests {
    @Test("200 messages A → B arrive in order; A gets no echo; B → A works too")
    func pubSubOrdering() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = LinkUnderTest(node: "A", port: redis.port)
        let b = LinkUnderTest(node: "B", port: redis.port)
        defer { a.link.stop(); b.link.stop() }
        a.link.roomActivated("lobby")
        b.link.roomActivated("lobby")
        a.link.roomActivated("a-only")
        try requireEventually("both links subscribed", 5) {
            a.link.stats.subscribedRooms == 2 && b.link.stats.subscribedRooms == 1
        }

        for i in 0..<200 { a.publish("lobby", "{\"n\":\(i)}") }
        try requireEventually("B received 200 messages", 5) { b.deliveries.value.count >= 200 }
        let got = b.deliveries.value
        #expect(got.count == 200)
        #expect(got.map(\.room).allSatisfy { $0 == "lobby" })
        #expect(got.map(\.body) == (0..<200).map { "{\"n\":\($0)}" }, "B must receive A's messages in order")
        #expect(eventually(2) { a.link.stats.published == 200 })

        b.publish("lobby", "from-b")
        b.publish("a-only", "b-to-a-only")  // B is not subscribed there itself
        try requireEventually("A received B's messages", 3) { a.deliveries.value.count == 2 }
        #expect(a.deliveries.value.map(\.body) == ["from-b", "b-to-a-only"])
        #expect(a.deliveries.value.map(\.room) == ["lobby", "a-only"])
        Thread.sleep(forTimeInterval: 0.2)
        #expect(!a.deliveries.value.contains { $0.body.hasPrefix("{\"n\":") }, "A must not get its own messages back")
        #expect(b.deliveries.value.count == 200, "B must not get its own messages back")
        #expect(b.link.stats.received == 200 && a.link.stats.received == 2)

        // After B deactivates the room it no longer receives it.
        b.link.roomDeactivated("lobby")
        try requireEventually("B unsubscribed", 3) { b.link.stats.subscribedRooms == 0 }
        a.publish("lobby", "after-leave")
        Thread.sleep(forTimeInterval: 0.2)
        #expect(b.deliveries.value.count == 200)
        #expect(a.link.stats.publishFailures == 0 && b.link.stats.publishFailures == 0)
    }

    @Test("member counts sum over live nodes; a crashed node drops out after its TTL; user registry")
    func memberCountsAndLiveness() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = LinkUnderTest(node: "A", port: redis.port)
        let b = LinkUnderTest(node: "B", port: redis.port)
        let c = LinkUnderTest(node: "C", port: redis.port)
        defer { a.link.stop(); b.link.stop(); c.link.stop() }
        try requireEventually("links up", 5) { a.link.stats.connected && b.link.stats.connected && c.link.stats.connected }

        #expect(a.link.clusterMemberCount(room: "r") == nil, "unknown before the room is tracked")
        for (l, n) in [(a, 3), (b, 2), (c, 4)] {
            l.link.roomActivated("r")
            l.link.setLocalMemberCount(room: "r", count: n)
        }
        try requireEventually("count 9 on every node", 3) {
            [a, b, c].allSatisfy { $0.link.clusterMemberCount(room: "r") == 9 }
        }
        #expect(redis.query(["HGET", "tcpserver:members:{r}", "A"])?.hasPrefix("3:") == true, "count:expiry")

        a.link.userConnected("alice")
        a.link.userConnected("alice")  // two connections of one user
        b.link.userConnected("bob")
        try requireEventually("user keys written", 2) {
            redis.query(["GET", "tcpserver:user:alice"]) == "A" && redis.query(["GET", "tcpserver:user:bob"]) == "B"
        }
        a.link.userDisconnected("alice")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(redis.query(["GET", "tcpserver:user:alice"]) == "A", "alice still has a connection on A")
        a.link.userDisconnected("alice")
        try requireEventually("alice's key removed", 2) { redis.query(["GET", "tcpserver:user:alice"]) == nil }

        // C leaves cleanly: its field and heartbeat key go away at once.
        c.link.stop()
        try requireEventually("count 5 after C's clean stop", 2) {
            a.link.clusterMemberCount(room: "r") == 5 && b.link.clusterMemberCount(room: "r") == 5
        }
        #expect(redis.query(["EXISTS", "tcpserver:node:C"]) == "0")

        // B crashes: no cleanup, its keys stay until the heartbeat key's TTL runs out.
        b.link.stop(cleanup: false)
        #expect(redis.query(["HGET", "tcpserver:members:{r}", "B"])?.hasPrefix("2:") == true)
        #expect(redis.query(["GET", "tcpserver:user:bob"]) == "B")
        let crashed = Date()
        try requireEventually("A's count drops to 3 after B's TTL", 4) { a.link.clusterMemberCount(room: "r") == 3 }
        let took = Date().timeIntervalSince(crashed)
        #expect(took >= 0.3, "B counted as dead before its TTL (\(took) s)")
        try requireEventually("bob's key expired", 2) { redis.query(["GET", "tcpserver:user:bob"]) == nil }
        #expect(redis.query(["HGET", "tcpserver:members:{r}", "B"]) == nil, "dead node's field is garbage-collected")

        // A's own count changes are reflected right away.
        a.link.setLocalMemberCount(room: "r", count: 1)
        try requireEventually("A's count 1", 2) { a.link.clusterMemberCount(room: "r") == 1 }
        a.link.setLocalMemberCount(room: "r", count: 0)
        try requireEventually("HDEL at 0", 2) { redis.query(["HGET", "tcpserver:members:{r}", "A"]) == nil }
        #expect(eventually(2) { a.link.clusterMemberCount(room: "r") == 0 })
    }

    @Test("redis killed: publish fails fast and is counted; redis restarted: link recovers")
    func redisRestart() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        let a = LinkUnderTest(node: "A", port: redis.port)
        let b = LinkUnderTest(node: "B", port: redis.port)
        defer { a.link.stop(); b.link.stop() }
        a.link.roomActivated("r")
        b.link.roomActivated("r")
        a.link.setLocalMemberCount(room: "r", count: 3)
        b.link.setLocalMemberCount(room: "r", count: 2)
        try requireEventually("subscribed", 5) { a.link.stats.subscribedRooms == 1 && b.link.stats.subscribedRooms == 1 }
        a.publish("r", "before")
        try requireEventually("message before the kill", 3) { b.deliveries.value.map(\.body) == ["before"] }
        try requireEventually("count 5", 3) { a.link.clusterMemberCount(room: "r") == 5 }

        redis.kill()
        // Publishing while the link has not noticed yet, and after: never blocks.
        var durations: [Double] = []
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: 512)
        let deadline = Date().addingTimeInterval(3)
        var i = 0
        while (a.link.stats.connected || i < 1000) && Date() < deadline {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body.withUnsafeBytes { a.link.publish(room: "r", body: $0) }
            durations.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            i += 1
            if i % 100 == 0 { Thread.sleep(forTimeInterval: 0.001) }
        }
        #expect(!a.link.stats.connected, "link must notice that redis is gone")
        #expect(a.link.clusterMemberCount(room: "r") == nil, "count unknown while disconnected")
        let sorted = durations.sorted()
        let p99 = sorted[sorted.count * 99 / 100]
        #expect(p99 < 1.0, "publish p99 \(p99) ms while redis is down")
        #expect(sorted.last! < 20, "publish max \(sorted.last!) ms while redis is down")
        let failures = a.link.stats.publishFailures
        #expect(failures >= 1000 - 1 && failures <= i, "failures \(failures) of \(i) publishes")

        // Same port again: both links reconnect (backoff ≤ 2 s), re-subscribe and re-register.
        try redis.restart()
        try requireEventually("both links reconnected and re-subscribed", 6) {
            a.link.stats.connected && b.link.stats.connected
                && a.link.stats.subscribedRooms == 1 && b.link.stats.subscribedRooms == 1
        }
        #expect(a.link.stats.reconnects == 1 && b.link.stats.reconnects == 1)
        for j in 0..<50 { a.publish("r", "after-\(j)") }
        try requireEventually("messages flow again", 3) { b.deliveries.value.count == 51 }
        #expect(b.deliveries.value.map(\.body).dropFirst() == ArraySlice((0..<50).map { "after-\($0)" }))
        try requireEventually("presence re-written after restart", 3) {
            a.link.clusterMemberCount(room: "r") == 5 && b.link.clusterMemberCount(room: "r") == 5
        }
        #expect(a.link.stats.publishFailures == failures, "no new failures once reconnected")
    }

    @Test("stalled redis (SIGSTOP): publish stays non-blocking, the queue is bounded, the link recovers")
    func stalledRedis() throws {
        let redis = try RedisProcess()
        defer { redis.kill() }
        var s = ClusterSettings(redisHost: "127.0.0.1", redisPort: redis.port, nodeId: "A",
                                heartbeatMillis: 200, nodeTTLMillis: 600)
        s.maxPendingBytes = 256 << 10
        s.replyTimeoutMillis = 1000
        let a = LinkUnderTest(settings: s)
        defer { a.link.stop() }
        a.link.roomActivated("r")
        try requireEventually("subscribed", 5) { a.link.stats.subscribedRooms == 1 }

        redis.signal(SIGSTOP)
        let body = [UInt8](repeating: UInt8(ascii: "y"), count: 8192)
        var worst = 0.0
        for _ in 0..<3000 {  // 24 MB: more than the socket buffers and the pending cap together
            let t0 = DispatchTime.now().uptimeNanoseconds
            body.withUnsafeBytes { a.link.publish(room: "r", body: $0) }
            worst = max(worst, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        #expect(worst < 20, "publish took \(worst) ms against a stalled redis")
        #expect(a.link.stats.publishFailures > 0, "the bounded queue must overflow into publishFailures")
        try requireEventually("stalled redis detected by the reply timeout", 4) { !a.link.stats.connected }
        redis.signal(SIGCONT)
        try requireEventually("link back up", 5) { a.link.stats.connected && a.link.stats.subscribedRooms == 1 }
        let before = a.link.stats.published
        a.publish("r", "ok")
        try requireEventually("publish acknowledged again", 3) { a.link.stats.published == before + 1 }
    }

    @Test("redis not running at start: start() returns at once, link connects when redis appears")
    func startBeforeRedis() throws {
        let redis = try RedisProcess(startNow: false)
        defer { redis.kill() }
        let t0 = Date()
        let a = LinkUnderTest(node: "A", port: redis.port)
        defer { a.link.stop() }
        #expect(Date().timeIntervalSince(t0) < 0.5)
        a.publish("r", "lost")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(!a.link.stats.connected && a.link.stats.publishFailures == 1)
        try redis.restart()
        a.link.roomActivated("r")
        try requireEventually("connected", 5) { a.link.stats.connected && a.link.stats.subscribedRooms == 1 }
        #expect(a.link.stats.reconnects == 0, "first connection is not a reconnect")
    }

    @Test("a server speaking garbage: no crash, the link keeps retrying, publish and stop stay prompt")
    func malformedReplies() throws {
        let fake = try GarbageServer()
        defer { fake.stop() }
        let a = LinkUnderTest(node: "A", port: fake.port)
        a.link.roomActivated("r")
        a.link.setLocalMemberCount(room: "r", count: 1)
        a.link.userConnected("u")
        let deadline = Date().addingTimeInterval(1.5)
        var worst = 0.0
        while Date() < deadline {
            let t0 = DispatchTime.now().uptimeNanoseconds
            a.publish("r", "x")
            worst = max(worst, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
            Thread.sleep(forTimeInterval: 0.002)
        }
        #expect(fake.accepted.value >= 4, "link should have kept reconnecting (\(fake.accepted.value) connections)")
        #expect(a.link.stats.received == 0)
        #expect(a.link.clusterMemberCount(room: "r") == nil)
        #expect(worst < 20, "publish took \(worst) ms")
        let t0 = Date()
        a.link.stop()
        #expect(Date().timeIntervalSince(t0) < 1.5, "stop() must return promptly")
    }
}

// MARK: - helpers

private struct Delivery: Sendable {
    let room: String
    let body: String
}

private final class ClusterLocked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return v }
    func mutate(_ f: (inout T) -> Void) { lock.lock(); f(&v); lock.unlock() }
}

/// A started RedisLink plus what it delivered.
private final class LinkUnderTest: Sendable {
    let link: RedisLink
    let deliveries = ClusterLocked<[Delivery]>([])

    convenience init(node: String, port: Int) {
        self.init(settings: ClusterSettings(redisHost: "127.0.0.1", redisPort: port, nodeId: node,
                                            heartbeatMillis: 200, nodeTTLMillis: 600))
    }

    init(settings: ClusterSettings) {
        let box = deliveries
        link = RedisLink(settings: settings, logger: Logger(level: .warning)) { room, body in
            box.mutate { $0.append(Delivery(room: room, body: String(decoding: body, as: UTF8.self))) }
        }
        link.start()
    }

    func publish(_ room: String, _ body: String) {
        var b = body
        b.withUTF8 { link.publish(room: room, body: UnsafeRawBufferPointer($0)) }
    }
}

private func eventually(_ seconds: Double, _ cond: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        if try cond() { return true }
        if Date() >= deadline { return false }
        Thread.sleep(forTimeInterval: 0.01)
    }
}

private func requireEventually(_ what: String, _ seconds: Double, sourceLocation: SourceLocation = #_sourceLocation,
                               _ cond: () throws -> Bool) throws {
    if try eventually(seconds, cond) { return }
    Issue.record("timed out after \(seconds) s waiting for: \(what)", sourceLocation: sourceLocation)
    throw ClusterTestError(description: "timed out waiting for: \(what)")
}

/// A TCP server that answers every connection with malformed or mistyped RESP, then hangs up.
private final class GarbageServer: @unchecked Sendable {
    let port: Int
    let accepted = ClusterLocked(0)
    private let fd: Int32
    private let stopping = ClusterLocked(false)
    private let done = DispatchSemaphore(value: 0)
    static let replies = [
        "*3\r\n$7\r\nmessage\r\n$5\r\nbogus\r\n:1\r\n",  // message on a foreign channel, integer payload
        "*3\r\n$7\r\nmessage\r\n$18\r\ntcpserver:room:{r}\r\n$5\r\nno-nl\r\n",  // no origin line
        "*1\r\n:5\r\n$-1\r\n-ERR nope\r\n+PONG\r\n:7\r\n*-1\r\n",  // wrong types for every expectation
        "$5\r\nab",  // truncated, then
        "?bogus\r\n",  // an unknown type byte: protocol error
    ]

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var tv = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        _ = inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0, listen(fd, 16) == 0 else { throw ClusterTestError(description: "fake server: bind/listen failed") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        port = Int(UInt16(bigEndian: addr.sin_port))
        self.fd = fd
        let t = Thread { [self] in serve() }
        t.start()
    }

    private func serve() {
        var buf = [UInt8](repeating: 0, count: 65536)
        while !stopping.value {
            let c = accept(fd, nil, nil)
            if c < 0 { continue }
            accepted.mutate { $0 += 1 }
            var tv = timeval(tv_sec: 0, tv_usec: 50_000)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            _ = recv(c, &buf, buf.count, 0)
            for r in Self.replies {
                _ = r.withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                usleep(2000)
            }
            _ = recv(c, &buf, buf.count, 0)
            close(c)
        }
        done.signal()
    }

    func stop() {
        stopping.mutate { $0 = true }
        _ = done.wait(timeout: .now() + 2)
        close(fd)
    }
}
