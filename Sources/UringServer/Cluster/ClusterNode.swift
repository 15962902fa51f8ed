import Glibc
import Primitives
import Synchronization

/// Cluster mode (`cluster=redis`): ties this node's rooms to the other nodes through the Redis
/// link. Reactors call it without blocking (every call only queues for the link thread). Chat
/// lines come back on the link thread with their cluster-wide offsets and go into the room's
/// log (ClusterChatSink below: the reactors are poked and deliver them in offset order); other
/// room messages are posted to the inboxes of the reactors that have members in that room, in
/// the order Redis delivered them.
final class ClusterNode: @unchecked Sendable {
    let link: RedisLink
    let nodeId: String
    /// History bytes of the chat lines the link thread stored in this node's room logs
    /// (appended minus evicted there; /stats adds it to the reactors' figure).
    let historyBytes = SharedCounter()
    /// "Room X has new entries" for the reactors (an empty body; see Reactor.wakeup).
    private static let poke = RenderedMessage(originNanos: 0)

    private let rooms: RoomDirectory
    private let reactors: @Sendable () -> [Reactor]
    let chatHistory: HistoryLimits

    init(config: ServerConfig, logger: Logger, rooms: RoomDirectory, reactors: @escaping @Sendable () -> [Reactor]) {
        nodeId = config.nodeId.isEmpty ? Self.defaultNodeId() : config.nodeId
        var settings = ClusterSettings(redisHost: config.redisHost, redisPort: config.redisPort, nodeId: nodeId)
        settings.historySize = config.historySize
        settings.historyTTLMillis = max(1, config.historyTTLSeconds) * 1000
        chatHistory = HistoryLimits(size: config.historySize, ttlSeconds: config.historyTTLSeconds,
                                    maxBytesPerRoom: config.historyMaxBytesPerRoom)
        self.rooms = rooms
        self.reactors = reactors
        link = RedisLink(settings: settings, logger: logger) { room, body in
            // Link thread: a non-chat message (presence) from another node; chat lines take
            // the log path (ClusterChatSink below).
            guard let shared = rooms.lookup(room) else { return }
            let mask = shared.reactorMask.load(ordering: .acquiring)
            if mask == 0 { return }
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
        link.chatSink = self
    }

    /// Called on the link thread each time a room's subscription is confirmed again after it
    /// was lost (see RedisLink.onRoomResubscribed). The link has already started fetching what
    /// the room missed from its stream; this only observes it. Set before start().
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

    /// A chat line (without its closing brace) for the chat script: Redis gives it the
    /// cluster-wide offset and every node, this one included, delivers it from pub/sub. The
    /// sender's reactor gets the ack (or the error) when Redis answers. False: not queued.
    @inline(__always)
    func publishChat(_ room: SharedRoom, line: UnsafeRawBufferPointer, reactor: Int, slot: Int32, generation: UInt32,
                     id: UnsafeRawBufferPointer?) -> Bool {
        let log = room.log
        let (epoch, floor) = log.withLock { (log.epoch, log.last) }
        return link.publishChat(room: room.name, line: line, epoch: epoch, floor: floor, reactor: reactor,
                                slot: slot, generation: generation, id: id)
    }

    /// Whether this node's log of the room follows the cluster's yet (see RedisLink.roomSynced).
    func roomSynced(_ room: String) -> Bool { link.roomSynced(room) }

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
        b.append(",\"lost_messages\":")
        b.appendDecimal(s.lostMessages)
        b.append(",\"stream_fetches\":")
        b.appendDecimal(s.streamFetches)
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

extension ClusterNode: ClusterChatSink {
    func chatLog(_ room: String) -> RoomLog? { rooms.lookup(room)?.log }

    /// Link thread: the room's log has new entries; its reactors deliver them (a poke each).
    func chatAppended(_ room: String, bytesDelta: Int) {
        historyBytes.value.add(bytesDelta, ordering: .relaxed)
        guard let shared = rooms.lookup(room) else { return }
        var m = shared.reactorMask.load(ordering: .acquiring)
        let all = reactors()
        while m != 0 {
            let r = m.trailingZeroBitCount
            m &= m - 1
            if r < all.count { all[r].inbox.post(RoomDelivery(room: shared, message: Self.poke)) }
        }
    }

    func chatAnswered(reactor: Int, slot: Int32, generation: UInt32, offset: Int, id: UnsafeRawBufferPointer) {
        let all = reactors()
        guard reactor >= 0 && reactor < all.count else { return }
        all[reactor].inbox.postClusterReply(slot: slot, generation: generation, offset: offset, id: id)
    }
}

/// An atomic count a closure can hold (Atomic itself cannot be captured).
final class SharedCounter: Sendable {
    let value = Atomic<Int>(0)
}
