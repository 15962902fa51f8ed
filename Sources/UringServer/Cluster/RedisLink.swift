import CLinux
import Glibc
import Synchronization

/// Where the cluster's Redis lives and how this node presents itself there.
public struct ClusterSettings: Sendable {
    public var redisHost: String
    public var redisPort: Int
    /// Unique per node; must not contain a newline (it prefixes every published message).
    public var nodeId: String
    /// How often the node refreshes its heartbeat key, user keys and room counts.
    public var heartbeatMillis = 1000
    /// TTL of the heartbeat key `<prefix>:node:<nodeId>` (and of user keys): a node whose key
    /// expired is dead and its member counts no longer count.
    public var nodeTTLMillis = 3000
    public var channelPrefix = "tcpserver"
    /// Publishes accepted but not yet handed to the socket are capped at this many bytes; past
    /// it, `publish` counts a failure instead of queueing (Redis too slow).
    public var maxPendingBytes = 8 << 20
    /// A connection whose commands get no reply for this long is considered dead.
    public var replyTimeoutMillis = 5000
    /// A connect attempt that does not complete within this is a failure.
    public var connectTimeoutMillis = 2000

    public init(redisHost: String = "127.0.0.1", redisPort: Int = 6379, nodeId: String,
                heartbeatMillis: Int = 1000, nodeTTLMillis: Int = 3000, channelPrefix: String = "tcpserver") {
        self.redisHost = redisHost
        self.redisPort = redisPort
        self.nodeId = nodeId
        self.heartbeatMillis = heartbeatMillis
        self.nodeTTLMillis = nodeTTLMillis
        self.channelPrefix = channelPrefix
    }
}

public struct ClusterStats: Sendable {
    public var connected: Bool
    /// Times the link came back up after having been up before.
    public var reconnects: Int
    /// PUBLISH commands Redis acknowledged.
    public var published: Int
    /// Messages from other nodes handed to `deliver`.
    public var received: Int
    /// Cross-node messages that could not be published (Redis down, too slow, or the link went
    /// down before Redis acknowledged them).
    public var publishFailures: Int
    /// Channels the pub/sub connection is subscribed to (as confirmed by Redis).
    public var subscribedRooms: Int
}

/// The node's link to Redis for cluster mode: room messages over pub/sub, member counts in
/// per-room presence hashes, node liveness through a heartbeat key, and a user → node registry.
///
/// Threads: everything network-facing runs on one dedicated link thread (its own two
/// non-blocking sockets and poll()). The public methods are called from reactor threads and only
/// append to a mutex-protected inbox and write an eventfd (when the inbox goes from empty to
/// non-empty); they never block on the network. `deliver` is called on the link thread.
///
/// Redis layout (`P` = channelPrefix):
/// - channel `P:room:<room>`, message `<nodeId>\n<body>`; own echoes are dropped.
/// - hash `P:members:<room>`: field nodeId → this node's member count (HDEL at 0).
/// - key `P:node:<nodeId>` with PX nodeTTLMillis, refreshed every heartbeat.
/// - key `P:user:<user>` = nodeId with PX nodeTTLMillis, refreshed every heartbeat.
public final class RedisLink: @unchecked Sendable {
    public let settings: ClusterSettings
    let logger: Logger
    private let deliver: @Sendable (_ room: String, _ body: [UInt8]) -> Void

    // MARK: shared between callers and the link thread

    private struct Inbox {
        /// RESP-formatted PUBLISH commands, ready to write.
        var publishes: [UInt8] = []
        var publishCount = 0
        var ops: [Op] = []
        /// Set by stop(): whether to remove this node's keys first.
        var stop: Bool?
        var isEmpty: Bool { publishCount == 0 && ops.isEmpty && stop == nil }
    }

    enum Op {
        case activate(String)
        case deactivate(String)
        case count(String, Int)
        case userOn(String)
        case userOff(String)
    }

