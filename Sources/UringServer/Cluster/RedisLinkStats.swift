import Synchronization

// What the link counts (for /stats, the monitor and the tests) and how publish failures are
// counted and logged.

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
    /// Channels the pub/sub connections are subscribed to (as confirmed by Redis).
    public var subscribedRooms: Int
    /// "single" (one plain Redis), "cluster" (Redis Cluster) or "unknown" (never connected).
    public var redisMode: String
    /// Masters serving slots, as last seen (1 for a plain Redis).
    public var masters: Int
    /// Times a failed master's slots were found served by another (a replica took over).
    public var failovers: Int
    /// MOVED redirects followed, and ASK redirects followed.
    public var moved: Int
    public var asked: Int
    /// Room subscriptions confirmed again after they were lost (onRoomResubscribed calls).
    public var resubscribes: Int
    /// Node deliveries Redis reported missing: a publish reached fewer subscribed nodes than
    /// had members in the room (as last counted; a node leaving at that moment counts too).
    /// An upper bound of pub/sub misses: a node that missed a chat line fills it from the
    /// room's stream when it sees the offset gap, or counts it in lostMessages.
    public var undelivered: Int
    /// Chat lines whose offsets this node's logs skipped: neither delivered live nor still in
    /// the room's stream when the gap was fetched (trimmed, or lost in a failover).
    public var lostMessages = 0
    /// Sync scripts sent: rooms primed for their first local member, gaps and resubscribes.
    public var streamFetches = 0
}

extension RedisLink {
    public var stats: ClusterStats {
        ClusterStats(
            connected: connected.load(ordering: .relaxed),
            reconnects: reconnects.load(ordering: .relaxed),
            published: published.load(ordering: .relaxed),
            received: received.load(ordering: .relaxed),
            publishFailures: publishFailures.load(ordering: .relaxed),
            subscribedRooms: subscribedRooms.load(ordering: .relaxed),
            redisMode: ["unknown", "single", "cluster"][modeCode.load(ordering: .relaxed)],
            masters: masters.load(ordering: .relaxed),
            failovers: failovers.load(ordering: .relaxed),
            moved: moved.load(ordering: .relaxed),
            asked: asked.load(ordering: .relaxed),
            resubscribes: resubscribes.load(ordering: .relaxed),
            undelivered: undelivered.load(ordering: .relaxed),
            lostMessages: lostMessages.load(ordering: .relaxed),
            streamFetches: streamFetches.load(ordering: .relaxed))
    }

    /// Counts failed publishes and logs at most one line per 5 s (with the count since the last).
    func countFailures(_ n: Int, reason: String) {
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
}
