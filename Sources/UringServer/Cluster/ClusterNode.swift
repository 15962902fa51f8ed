import Glibc
import Primitives
import Synchronization

/// Cluster mode (`cluster=redis`): ties this node's rooms to the other nodes through the Redis
/// link. Reactors call it without blocking (every call only queues for the link thread); room
/// messages from other nodes come back on the link thread and are posted to the inboxes of
/// the reactors that have members in that room, in the order Redis delivered them.
final class ClusterNode: @unchecked Sendable {
    let link: RedisLink
    let nodeId: String
    /// History bytes of the chat lines from other nodes this node's rooms stored (appended
    /// minus evicted on the link thread; /stats adds it to the reactors' figure).
    let historyBytes = SharedCounter()
    /// "Room X has new entries" for the reactors (an empty body; see Reactor.wakeup).
    private static let poke = RenderedMessage(originNanos: 0)

    init(config: ServerConfig, logger: Logger, rooms: RoomDirectory, reactors: @escaping @Sendable () -> [Reactor]) {
        nodeId = config.nodeId.isEmpty ? Self.defaultNodeId() : config.nodeId
        let settings = ClusterSettings(redisHost: config.redisHost, redisPort: config.redisPort, nodeId: nodeId)
        let limits = HistoryLimits(size: config.historySize, ttlSeconds: config.historyTTLSeconds,
                                   maxBytesPerRoom: config.historyMaxBytesPerRoom)
        let bytes = historyBytes
        link = RedisLink(settings: settings, logger: logger) { room, body in
            // Link thread: find the reactors with local members and hand each the message.
            guard let shared = rooms.lookup(room) else { return }
            let mask = shared.reactorMask.load(ordering: .acquiring)
            if mask == 0 { return }
            if let prefix = Self.chatPrefix(body) {
                // A chat line from another node takes this node's next offset in the room's
                // log (node-local offsets: every member here sees one order), then the
                // reactors are poked and deliver it from the log like a local line.
                bytes.value.add(Self.append(body, prefix: prefix, to: shared.log, limits), ordering: .relaxed)
                let all = reactors()
                var m = mask
                while m != 0 {
                    let r = m.trailingZeroBitCount
                    m &= m - 1
                    if r < all.count { all[r].inbox.post(RoomDelivery(room: shared, message: Self.poke)) }
                }
                return
            }
            let msg = RenderedMessage(originNanos: Clock.monoNanos())
            body.withUnsafeBytes { msg.body.append($0) }
            let all = reactors()
            var m = mask
            while m != 0 {
                let r = m.trailingZeroBitCount
                m &= m - 1
                if r < all.count { all[r].inbox.post(RoomDelivery(room: shared, message: msg)) }
            }
        }
    }

    /// The length of a chat line's bytes before its `,"offset":N}` (or before its closing brace
    /// when it has none); nil when `body` is not a chat line.
    static func chatPrefix(_ body: [UInt8]) -> Int? {
        guard body.count > chatHead.count + 1, body.last == UInt8(ascii: "}"), body.starts(with: chatHead) else { return nil }
        var i = body.count - 2
        while i > 0 && body[i] >= UInt8(ascii: "0") && body[i] <= UInt8(ascii: "9") { i -= 1 }
        let start = i - offsetKey.count + 1
        if start > 0 && i < body.count - 2 && body[start...i].elementsEqual(offsetKey) { return start }
        return body.count - 1
    }
    private static let chatHead: [UInt8] = Array("{\"type\":\"chat\"".utf8)
    private static let offsetKey: [UInt8] = Array(",\"offset\":".utf8)

    /// Appends a remote chat line to `log` with this node's next offset; returns the change in
    /// history bytes.
    static func append(_ body: [UInt8], prefix: Int, to log: RoomLog, _ limits: HistoryLimits) -> Int {
        let now = Clock.monoNanos()
        return body.withUnsafeBytes { b in
            log.withLock { () -> Int in
                let before = log.accountedBytes
                _ = log.appendLocked(UnsafeRawBufferPointer(rebasing: b[0..<prefix]), origin: now,
                                     second: UInt32(truncatingIfNeeded: now / 1_000_000_000))
                _ = log.evictLocked(limits, nowSecond: UInt32(truncatingIfNeeded: now / 1_000_000_000), overBudget: false)
                return log.accountedBytes - before
            }
        }
    }

