import Glibc
import Primitives
import Synchronization

/// One reactor thread: owns its listening socket, its ring (or epoll set), its connections and
/// its plugin instances. Nothing here is shared with other threads except the inbox, the room
/// directory and the once-a-second stats snapshot.
///
/// A loop turn: the backend submits what the last turn queued and waits; completions are
/// dispatched (received bytes → frames → plugin chain → output appended to connections);
/// deliveries from other reactors are drained; then every connection with output gets one
/// send, and connections that finished are closed. Every 100 ms a tick checks timeouts; every
/// second the stats snapshot is published (and reactor 0 runs the performance monitor).
package final class Reactor: IOEventHandler {
    public let index: Int
    let shared: ServerShared
    var config: ServerConfig { shared.config }
    let listenFD: Int32
    /// Whether waits should gather completions (`wait_batch_auto` decides every tick), and
    /// whether the backend did when asked (the `batched_wait` stat is both).
    var gatherWaits = false
    var backendGathers = false
    let inbox: Inbox
    var backend: IOBackend!
    /// Output buffers come from here: chunks on this reactor's NUMA node, reused across
    /// messages, handed back when a connection goes quiet (only this thread touches it).
    var pool = BufferPool()
    /// Recycled `OutputBlocks` (shared-block queues) for this reactor's connections.
    var blocksPool = OutputBlocksPool()
    /// Pipes for room batches sent by tee + splice (nil: `splice_threshold` is 0).
    var pipes: SplicePipes?
    var connections: [Connection?] = []
    var freeSlots: [Int] = []
    var flushList: [Connection] = []
    /// For each connection in `flushList`: the origin of the first message queued for it this
    /// turn (0: queued for another reason, not a latency sample).
    var flushOrigins: [UInt64] = []
    var plugins: [MessageProcessor] = []
    /// The flag gating each plugin (same index as `plugins`), resolved once.
    var pluginFlags: [FeatureFlag?] = []
    let core: CoreHandler
    /// The last message type and its processor (Dispatch.swift, RouteCache.swift).
    var routes = RouteCache()
    /// The parsed fields of the message being handled. Behind a pointer on purpose: a
    /// 640-byte struct stored in a class property is copied to the stack each time it is read
    /// (`fields.find`, passing it on), a read through the pointer is not.
    let fields: UnsafeMutablePointer<JSONFieldTable>
    /// Small room messages waiting to be delivered together (see `flushBatch`).
    let batch = RoomBatch()
    /// Room messages delivered here (from local senders or handed off), and the counts at the
    /// last second's tick: the fan-out measure behind `wait_batch_auto`.
    var roomMessages = 0
    var lastRoomMessages = 0
    var lastDeliveries = 0
    /// Monotonic time of the current batch of completions, read on first use after the wait
    /// returned (0: not read yet): one clock_gettime per turn, not one per reply or send.
    var batchNanos: UInt64 = 0
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC in ms, refreshed every second (so `wallMillis`
    /// follows clock adjustments within a second).
    var wallOffsetMillis = Clock.wallOffsetMillis()
    /// Messages are rendered here once, then framed into each recipient's output.
    var render = ByteBuffer()
    var deliveries: [RoomDelivery] = []
    var clusterReplies = ClusterReplies()
    /// Set by a plugin whose message is acknowledged later (cluster chat: when Redis gave the
    /// line its offset); handleMessage then sends no ack.
    var ackDeferred = false
    /// Room log entries copied out under the room's lock, delivered after it (RoomOrder.swift).
    let logEntries = LogCopy()
    /// Rooms this turn appended to with members on other reactors: poked at the turn's end.
    var roomsToPoke: [LocalRoom] = []
    /// The body of a poke that overflowed into the inbox (empty: "read the room's log").
    let pokeMessage = RenderedMessage(originNanos: 0)
    /// The offset the message being handled was given (its ack carries it; 0: none).
    var ackOffset = 0
    let historyLimits: HistoryLimits
    /// The server's history is over `history_max_bytes` (judged once a second): appends keep
    /// only what reactors have not delivered.
    var historyOverBudget = false
    var historyBytesPublished = 0
    var pendingCuts: [Connection] = []
    // Compression: one context per reactor; a message is compressed at most once per codec
    // (the cache is keyed by `renderGeneration`, bumped for every new message body).
    let compression: CompressionContext
    var renderGeneration: UInt64 = 0
    var compressedLZ4 = ByteBuffer()
    var compressedZstd = ByteBuffer()
    var lz4Generation: UInt64 = .max
    /// The current message's compressed bytes as shared blocks (see `appendCompressed`).
    var lz4Block: MessageBlock?
    var lz4BlockGeneration: UInt64 = .max
    var zstdBlock: MessageBlock?
    var zstdBlockGeneration: UInt64 = .max
    var zstdGeneration: UInt64 = .max
    /// Decompressed client frames land here.
    var inflated = ByteBuffer()
    /// Unmasked WebSocket frames land here (`WebSocketFrames.feed`).
    var webSocketScratch = ByteBuffer()
    /// A room batch framed once for WebSocket members (`frameBatchForWebSocket`).
    var webSocketBatch = ByteBuffer()
    var lastAcceptedSlot = -1
    /// Reactors this turn handed messages to (bit i = reactor i): woken once at turn end.
    var peersToWake: UInt64 = 0
    /// Targets whose handoff ring overflowed: messages to them go through the (allocating)
    /// inbox until it has drained, so per-sender order is kept.
    var overflowing: UInt64 = 0
    package var liveConnections = 0

    // Time and stats.
    /// Monotonic time at the start of this turn's dispatch; the origin of messages received now.
    var turnNanos: UInt64 = 0
    /// Origin time of the message being delivered (latency is measured from it).
    var originNanos: UInt64 = 0
    var nextTickNanos: UInt64 = 0
    var nextSecondNanos: UInt64 = 0
    var counters = ReactorCounters()
    var window = SecondWindow()
    let snapshots: SnapshotBox
    var draining = false
    var drainDeadline: UInt64 = 0

    package init(index: Int, shared: ServerShared, listenFD: Int32) throws(SyscallError) {
        self.index = index
        self.shared = shared
        self.listenFD = listenFD
        precondition(JSONFieldTable.storageIsFirst, "JSONFieldTable.find(_:in:table:) reads the fields at the table's address")
        fields = .allocate(capacity: 1)
        fields.initialize(to: JSONFieldTable())
        inbox = try Inbox()
        snapshots = SnapshotBox(index: index)
        historyLimits = HistoryLimits(size: shared.config.historySize, ttlSeconds: shared.config.historyTTLSeconds,
                                      maxBytesPerRoom: shared.config.historyMaxBytesPerRoom)
        core = CoreHandler(config: shared.config, flags: shared.flags, cluster: shared.cluster)
        compression = CompressionContext(zstdLevel: shared.config.zstdLevel, lz4Acceleration: shared.config.lz4Acceleration)
        let env = PluginEnvironment(config: shared.config, rooms: shared.rooms, reactorIndex: index,
                                    flags: shared.flags, cluster: shared.cluster, voice: shared.voice)
        plugins = shared.factories.map { $0(env) }
        pluginFlags = plugins.map { p in p.featureFlag.flatMap { shared.flags[$0] } }
    }

    deinit {
        fields.deinitialize(count: 1)
        fields.deallocate()
    }

    /// Sets up the backend on this thread (io_uring rings are bound to their issuer thread).
    func setUp() throws(SyscallError) {
        // Pin first, so the pool below is created on (and allocates from) this CPU's node.
        var cpuNote = "unpinned (pin_reactors=false)"
        if config.pinReactors {
            let cpu = index % max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            let rc = NUMA.pinCurrentThread(toCPU: cpu)
            cpuNote = rc == 0 ? "\(cpu)" : "unpinned (errno \(-rc))"
        }
        pool = BufferPool()
        if config.spliceThreshold > 0 {
            pipes = SplicePipes()
            blocksPool = OutputBlocksPool(pipes: pipes)
        }
        shared.logger.info("reactor started", ["reactor": "\(index)", "cpu": cpuNote, "memory": BufferPool.describeNUMA()])
        let settings = BackendSettings(ringEntries: config.ringEntries, recvBufferCount: config.recvBufferCount,
                                       recvBufferSize: config.recvBufferSize, zeroCopyThreshold: config.sendZCThreshold,
                                       waitBatch: config.waitBatch, waitBatchMicros: config.waitBatchMicros,
                                       techniques: UringTechniques(config, reactors: shared.reactors.count))
        let index = index, logger = shared.logger
        backend = try IOBackends.make(shared.ioMode, settings, pool: pool, pipes: pipes) { note in
            logger.warning(note, ["reactor": "\(index)"])
        }
        // With wait_batch_auto a reactor starts unbatched; its first tick decides.
        gatherWaits = config.waitBatch > 1 && !config.waitBatchAuto
        try backend.addListener(fd: listenFD)
        try backend.addWakeup(inbox.wakeTarget)
    }

    func run() {
        let start = Clock.monoNanos()
        nextTickNanos = start + 100_000_000
        nextSecondNanos = start + 1_000_000_000
        turnNanos = start
        while !shared.stopping.load(ordering: .acquiring) {
            let now = turnNanos   // read just now, at the end of the previous turn
            let wait = nextTickNanos > now ? Int32((nextTickNanos - now) / 1_000_000) + 1 : 0
            batchNanos = 0
            let gathered = backend.poll(timeoutMillis: wait, gather: gatherWaits, handler: self)
            if gatherWaits { backendGathers = gathered }
            endTurn()
            turnNanos = Clock.monoNanos()
            if turnNanos >= nextTickNanos {
                tick(turnNanos)
                // What the tick queued (idle pings, timeout errors) goes out now, not after
                // the next wait.
                if !flushList.isEmpty { endTurn() }
            }
            if draining && (liveConnections == 0 || turnNanos >= drainDeadline) { break }
        }
        // Stop: every connection's plugins are told, the backend closes every fd it still has
        // (and the listener), then the output buffers go back.
        for case let c? in connections {
            if !c.closing { notifyClosed(c) }
            shared.connectionClosed(peerIP: c.peerIP)
        }
        backend.shutdown()
        for case let c? in connections { c.releaseOutput(pool: pool, blocksPool: blocksPool) }
        connections.removeAll()
    }

    /// End of a turn: one wakeup per reactor we handed messages to, one send per connection
    /// with queued output, then pending closes.
    func endTurn() {
        flushBatch()
        // What plugins send now was not caused by a message received this turn.
        originNanos = batchNow()
        for p in plugins { p.turnEnded(self) }
        flushBatch()   // plugins may have broadcast
        if !roomsToPoke.isEmpty { pokeRooms() }
        if !pendingCuts.isEmpty { performCuts() }
        if peersToWake != 0 {
            var mask = peersToWake
            peersToWake = 0
            while mask != 0 {
                let r = mask.trailingZeroBitCount
                mask &= mask - 1
                backend.wake(shared.reactors[r].inbox.wakeTarget)
            }
        }
        // Latency ends here, when the turn's output is handed to the kernel (docs/architecture.md,
        // "Latency"): one clock read per turn, after the turn's work.
        let flushNow = flushList.isEmpty ? 0 : Clock.monoNanos()
        var i = 0
        while i < flushList.count {
            let c = flushList[i]
            let origin = flushOrigins[i]
            i += 1
            c.inFlushList = false
            if c.closeStarted { continue }
            if c.closing && c.framing == .webSocket { writePendingClose(c) }
            if origin != 0 {
                let micros = flushNow > origin ? (flushNow &- origin) / 1000 : 0
                counters.latency.record(micros: micros)
                counters.latencyTotal.record(micros: micros)
            }
            if !c.sendInFlight && c.hasQueuedOutput {
                c.lastOutputMs = Connection.ms(turnNanos)
                c.sendStartedMs = c.queuedMs
                c.queuedMs = 0
                counters.bytesOut &+= c.queuedOutputBytes
                backend.send(c)
                if !c.sendInFlight { sendFinished(c) }   // epoll wrote it all at once
            }
            if c.closing && !c.sendInFlight && !c.hasQueuedOutput && c.sendingIsEmpty {
                startClose(c)
            }
        }
        flushList.removeAll(keepingCapacity: true)
        flushOrigins.removeAll(keepingCapacity: true)
    }

    /// `origin`: when the message that made this output was received (0 for output that is
    /// not a message's, such as a close or the rest of a partial send).
    @inline(__always)
    func markForFlush(_ c: Connection, origin: UInt64 = 0) {
        if !c.inFlushList {
            c.inFlushList = true
            flushList.append(c)
            flushOrigins.append(origin)
        }
    }

    /// A send batch reached the kernel completely.
    @inline(__always)
    func sendFinished(_ c: Connection) {
        c.sendStartedMs = 0
        if c.overSoftSince != 0 && c.pendingOutputBytes <= config.outboundSoftBytes { c.overSoftSince = 0 }
    }

    /// Monotonic nanoseconds for this batch of completions (see `batchNanos`).
    @inline(__always)
    func batchNow() -> UInt64 {
        if batchNanos == 0 { batchNanos = Clock.monoNanos() }
        return batchNanos
    }

    /// Wall-clock milliseconds for `ts` fields: this batch's monotonic time plus the offset
    /// refreshed once a second (no clock_gettime per message).
    public func wallMillis() -> Int { wallOffsetMillis + Int(batchNow() / 1_000_000) }

    var bytesInAtLastSecond = 0
    var heapTrimmed = true

}
