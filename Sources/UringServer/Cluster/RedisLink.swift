import Primitives
import Glibc
import Synchronization

/// The node's link to Redis for cluster mode: room messages over pub/sub, member counts in
/// per-room presence hashes, node liveness through a heartbeat key, and a user → node registry.
///
/// Threads: everything network-facing runs on one dedicated link thread (its own two
/// non-blocking sockets and poll()). The public methods are called from reactor threads and only
/// append to a mutex-protected inbox and write an eventfd (when the inbox goes from empty to
/// non-empty); they never block on the network. `deliver` is called on the link thread.
///
/// Plain Redis or Redis Cluster: on connect the link asks the configured node `CLUSTER SLOTS`.
/// A plain Redis answers an error ("cluster support disabled") and is the only shard; a cluster
/// node answers the slot map, and the link opens a command and a pub/sub connection to every
/// master (RedisShard), routes each command by its key's slot (RedisLinkRouting), follows
/// MOVED/ASK redirects, and after a master fails refreshes the map until its slots have a
/// reachable master again, then re-subscribes their rooms (RedisLinkTopology).
///
/// Redis layout (`P` = channelPrefix; `{T}` is the room's hash tag: its name with `%` and `}`
/// percent-encoded, so every key and the channel of one room live in one cluster slot):
/// - channel `P:room:{T}`, message `<nodeId>\n<body>`; own echoes are dropped. PUBLISH and
///   SUBSCRIBE on a plain Redis, SPUBLISH and SSUBSCRIBE (sharded pub/sub) on a cluster. Chat
///   lines come from the chat script as `<nodeId>\n<epoch>\n<offset>\n<sender>\n<line>` and
///   are delivered on every node, the origin included (RedisLinkChat.swift).
/// - hash `P:meta:{T}` (epoch, seq) and stream `P:log:{T}`: the room's cluster-wide offsets
///   and history (RedisLinkChat.swift, RedisLinkRoomSync.swift).
/// - hash `P:members:{T}`: field nodeId → "<count>:<expiry ms>" (HDEL at 0). The presence
///   script drops fields whose expiry (Redis TIME) has passed: a node that stops refreshing
///   leaves the count without the script touching keys of other slots.
/// - key `P:node:<nodeId>` with PX nodeTTLMillis, refreshed every heartbeat (for operators).
/// - key `P:user:<user>` = nodeId with PX nodeTTLMillis, refreshed every heartbeat.
///
/// This file holds the state and the callers' side. The link thread's side is split by job:
/// RedisLinkThread (the poll loop and the inbox), RedisLinkConnectionState (connect, backoff,
/// up/down per shard, shutdown), RedisLinkRouting (slot routing, redirects),
/// RedisLinkTopology (mode detection, slot map, failover), RedisLinkCommands (the reply
/// pipeline), RedisLinkPresence (heartbeat, member counts, user keys), RedisLinkPubSub
/// (subscriptions, incoming messages) and RedisLinkStats.
public final class RedisLink: @unchecked Sendable {
    public let settings: ClusterSettings
    let logger: Logger
    let deliver: @Sendable (_ room: String, _ body: [UInt8]) -> Void

    // MARK: shared between callers and the link thread

    struct Inbox {
        /// Publishes as records: a kind byte, then for a plain message `<room><body>`, for a
        /// chat line `<room><line><epoch><id>` and three words (floor, sender tag, epoch
        /// candidate); each field a u32-length record (RESP.appendRecord). The link thread
        /// splits them by shard and formats the command for the mode (routePublishes).
        var publishes: [UInt8] = []
        var publishCount = 0
        /// The next new-epoch candidate for the chat script (random start, +1 per publish, so
        /// every publish offers a different one at the cost of an add).
        var epochCandidate: UInt64 = { var g = SystemRandomNumberGenerator(); return g.next() }()
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

    let inbox = Locked(Inbox())
    /// Wakes the link thread (nil if eventfd failed: the thread then polls with a short timeout).
    let wakeEvent: EventFD?
    var wakeFD: Int32 { wakeEvent?.rawValue ?? -1 }
    let connected = Atomic<Bool>(false)
    let reconnects = Atomic<Int>(0)
    let published = Atomic<Int>(0)
    let received = Atomic<Int>(0)
    let publishFailures = Atomic<Int>(0)
    let subscribedRooms = Atomic<Int>(0)
    let failuresLoggedAt = Atomic<Int>(Int.min / 2)
    let failuresLogged = Atomic<Int>(0)
    /// room → cluster-wide member count as last fetched; empty while disconnected.
    let clusterCounts = Locked<[String: Int]>([:])
    /// The other nodes' part of each total (total minus the count this node wrote with it).
    let remoteCounts = Locked<[String: Int]>([:])
    private let thread = Locked<(started: Bool, tid: pthread_t?)>((false, nil))

    let channelPrefix: [UInt8]  // "P:room:{"
    let chatKeys: ChatKeyPrefixes
    let chatScriptBody = Array(RedisLink.chatScriptSource.utf8)
    let nodeIdBytes: [UInt8]
    /// Cluster chat (set before start): the room logs the link appends to.
    weak var chatSink: (any ClusterChatSink)?
    /// Chat lines this node could not place: offsets no node could fetch any more (stream
    /// trimmed, or lost in a failover), counted when the log skipped them.
    let lostMessages = Atomic<Int>(0)
    /// Ranges fetched from the streams to fill gaps (and rooms primed on first join).
    let streamFetches = Atomic<Int>(0)
    /// Rooms whose log follows the cluster's (primed from Redis): joins wait for it.
    let syncedRooms = Locked<Set<String>>([])
    let origin: [UInt8]  // "<nodeId>\n"
    let nodeKey: String
    let nodeKeyPrefix: String  // "P:node:"