    /// Called on the link thread each time a room's subscription is confirmed again after it
    /// was lost (see RedisLink.onRoomResubscribed): what was published meanwhile was missed.
    /// Set before start().
    var onRoomResubscribed: (@Sendable (String) -> Void)? {
        get { link.onRoomResubscribed }
        set { link.onRoomResubscribed = newValue }
    }

    func start() { link.start() }
    func stop() { link.stop() }

    // MARK: what the plugins and operations use (they never see the link itself)

    /// Publishes a rendered room message for the other nodes. On the message path: inlined so
    /// the indirection costs nothing.
    @inline(__always)
    func publish(room: String, body: UnsafeRawBufferPointer) { link.publish(room: room, body: body) }

    /// Members on the other live nodes as last fetched; nil while unknown (see RedisLink).
    func remoteMemberCount(room: String) -> Int? { link.remoteMemberCount(room: room) }
    func setLocalMemberCount(room: String, count: Int) { link.setLocalMemberCount(room: room, count: count) }
    /// The first local member joined: subscribe and start tracking the room's count.
    func roomActivated(_ room: String) { link.roomActivated(room) }
    /// The last local member left: unsubscribe and drop this node's count.
    func roomDeactivated(_ room: String) { link.roomDeactivated(room) }
    /// User → node registry (with TTL); counted per connection of the user.
    func userConnected(_ user: String) { link.userConnected(user) }
    func userDisconnected(_ user: String) { link.userDisconnected(user) }
    var isConnected: Bool { link.stats.connected }

    /// Membership's hook: this node's member count of `room` changed (a join when `joined`).
    /// The first member subscribes the node to the room, the last one unsubscribes it.
    func localMembersChanged(room: String, count: Int, joined: Bool) {
        if joined && count == 1 { link.roomActivated(room) }
        link.setLocalMemberCount(room: room, count: count)
        if !joined && count == 0 { link.roomDeactivated(room) }
    }
    var stats: ClusterStats { link.stats }

    /// host-pid-random: unique per process, readable in Redis keys.
    static func defaultNodeId() -> String {
        var buf = [CChar](repeating: 0, count: 64)
        gethostname(&buf, 63)
        let host = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var rng = SystemRandomNumberGenerator()
        return "\(host)-\(getpid())-\(String(rng.next() as UInt16, radix: 16))"
    }

    func renderStats(into b: inout ByteBuffer) {
        let s = stats
        b.append("{\"mode\":\"redis\",\"node_id\":")
        b.appendJSONString(nodeId)
        b.append(",\"connected\":")
        b.append(s.connected ? "true" : "false")
        b.append(",\"reconnects\":")
        b.appendDecimal(s.reconnects)
        b.append(",\"published\":")
        b.appendDecimal(s.published)
        b.append(",\"received\":")
        b.appendDecimal(s.received)
        b.append(",\"publish_failures\":")
        b.appendDecimal(s.publishFailures)
        b.append(",\"subscribed_rooms\":")
        b.appendDecimal(s.subscribedRooms)
        b.append(",\"redis_mode\":")
        b.appendJSONString(s.redisMode)
        for (k, v) in [("masters", s.masters), ("failovers", s.failovers), ("moved", s.moved),
                       ("asked", s.asked), ("resubscribes", s.resubscribes), ("undelivered", s.undelivered)] {
            b.append(",\"")
            b.append(contentsOf: k)
            b.append("\":")
            b.appendDecimal(v)
        }
        // Cluster-wide member counts of the rooms this node has members in (at most 100).
        b.append(",\"room_members\":{")
        for (i, (room, n)) in link.clusterMemberCounts().sorted(by: { $0.value > $1.value }).prefix(100).enumerated() {
            if i > 0 { b.append(",") }
            b.appendJSONString(room)
            b.append(":")
            b.appendDecimal(n)
        }
        b.append("}}")
    }
}

/// An atomic count a closure can hold (Atomic itself cannot be captured).
final class SharedCounter: Sendable {
    let value = Atomic<Int>(0)
}