    private let inbox = Locked(Inbox())
    private let wakeFD: Int32
    private let connected = Atomic<Bool>(false)
    private let reconnects = Atomic<Int>(0)
    private let published = Atomic<Int>(0)
    private let received = Atomic<Int>(0)
    private let publishFailures = Atomic<Int>(0)
    private let subscribedRooms = Atomic<Int>(0)
    private let failuresLoggedAt = Atomic<Int>(Int.min / 2)
    private let failuresLogged = Atomic<Int>(0)
    /// room → cluster-wide member count as last fetched; empty while disconnected.
    private let clusterCounts = Locked<[String: Int]>([:])
    /// The other nodes' part of each total (total minus the count this node wrote with it).
    private let remoteCounts = Locked<[String: Int]>([:])
    private let thread = Locked<(started: Bool, tid: pthread_t?)>((false, nil))

    private let channelPrefix: [UInt8]  // "P:room:"
    private let origin: [UInt8]  // "<nodeId>\n"
    private let nodeKey: String
    private let nodeKeyPrefix: String  // "P:node:"

    // MARK: link thread only

    private let cmd = RedisConnection(name: "command")
    private let sub = RedisConnection(name: "pubsub")
    private var up = false
    private var everUp = false
    private var loggedDown = false
    private var backoffMillis = 100
    private var upSince = 0
    private var nextAttemptAt = 0
    private var connectDeadline = 0
    private var nextHeartbeatAt = 0
    /// What each outstanding reply on the command connection is for, in order.
    private var expect: [Expect] = []
    private var expectHead = 0
    private var cmdWaitingSince = 0
    private var subPings = 0
    private var subWaitingSince = 0
    private var scriptSHA: [String?] = [nil, nil]
    private var scriptsLoading = false
    private var activeRooms = Set<String>()
    private var localCounts: [String: Int] = [:]
    private var users: [String: Int] = [:]
    private var dirtyRooms = Set<String>()
    private var spare: [UInt8] = []

    private enum Expect {
        case publishes(Int)
        case ignore
        case scriptLoad(Int)
        /// The room, and the count this node wrote in the same script run.
        case roomCount(String, Int)
    }

    public init(settings: ClusterSettings, logger: Logger,
                deliver: @escaping @Sendable (_ room: String, _ body: [UInt8]) -> Void) {
        precondition(!settings.nodeId.isEmpty && !settings.nodeId.utf8.contains(10),
                     "cluster nodeId must be non-empty and contain no newline")
        self.settings = settings
        self.logger = logger
        self.deliver = deliver
        channelPrefix = Array("\(settings.channelPrefix):room:".utf8)
        origin = Array(settings.nodeId.utf8) + [10]
        nodeKeyPrefix = "\(settings.channelPrefix):node:"
        nodeKey = nodeKeyPrefix + settings.nodeId
        // -1 if eventfd fails: the link thread then polls with a short timeout instead.
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
    }

    deinit {
        if wakeFD >= 0 { close(wakeFD) }
    }

    // MARK: public API (any thread, non-blocking)

    public func start() {
        let go = thread.withLock { t in
            if t.started { return false }
            t.started = true
            return true
        }
        guard go else { return }
        let tid = spawnThread(name: "redis-link") { self.run() }
        thread.withLock { $0.tid = tid }
    }

    /// Stops the link thread and joins it. With `cleanup` (the default) this node's heartbeat
    /// key, presence fields and user keys are removed first (best effort, at most ~0.5 s);
    /// `cleanup: false` just drops the connections, as a crash would.
    public func stop(cleanup: Bool = true) {
        guard let tid = thread.withLock({ t -> pthread_t? in
            defer { t.tid = nil }
            return t.tid
        }) else { return }
        inbox.withLock { $0.stop = cleanup }
        wake()
        pthread_join(tid, nil)
    }

    public func publish(room: String, body: UnsafeRawBufferPointer) {
        guard connected.load(ordering: .acquiring) else {
            countFailures(1, reason: "redis unavailable")
            return
        }
        let max = settings.maxPendingBytes
        let (accepted, wasEmpty) = inbox.withLock { box -> (Bool, Bool) in
            if box.publishes.count >= max { return (false, false) }
            let wasEmpty = box.isEmpty
            RESP.appendPublish(&box.publishes, channelPrefix: channelPrefix, room: room, origin: origin, body: body)
            box.publishCount += 1
            return (true, wasEmpty)
        }
        if !accepted {
            countFailures(1, reason: "redis too slow, publish queue full")
        } else if wasEmpty {
            wake()
        }
    }