    /// Called on the link thread each time a room's subscription is confirmed again after it
    /// had been lost (a shard or the link went down, or its slot moved): messages published in
    /// between were not received live (chat lines are fetched from the room's stream right
    /// before this call, roomResubscribed). Set before start().
    public var onRoomResubscribed: (@Sendable (String) -> Void)?

    let modeCode = Atomic<Int>(0)  // RedisMode.rawValue, the last one detected
    let masters = Atomic<Int>(0)
    let failovers = Atomic<Int>(0)
    let moved = Atomic<Int>(0)
    let asked = Atomic<Int>(0)
    let resubscribes = Atomic<Int>(0)
    let undelivered = Atomic<Int>(0)

    // MARK: link thread only

    enum RedisMode: Int { case unknown = 0, single, cluster }
    var mode = RedisMode.unknown
    /// Every server the link has connections to (or is trying to reach).
    var shards: [RedisShard] = []
    /// slot → the shard serving it (the one plain Redis for every slot); nil: no reachable
    /// master known.
    var slotOwner = [RedisShard?](repeating: nil, count: ClusterSlots.count)
    var seed: RedisShard?
    var needRefresh = false
    var refreshAt = 0
    var topologyAsked: RedisShard?
    var nextHeartbeatAt = 0
    var scriptSHA = [String?](repeating: nil, count: RedisLink.scripts.count)
    /// The chat script's SHA as bytes (RESP.appendChatScriptHead), once a server answered it.
    var chatSHA: [UInt8]?
    /// The chat batch being written (RedisLinkBatch.swift), kept with its capacity.
    var chatBatch: [ChatBatchLine] = []
    var activeRooms = Set<String>()
    /// Active rooms not subscribed anywhere yet (their shard is down or not known).
    var unplacedRooms = Set<String>()
    var placeNeeded = false
    /// Rooms whose subscription was lost; confirming one again calls onRoomResubscribed.
    var lostRooms = Set<String>()
    var roomShard: [String: RedisShard] = [:]
    var localCounts: [String: Int] = [:]
    /// Room (by roomHash) → nodes with members there, as last fetched with the count.
    var roomNodes: [UInt64: Int] = [:]
    var users: [String: Int] = [:]
    var dirtyRooms = Set<String>()
    var spare: [UInt8] = []
    /// Per active room: fetching from the stream and the chat lines held meanwhile.
    var roomSync: [String: RoomSync] = [:]

    enum Expect {
        case publishes(Int)
        case ignore
        case scriptLoad(Int)
        /// The room, and the count this node wrote in the same script run.
        case roomCount(String, Int)
        /// CLUSTER SLOTS: the mode (an error on a plain Redis) and the slot map.
        case topology
        /// The room's meta and stream entries (RedisLinkRoomSync.swift `sendSync`).
        case roomSync(String)
    }

    public init(settings: ClusterSettings, logger: Logger,
                deliver: @escaping @Sendable (_ room: String, _ body: [UInt8]) -> Void) {
        precondition(!settings.nodeId.isEmpty && !settings.nodeId.utf8.contains(10),
                     "cluster nodeId must be non-empty and contain no newline")
        self.settings = settings
        self.logger = logger
        self.deliver = deliver
        channelPrefix = Array("\(settings.channelPrefix):room:{".utf8)
        chatKeys = ChatKeyPrefixes(meta: Array("\(settings.channelPrefix):meta:{".utf8),
                                   log: Array("\(settings.channelPrefix):log:{".utf8), channel: channelPrefix)
        nodeIdBytes = Array(settings.nodeId.utf8)
        origin = Array(settings.nodeId.utf8) + [10]
        nodeKeyPrefix = "\(settings.channelPrefix):node:"
        nodeKey = nodeKeyPrefix + settings.nodeId
        wakeEvent = try? EventFD()
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
        enqueuePublish { box in
            box.publishes.append(Self.plainRecord)
            RESP.appendRecord(&box.publishes, room.utf8)
            RESP.appendRecord(&box.publishes, body)
        }
    }

    /// Queues one publish record written by `write` for the link thread: refused (and counted)
    /// while Redis is down or the queue is over `maxPendingBytes`; wakes the link thread when
    /// the inbox was empty. Returns whether it was queued.
    @inline(__always) @discardableResult
    func enqueuePublish(_ write: (inout Inbox) -> Void) -> Bool {
        guard connected.load(ordering: .acquiring) else {
            countFailures(1, reason: "redis unavailable")
            return false
        }
        let max = settings.maxPendingBytes
        let (accepted, wasEmpty) = inbox.withLock { box -> (Bool, Bool) in
            if box.publishes.count >= max { return (false, false) }
            let wasEmpty = box.isEmpty
            write(&box)
            box.publishCount += 1
            return (true, wasEmpty)
        }
        if !accepted {
            countFailures(1, reason: "redis too slow, publish queue full")
        } else if wasEmpty {
            wake()
        }
        return accepted
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

    func wake() { wakeEvent?.signal() }

    static func nowMillis() -> Int { Int(Clock.monoNanos() / 1_000_000) }
}
