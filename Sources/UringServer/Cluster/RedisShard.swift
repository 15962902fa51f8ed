/// One Redis server the link talks to: the plain Redis, or one master of a Redis Cluster (or,
/// briefly, the configured seed node while the link asks it for the cluster's layout). Owned
/// and used by the link thread only.
///
/// Each has its own command connection (a pipeline whose replies are matched in order against
/// `pending`) and its own pub/sub connection for the rooms whose slots it serves, and its own
/// connect/backoff state: one master failing leaves the others' rooms working.
final class RedisShard {
    let host: String
    let port: Int
    let cmd: RedisConnection
    let sub: RedisConnection

    /// Both connections are up.
    var up = false
    var everUp = false
    /// Scripts loaded and this node's keys sent (after the link knows whether it is a cluster).
    var ready = false
    var loggedDown = false
    /// SCRIPT LOAD re-sent after a NOSCRIPT, not answered yet.
    var scriptsReloading = false
    var backoffMillis = 100
    var upSince = 0
    var readyAt = 0
    var nextAttemptAt = 0
    var connectDeadline = 0

    /// What each outstanding reply on `cmd` is for, in order; `args` is kept for commands that
    /// can be sent again elsewhere after a MOVED/ASK redirect (nil for publishes).
    struct Pending {
        var e: RedisLink.Expect
        var args: [String]?
    }
    var pending: [Pending] = []
    var head = 0
    /// For each publish in flight, in order: who waits for its reply and how many nodes had
    /// members in its room when it was sent (PublishTicket); the client message ids of chat
    /// lines in `ticketIDs`. Kept with their capacity: no allocation per publish.
    var tickets: [PublishTicket] = []
    var ticketHead = 0
    var ticketIDs: [UInt8] = []
    var cmdWaitingSince = 0
    var subPings = 0
    var subWaitingSince = 0
    /// Rooms this node asked this server's pub/sub connection to subscribe to.
    var rooms = Set<String>()
    /// Channels the pub/sub connection holds, as last confirmed by the server.
    var subCount = 0
    /// Slots this shard serves (from the last topology; all of them for a plain Redis).
    var slots = 0

    init(host: String, port: Int) {
        self.host = host
        self.port = port
        cmd = RedisConnection(name: "command \(host):\(port)")
        sub = RedisConnection(name: "pubsub \(host):\(port)")
    }

    var address: String { "\(host):\(port)" }
    var waiting: Bool { head < pending.count }

    func expect(_ e: RedisLink.Expect, args: [String]?, now: Int) {
        if head == pending.count {
            cmdWaitingSince = now
            if head > 0 {
                pending.removeAll(keepingCapacity: true)
                head = 0
            }
        }
        // Consecutive publishes share one entry (a counter), so a burst costs no array growth.
        if args == nil, case .publishes(let n) = e, head < pending.count,
           case .publishes(let m) = pending[pending.count - 1].e, pending[pending.count - 1].args == nil {
            pending[pending.count - 1].e = .publishes(n + m)
            return
        }
        pending.append(Pending(e: e, args: args))
    }

    /// Lines (plain messages and chat lines) written to this server and not acknowledged yet:
    /// one ticket each, whether or not a chat batch shares one reply among several.
    var unacknowledgedPublishes: Int { tickets.count - ticketHead }

    /// How many lines the next publish reply answers (RedisLinkChat.answerTicket).
    var nextReplyLines: Int { ticketHead < tickets.count ? max(1, Int(tickets[ticketHead].lines)) : 1 }

    func addTicket(sender: UInt64, receivers: Int, id: UnsafeRawBufferPointer, lines: Int = 1) {
        if ticketHead == tickets.count && ticketHead > 0 {
            tickets.removeAll(keepingCapacity: true)
            ticketIDs.removeAll(keepingCapacity: true)
            ticketHead = 0
        }
        tickets.append(PublishTicket(sender: sender, receivers: Int32(clamping: receivers),
                                     idStart: Int32(ticketIDs.count), idCount: Int32(id.count),
                                     lines: Int32(lines)))
        ticketIDs.append(contentsOf: id)
    }

    /// The oldest outstanding ticket (its id bytes stay valid until the next addTicket).
    func popTicket() -> PublishTicket? {
        guard ticketHead < tickets.count else { return nil }
        let t = tickets[ticketHead]
        ticketHead += 1
        return t
    }

    func resetPipeline() {
        pending.removeAll(keepingCapacity: true)
        head = 0
        tickets.removeAll(keepingCapacity: true)
        ticketIDs.removeAll(keepingCapacity: true)
        ticketHead = 0
        subPings = 0
        scriptsReloading = false
    }
}