    public func roomActivated(_ room: String) { post(.activate(room)) }
    public func roomDeactivated(_ room: String) { post(.deactivate(room)) }
    public func setLocalMemberCount(room: String, count: Int) { post(.count(room, max(0, count))) }
    public func userConnected(_ user: String) { post(.userOn(user)) }
    public func userDisconnected(_ user: String) { post(.userOff(user)) }

    public func clusterMemberCount(room: String) -> Int? {
        clusterCounts.withLock { $0[room] }
    }

    /// Members on the other live nodes, as last fetched: add this node's current count to get
    /// the cluster-wide figure without counting this node's recent changes twice.
    public func remoteMemberCount(room: String) -> Int? {
        remoteCounts.withLock { $0[room] }
    }

    /// Every cluster-wide count the link currently knows (rooms active on this node).
    public func clusterMemberCounts() -> [String: Int] {
        clusterCounts.withLock { $0 }
    }

    public var stats: ClusterStats {
        ClusterStats(
            connected: connected.load(ordering: .relaxed),
            reconnects: reconnects.load(ordering: .relaxed),
            published: published.load(ordering: .relaxed),
            received: received.load(ordering: .relaxed),
            publishFailures: publishFailures.load(ordering: .relaxed),
            subscribedRooms: subscribedRooms.load(ordering: .relaxed))
    }

    private func post(_ op: Op) {
        // Wakes on the first op even when publishes are waiting (the link may be holding those
        // back while the command socket drains).
        let wasEmpty = inbox.withLock { box in
            let e = box.ops.isEmpty
            box.ops.append(op)
            return e
        }
        if wasEmpty { wake() }
    }

    private func wake() {
        guard wakeFD >= 0 else { return }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Counts failed publishes and logs at most one line per 5 s (with the count since the last).
    private func countFailures(_ n: Int, reason: String) {
        guard n > 0 else { return }
        let total = publishFailures.wrappingAdd(n, ordering: .relaxed).newValue
        let now = Self.nowMillis()
        let last = failuresLoggedAt.load(ordering: .relaxed)
        guard now - last >= 5000,
              failuresLoggedAt.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        let before = failuresLogged.exchange(total, ordering: .relaxed)
        logger.warning("cluster publish failed", [
            "reason": reason, "failed": String(total - before), "failed_total": String(total),
        ])
    }

    static func nowMillis() -> Int { Int(Clock.monoNanos() / 1_000_000) }

    // MARK: link thread

    private func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        logger.info("redis link starting", [
            "redis": "\(settings.redisHost):\(settings.redisPort)", "node": settings.nodeId,
        ])
        nextAttemptAt = Self.nowMillis()
        var fds = [pollfd](repeating: pollfd(), count: 3)
        while true {
            var now = Self.nowMillis()
            if let cleanup = takeInbox() {
                shutdown(cleanup: cleanup, buffer: buffer)
                return
            }
            if !up {
                if cmd.state == .closed && sub.state == .closed {
                    if now >= nextAttemptAt { attemptConnect(now) }
                } else if now >= connectDeadline {
                    connectFailed("connect timed out")
                }
            }
            if up {
                if now >= nextHeartbeatAt { heartbeat(now) }
                sendDirtyRooms()
                if expectHead < expect.count && now - cmdWaitingSince > settings.replyTimeoutMillis {
                    linkDown("redis command connection not responding")
                } else if subPings > 0 && now - subWaitingSince > settings.replyTimeoutMillis {
                    linkDown("redis pub/sub connection not responding")
                }
            }
            flushBoth()

            // Poll.
            var n = 0
            fds[n] = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
            n += 1
            let cmdSlot = cmd.state == .closed ? -1 : n
            if cmdSlot >= 0 {
                fds[n] = pollfd(fd: cmd.fd, events: Int16(POLLIN) | (cmd.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
                n += 1
            }
            let subSlot = sub.state == .closed ? -1 : n
            if subSlot >= 0 {
                fds[n] = pollfd(fd: sub.fd, events: Int16(POLLIN) | (sub.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
                n += 1
            }
            var deadline: Int
            if up {
                deadline = nextHeartbeatAt
            } else if cmd.state == .closed && sub.state == .closed {
                deadline = nextAttemptAt
            } else {
                deadline = connectDeadline
            }
            if wakeFD < 0 { deadline = min(deadline, now + 10) }
            let timeout = Int32(max(0, min(1000, deadline - now)))
            let rc = poll(&fds, nfds_t(n), timeout)
            if rc < 0 {
                if currentErrno() != EINTR { usleep(1000) }
                continue
            }
            if rc == 0 { continue }
            now = Self.nowMillis()
            if fds[0].revents != 0 {
                var v: UInt64 = 0
                _ = read(wakeFD, &v, 8)
            }
            let errMask = Int16(POLLERR) | Int16(POLLHUP) | Int16(POLLNVAL)
            for (conn, slot) in [(cmd, cmdSlot), (sub, subSlot)] where slot >= 0 {
                let ev = fds[slot].revents
                if ev == 0 { continue }
                do throws(RedisLinkError) {
                    if conn.state == .connecting {
                        try conn.finishConnect()
                        if cmd.state == .up && sub.state == .up { linkUp(now) }
                        continue
                    }
                    guard conn.state == .up else { continue }
                    if ev & (Int16(POLLIN) | errMask) != 0 {
                        if conn === cmd {
                            try conn.read(buffer: buffer) { r throws(RedisLinkError) in try onCommandReply(r) }
                        } else {
                            try conn.read(buffer: buffer) { r throws(RedisLinkError) in try onPubSubReply(r) }
                        }
                    }
                    if ev & Int16(POLLOUT) != 0 { try conn.flush() }
                } catch {
                    if up { linkDown(error.description) } else { connectFailed(error.description) }
                    break
                }
            }
        }
    }

    /// Applies queued operations and moves queued publishes into the command pipeline.
    /// Returns non-nil when stop() was called (the cleanup flag).
    private func takeInbox() -> Bool? {
        let room = up && cmd.unwritten < 256 << 10
        var ops: [Op] = []
        var pubCount = 0
        var stop: Bool?
        inbox.withLock { box in
            swap(&ops, &box.ops)
            stop = box.stop
            if box.publishCount > 0 && (room || !up) {
                pubCount = box.publishCount
                box.publishCount = 0
                swap(&box.publishes, &spare)
            }
        }
        if pubCount > 0 {
            if up {
                if cmd.out.isEmpty {
                    swap(&cmd.out, &spare)
                } else {
                    cmd.out.append(contentsOf: spare)
                }
                expectReply(.publishes(pubCount))
            } else {
                countFailures(pubCount, reason: "redis unavailable")
            }
            spare.removeAll(keepingCapacity: spare.capacity <= 4 << 20)
        }
        for op in ops { apply(op) }
        return stop
    }

    private func apply(_ op: Op) {
        switch op {
        case .activate(let room):
            if activeRooms.insert(room).inserted {
                if up { sendSubscribe("SUBSCRIBE", [room]) }
                dirtyRooms.insert(room)
            }
        case .deactivate(let room):
            if activeRooms.remove(room) != nil {
                if up { sendSubscribe("UNSUBSCRIBE", [room]) }
                // The last local member left: this node's count is 0 (HDEL), whether or not
                // setLocalMemberCount(0) was called too.
                if localCounts.removeValue(forKey: room) != nil { dirtyRooms.insert(room) }
                _ = clusterCounts.withLock { $0.removeValue(forKey: room) }
                _ = remoteCounts.withLock { $0.removeValue(forKey: room) }
            }
        case .count(let room, let n):
            if localCounts[room] != n {
                localCounts[room] = n > 0 ? n : nil
                dirtyRooms.insert(room)
            }
        case .userOn(let user):
            users[user, default: 0] += 1
            if users[user] == 1 && up { sendUserKey(user) }
        case .userOff(let user):
            guard let c = users[user] else { return }
            if c > 1 {
                users[user] = c - 1
            } else {
                users[user] = nil
                if up { sendUserDelete(user) }
            }
        }
    }

    // MARK: connection state

    private func attemptConnect(_ now: Int) {
        let addr: RedisAddress
        switch RedisAddress.resolve(host: settings.redisHost, port: settings.redisPort) {
        case .success(let a): addr = a
        case .failure(let e):
            connectFailed(e.description)
            return
        }
        do throws(RedisLinkError) {
            try cmd.connect(addr)
            try sub.connect(addr)
        } catch {
            connectFailed(error.description)
            return
        }
        connectDeadline = now + settings.connectTimeoutMillis
        if cmd.state == .up && sub.state == .up { linkUp(now) }
    }

    private func connectFailed(_ why: String) {
        cmd.close()
        sub.close()
        if !loggedDown {
            loggedDown = true
            logger.warning("redis unreachable, retrying", [
                "redis": "\(settings.redisHost):\(settings.redisPort)", "error": why,
            ])
        } else {
            logger.debug("redis connect failed", ["error": why, "retry_ms": String(backoffMillis)])
        }
        scheduleRetry()
    }

    private func scheduleRetry() {
        nextAttemptAt = Self.nowMillis() + backoffMillis
        backoffMillis = min(backoffMillis * 2, 2000)
    }

    private func linkUp(_ now: Int) {
        up = true
        upSince = now
        loggedDown = false
        if everUp { reconnects.wrappingAdd(1, ordering: .relaxed) }
        everUp = true
        expect.removeAll(keepingCapacity: true)
        expectHead = 0
        subPings = 0
        scriptSHA = [nil, nil]
        scriptsLoading = false
        loadScripts()
        heartbeat(now)  // node key first, then user keys and every tracked room's presence
        dirtyRooms.removeAll()
        if !activeRooms.isEmpty { sendSubscribe("SUBSCRIBE", Array(activeRooms)) }
        connected.store(true, ordering: .releasing)
        logger.info("redis link up", [
            "redis": "\(settings.redisHost):\(settings.redisPort)", "node": settings.nodeId,
            "rooms": String(activeRooms.count), "reconnects": String(reconnects.load(ordering: .relaxed)),
        ])
    }

    private func linkDown(_ why: String) {
        connected.store(false, ordering: .releasing)
        let wasUp = up
        up = false
        // Publishes written but not acknowledged, and those still queued, are lost.
        var lost = 0
        for e in expect[expectHead...] { if case .publishes(let n) = e { lost += n } }
        lost += inbox.withLock { box in
            let n = box.publishCount
            box.publishCount = 0
            box.publishes.removeAll(keepingCapacity: box.publishes.capacity <= 4 << 20)
            return n
        }
        countFailures(lost, reason: "redis connection lost")
        expect.removeAll(keepingCapacity: true)
        expectHead = 0
        subPings = 0
        subscribedRooms.store(0, ordering: .relaxed)
        clusterCounts.withLock { $0.removeAll() }
        remoteCounts.withLock { $0.removeAll() }
        cmd.close()
        sub.close()
        // The backoff starts over only after a link that held for a while, so a server that
        // accepts and then drops every connection is retried at most every 2 s.
        if wasUp && Self.nowMillis() - upSince >= 2000 { backoffMillis = 100 }
        if wasUp {
            loggedDown = true
            logger.warning("redis link down, reconnecting", ["error": why, "unacknowledged_publishes": String(lost)])
        }
        scheduleRetry()
    }

    private func flushBoth() {
        do throws(RedisLinkError) {
            try cmd.flush()
            try sub.flush()
        } catch {
            if up { linkDown(error.description) } else { connectFailed(error.description) }
        }
    }

    // MARK: commands

    private func expectReply(_ e: Expect) {
        if expectHead == expect.count {
            cmdWaitingSince = Self.nowMillis()
            if expectHead > 0 {
                expect.removeAll(keepingCapacity: true)
                expectHead = 0
            }
        }
        expect.append(e)
    }

    private func command(_ args: [String], _ e: Expect = .ignore) {
        RESP.appendCommand(&cmd.out, args)
        expectReply(e)
    }

    private func loadScripts() {
        guard !scriptsLoading else { return }
        scriptsLoading = true
        for (i, src) in Self.scripts.enumerated() { command(["SCRIPT", "LOAD", src], .scriptLoad(i)) }
    }

    private func evalScript(_ i: Int, keys: [String], args: [String], _ e: Expect) {
        if let sha = scriptSHA[i] {
            command(["EVALSHA", sha, String(keys.count)] + keys + args, e)
        } else {
            command(["EVAL", Self.scripts[i], String(keys.count)] + keys + args, e)
        }
    }

    private func heartbeat(_ now: Int) {
        nextHeartbeatAt = now + max(10, settings.heartbeatMillis)
        let ttl = String(settings.nodeTTLMillis)
        command(["SET", nodeKey, String(Clock.wallMillis()), "PX", ttl])
        for user in users.keys { sendUserKey(user) }
        for room in activeRooms { sendPresence(room) }
        for room in localCounts.keys where !activeRooms.contains(room) { sendPresence(room) }
        dirtyRooms.removeAll()
        RESP.appendCommand(&sub.out, ["PING"])
        if subPings == 0 { subWaitingSince = now }
        subPings += 1
    }

    private func sendDirtyRooms() {
        guard !dirtyRooms.isEmpty else { return }
        for room in dirtyRooms {
            if activeRooms.contains(room) || localCounts[room] != nil {
                sendPresence(room)
            } else {
                // Neither active nor counted any more: just take this node's field out.
                command(["HDEL", "\(settings.channelPrefix):members:\(room)", settings.nodeId])
            }
        }
        dirtyRooms.removeAll()
    }

    /// Writes this node's count for `room` (HSET, or HDEL at 0) and fetches the live total.
    private func sendPresence(_ room: String) {
        let p = settings.channelPrefix
        let mine = localCounts[room] ?? 0
        evalScript(0, keys: ["\(p):members:\(room)"],
                   args: [nodeKeyPrefix, settings.nodeId, String(mine),
                          String(max(60_000, settings.nodeTTLMillis * 10))],
                   .roomCount(room, mine))
    }

    private func sendUserKey(_ user: String) {
        command(["SET", "\(settings.channelPrefix):user:\(user)", settings.nodeId, "PX", String(settings.nodeTTLMillis)])
    }

    private func sendUserDelete(_ user: String) {
        evalScript(1, keys: ["\(settings.channelPrefix):user:\(user)"], args: [settings.nodeId], .ignore)
    }

    private func sendSubscribe(_ verb: String, _ rooms: [String]) {
        let p = settings.channelPrefix
        var i = 0
        while i < rooms.count {
            let chunk = rooms[i..<min(rooms.count, i + 512)]
            RESP.appendCommand(&sub.out, [verb] + chunk.map { "\(p):room:\($0)" })
            i += chunk.count
        }
    }

    // MARK: replies

    private func onCommandReply(_ r: RedisReply) throws(RedisLinkError) {
        guard expectHead < expect.count else {
            throw RedisLinkError("unexpected reply from redis (\(r.string))")
        }
        cmdWaitingSince = Self.nowMillis()
        let e = expect[expectHead]
        switch e {
        case .publishes(let n):
            if r.isError {
                countFailures(1, reason: "redis error: \(r.string)")
            } else {
                published.wrappingAdd(1, ordering: .relaxed)
            }
            if n > 1 {
                expect[expectHead] = .publishes(n - 1)
                return
            }
        case .ignore:
            if r.isError { noteError(r, what: "command") }
        case .scriptLoad(let i):
            if r.isString && r.bytes.count == 40 {
                scriptSHA[i] = r.string
            } else {
                logger.warning("redis SCRIPT LOAD failed", ["reply": r.string])
            }
            if i == Self.scripts.count - 1 { scriptsLoading = false }
        case .roomCount(let room, let mine):
            if r.isInteger {
                if activeRooms.contains(room) || localCounts[room] != nil {
                    let n = r.integer
                    clusterCounts.withLock { $0[room] = n }
                    remoteCounts.withLock { $0[room] = max(0, n - mine) }
                }
            } else {
                noteError(r, what: "presence")
                if r.isError { dirtyRooms.insert(room) }
            }
        }
        expectHead += 1
        if expectHead == expect.count {
            expect.removeAll(keepingCapacity: true)
            expectHead = 0
        }
    }

    private func noteError(_ r: RedisReply, what: String) {
        if r.isError && r.hasPrefix("NOSCRIPT") {
            scriptSHA = [nil, nil]
            loadScripts()
            return
        }
        logger.debug("unexpected redis reply", ["for": what, "reply": r.string])
    }

    private func onPubSubReply(_ r: RedisReply) throws(RedisLinkError) {
        subWaitingSince = Self.nowMillis()  // any traffic shows the connection is alive
        if r.isArray, let kind = r[0] {
            if kind.is("message"), r.count == 3, let ch = r[1], let payload = r[2] {
                onMessage(channel: ch.bytes, payload: payload.bytes)
            } else if kind.is("subscribe") || kind.is("unsubscribe"), let c = r[2], c.isInteger {
                subscribedRooms.store(c.integer, ordering: .relaxed)
            } else if kind.is("pong") {
                pong()
            }
            return
        }
        if r.is("PONG") {
            pong()
            return
        }
        if r.isError {
            logger.warning("redis pub/sub error", ["error": r.string])
        }
    }

    private func pong() {
        if subPings > 0 { subPings -= 1 }
    }

    private func onMessage(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        guard channel.count > channelPrefix.count,
              channelPrefix.withUnsafeBytes({ memcmp($0.baseAddress!, channel.baseAddress!, $0.count) }) == 0,
              let nl = payload.firstIndex(of: 10)
        else {
            logger.debug("malformed cluster message dropped")
            return
        }
        // Own echo: the origin line equals "<nodeId>\n".
        if nl + 1 == origin.count,
           origin.withUnsafeBytes({ memcmp($0.baseAddress!, payload.baseAddress!, $0.count) }) == 0 {
            return
        }
        let room = String(decoding: UnsafeRawBufferPointer(rebasing: channel[channelPrefix.count...]), as: UTF8.self)
        guard activeRooms.contains(room) else { return }
        let body = [UInt8](UnsafeRawBufferPointer(rebasing: payload[(nl + 1)...]))
        received.wrappingAdd(1, ordering: .relaxed)
        deliver(room, body)
    }

    // MARK: shutdown

    private func shutdown(cleanup: Bool, buffer: UnsafeMutableRawBufferPointer) {
        if up && cleanup {
            let p = settings.channelPrefix
            command(["DEL", nodeKey])
            for room in localCounts.keys { command(["HDEL", "\(p):members:\(room)", settings.nodeId]) }
            for user in users.keys { sendUserDelete(user) }
            let deadline = Self.nowMillis() + 500
            do throws(RedisLinkError) {
                while expectHead < expect.count {
                    try cmd.flush()
                    let left = deadline - Self.nowMillis()
                    if left <= 0 { break }
                    var pfd = pollfd(fd: cmd.fd, events: Int16(POLLIN) | (cmd.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
                    if poll(&pfd, 1, Int32(left)) > 0 && pfd.revents & ~Int16(POLLOUT) != 0 {
                        try cmd.read(buffer: buffer) { r throws(RedisLinkError) in try onCommandReply(r) }
                    }
                }
            } catch {
                logger.debug("redis cleanup incomplete", ["error": error.description])
            }
        }
        let wasUp = up
        connected.store(false, ordering: .releasing)
        up = false
        var lost = 0
        for e in expect[expectHead...] { if case .publishes(let n) = e { lost += n } }
        lost += inbox.withLock { box in
            let n = box.publishCount
            box.publishCount = 0
            box.publishes = []
            return n
        }
        countFailures(lost, reason: "redis link stopped")
        expect.removeAll()
        expectHead = 0
        cmd.close()
        sub.close()
        subscribedRooms.store(0, ordering: .relaxed)
        clusterCounts.withLock { $0.removeAll() }
        remoteCounts.withLock { $0.removeAll() }
        logger.info("redis link stopped", ["node": settings.nodeId, "was_connected": String(wasUp), "cleanup": String(cleanup)])
    }

    // MARK: Lua

    /// 0: presence. KEYS[1] = P:members:<room>; ARGV = node key prefix, nodeId, this node's
    /// count, hash TTL (ms). Writes the count (HSET, HDEL at 0), drops fields of nodes whose
    /// heartbeat key is gone, and returns the sum over live nodes.
    /// 1: user release. KEYS[1] = P:user:<user>; ARGV[1] = nodeId. Deletes the key only if it
    /// still points at this node (the user may have reconnected elsewhere).
    static let scripts = [
        """
        local key = KEYS[1]
        if (tonumber(ARGV[3]) or 0) > 0 then redis.call('HSET', key, ARGV[2], ARGV[3]) else redis.call('HDEL', key, ARGV[2]) end
        local h = redis.call('HGETALL', key)
        local sum = 0
        for i = 1, #h, 2 do
          if redis.call('EXISTS', ARGV[1] .. h[i]) == 1 then sum = sum + (tonumber(h[i + 1]) or 0)
          else redis.call('HDEL', key, h[i]) end
        end
        if #h > 0 then redis.call('PEXPIRE', key, ARGV[4]) end
        return sum
        """,
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """,
    ]
}
