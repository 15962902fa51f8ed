import CLinux
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
public final class Reactor: IOEventHandler {
    public let index: Int
    let shared: ServerShared
    var config: ServerConfig { shared.config }
    private(set) var listenFD: Int32
    let inbox: Inbox
    /// This reactor's io_uring fd once its ring exists (-1 before, and in epoll mode), for
    /// other reactors' MSG_RING wakeups.
    let publishedRingFD = Atomic<Int32>(-1)
    private var backend: IOBackend!
    /// Output buffers come from here: chunks on this reactor's NUMA node, reused across
    /// messages, handed back when a connection goes quiet (only this thread touches it).
    private(set) var pool = BufferPool()
    /// Recycled `OutputBlocks` (shared-block queues) for this reactor's connections.
    private(set) var blocksPool = OutputBlocksPool()
    /// Pipes for room batches sent by tee + splice (nil: `splice_threshold` is 0).
    private var pipes: SplicePipes?
    private var connections: [Connection?] = []
    private var freeSlots: [Int] = []
    private var flushList: [Connection] = []
    /// For each connection in `flushList`: the origin of the first message queued for it this
    /// turn (0: queued for another reason, not a latency sample).
    private var flushOrigins: [UInt64] = []
    private var plugins: [MessageProcessor] = []
    /// The flag gating each plugin (same index as `plugins`), resolved once.
    private var pluginFlags: [FeatureFlag?] = []
    private let core: CoreHandler
    private var fields = JSONFieldTable()
    /// Small room messages waiting to be delivered together (see `flushBatch`).
    private let batch = RoomBatch()
    /// Room messages delivered here (from local senders or handed off), and the counts at the
    /// last second's tick: the fan-out measure behind `wait_batch_auto`.
    private var roomMessages = 0
    private var lastRoomMessages = 0
    private var lastDeliveries = 0
    /// Monotonic time of the current batch of completions, read on first use after the wait
    /// returned (0: not read yet): one clock_gettime per turn, not one per reply or send.
    private var batchNanos: UInt64 = 0
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC in ms, refreshed every second (so `wallMillis`
    /// follows clock adjustments within a second).
    private var wallOffsetMillis = Clock.wallOffsetMillis()
    /// Messages are rendered here once, then framed into each recipient's output.
    private var render = ByteBuffer()
    private var deliveries: [RoomDelivery] = []
    private var pendingCuts: [Connection] = []
    // Compression: one context per reactor; a message is compressed at most once per codec
    // (the cache is keyed by `renderGeneration`, bumped for every new message body).
    private let compression: CompressionContext
    private var renderGeneration: UInt64 = 0
    private var compressedLZ4 = ByteBuffer()
    private var compressedZstd = ByteBuffer()
    private var lz4Generation: UInt64 = .max
    /// The current message's compressed bytes as shared blocks (see `appendCompressed`).
    private var lz4Block: MessageBlock?
    private var lz4BlockGeneration: UInt64 = .max
    private var zstdBlock: MessageBlock?
    private var zstdBlockGeneration: UInt64 = .max
    private var zstdGeneration: UInt64 = .max
    /// Decompressed client frames land here.
    private var inflated = ByteBuffer()
    private var lastAcceptedSlot = -1
    /// Reactors this turn handed messages to (bit i = reactor i): woken once at turn end.
    private var peersToWake: UInt64 = 0
    /// Targets whose handoff ring overflowed: messages to them go through the (allocating)
    /// inbox until it has drained, so per-sender order is kept.
    private var overflowing: UInt64 = 0
    private(set) var liveConnections = 0

    // Time and stats.
    /// Monotonic time at the start of this turn's dispatch; the origin of messages received now.
    private(set) var turnNanos: UInt64 = 0
    /// Origin time of the message being delivered (latency is measured from it).
    private var originNanos: UInt64 = 0
    private var nextTickNanos: UInt64 = 0
    private var nextSecondNanos: UInt64 = 0
    var counters = ReactorCounters()
    private var window = SecondWindow()
    let snapshots: SnapshotBox
    private var draining = false
    private var drainDeadline: UInt64 = 0

    init(index: Int, shared: ServerShared, listenFD: Int32) throws(SyscallError) {
        self.index = index
        self.shared = shared
        self.listenFD = listenFD
        inbox = try Inbox()
        snapshots = SnapshotBox(index: index)
        core = CoreHandler(config: shared.config, flags: shared.flags, cluster: shared.cluster)
        compression = CompressionContext(zstdLevel: shared.config.zstdLevel, lz4Acceleration: shared.config.lz4Acceleration)
        let env = PluginEnvironment(config: shared.config, rooms: shared.rooms, reactorIndex: index,
                                    flags: shared.flags, cluster: shared.cluster)
        plugins = shared.factories.map { $0(env) }
        pluginFlags = plugins.map { p in p.featureFlag.flatMap { shared.flags[$0] } }
    }

    // MARK: thread body

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
        switch shared.ioMode {
        case .uring:
            let uring = try UringBackend(entries: config.ringEntries, recvBufferCount: config.recvBufferCount,
                                         recvBufferSize: config.recvBufferSize, zeroCopyThreshold: config.sendZCThreshold,
                                         waitBatch: config.waitBatch, waitBatchMicros: config.waitBatchMicros, pool: pool, pipes: pipes)
            if config.sendZCThreshold > 0 && uring.zeroCopyThreshold == 0 {
                shared.logger.warning("IORING_OP_SEND_ZC unsupported by this kernel: plain sends only", ["reactor": "\(index)"])
            }
            backend = uring
        case .epoll:
            backend = try EpollBackend(recvBufferSize: config.recvBufferSize, pool: pool, pipes: pipes)
        }
        // With wait_batch_auto a reactor starts unbatched; its first tick decides (the backend
        // alone would start with batching on wherever the kernel supports it).
        if config.waitBatchAuto { backend.setBatchedWait(false) }
        try backend.addListener(fd: listenFD)
        try backend.addWakeup(fd: inbox.eventFD)
        publishedRingFD.store(backend.ringFD, ordering: .releasing)
    }

    // MARK: test driving (ProtocolHarness)

    func attach(backend: IOBackend) { self.backend = backend }

    func acceptForTesting(fd: Int32) -> Int {
        turnNanos = Clock.monoNanos()
        connectionAccepted(fd: fd)
        return lastAcceptedSlot
    }

    func connection(_ slot: Int) -> Connection? { slot < connections.count ? connections[slot] : nil }

    func endTurnForTesting() {
        endTurn()
        turnNanos = Clock.monoNanos()
        batchNanos = 0
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
            backend.poll(timeoutMillis: wait, handler: self)
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
        // Stop: drop every connection, then the backend.
        // shutdown() first: a pending io_uring request holds a reference to its file, so close()
        // alone would leave the socket open until the ring's (asynchronous) teardown.
        for case let c? in connections {
            if !c.closing { notifyClosed(c) }
            // A connection the backend already closed keeps its table entry until the release
            // is delivered; its fd number may belong to someone else by now.
            if !c.fdClosed {
                Glibc.shutdown(c.fd, Int32(SHUT_RDWR))
                Glibc.close(c.fd)
                c.fdClosed = true
            }
            shared.connectionClosed(peerIP: c.peerIP)
            c.releaseOutput(pool: pool, blocksPool: blocksPool)
        }
        connections.removeAll()
        if listenFD >= 0 {
            Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
            Glibc.close(listenFD)
        }
        backend.shutdown()
    }

    /// End of a turn: one wakeup per reactor we handed messages to, one send per connection
    /// with queued output, then pending closes.
    private func endTurn() {
        flushBatch()
        // What plugins send now was not caused by a message received this turn.
        originNanos = batchNow()
        for p in plugins { p.turnEnded(self) }
        flushBatch()   // plugins may have broadcast
        if !pendingCuts.isEmpty { performCuts() }
        if peersToWake != 0 {
            var mask = peersToWake
            peersToWake = 0
            while mask != 0 {
                let r = mask.trailingZeroBitCount
                mask &= mask - 1
                backend.wakePeer(ringFD: shared.reactors[r].publishedRingFD.load(ordering: .acquiring),
                                 eventFD: shared.reactors[r].inbox.eventFD)
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
            if c.closeAfterFlush && !c.sendInFlight && !c.hasQueuedOutput && c.sendingIsEmpty {
                startClose(c)
            }
        }
        flushList.removeAll(keepingCapacity: true)
        flushOrigins.removeAll(keepingCapacity: true)
    }

    /// `origin`: when the message that made this output was received (0 for output that is
    /// not a message's, such as a close or the rest of a partial send).
    @inline(__always)
    private func markForFlush(_ c: Connection, origin: UInt64 = 0) {
        if !c.inFlushList {
            c.inFlushList = true
            flushList.append(c)
            flushOrigins.append(origin)
        }
    }

    /// A send batch reached the kernel completely.
    @inline(__always)
    private func sendFinished(_ c: Connection) {
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

    // MARK: timers

    private func tick(_ now: UInt64) {
        nextTickNanos = now + 100_000_000
        adaptBatchedWait()
        checkTimeouts(now)
        if now >= nextSecondNanos {
            nextSecondNanos += 1_000_000_000
            wallOffsetMillis = Clock.wallOffsetMillis()
            if nextSecondNanos < now { nextSecondNanos = now + 1_000_000_000 }
            releaseIdleInput()
            pipes?.releaseIdle()
            var snap = window.roll(&counters, index: index, connections: liveConnections)
            snap.openPipes = pipes?.openPipes ?? 0
            snap.backlogged = backloggedConnections(now)
            snap.batchedWait = backend.batchedWait
            snapshots.publish(snap)
            if index == 0 { shared.monitor.evaluate(shared) }
            // Size classes nobody uses any more go back to the system (after a burst).
            let released = pool.trim() + blocksPool.releaseIfIdle()
            backend.releaseIdleMemory()
            releaseIdleHeap(afterFrees: released > 0)
        }
    }

    /// After a second without input, free heap memory goes back to the system: a burst
    /// (connections joining, presence fan-out) leaves freed blocks in the malloc arena that
    /// glibc keeps resident otherwise. On the first idle second, and again on an idle second
    /// in which the pools freed something; a busy reactor never pays for it.
    private func releaseIdleHeap(afterFrees: Bool) {
        defer { bytesInAtLastSecond = counters.bytesIn }
        guard counters.bytesIn == bytesInAtLastSecond else { heapTrimmed = false; return }
        if heapTrimmed && !afterFrees { return }
        heapTrimmed = true
        // Per-turn work lists keep the capacity of the largest fan-out (a presence diff to
        // 5,000 members: 80 KB); an idle reactor starts small again.
        if flushList.capacity > 1024 {
            flushList = []
            flushOrigins = []
        }
        _ = clinux_malloc_trim()
    }
    private var bytesInAtLastSecond = 0
    private var heapTrimmed = true

    /// Partial-message buffers stay with a connection while lines keep arriving split across
    /// receives (with 4 KiB provided buffers every message over 4 KiB is: freeing the buffer
    /// after each one was a malloc per message); once a second the empty ones go back.
    private func releaseIdleInput() {
        for case let c? in connections {
            c.extrasIfPresent?.input.releaseIfEmpty()
        }
    }

    /// `wait_batch_auto`: a minimum wait pays where each message fans out to many sends (the
    /// wait gathers several messages per wakeup for every recipient), and costs where each
    /// message gets one reply. Judged every tick (100 ms) on the tick before: at least 200
    /// room messages (2,000/s) and 4 deliveries per message.
    private func adaptBatchedWait() {
        let messages = roomMessages &- lastRoomMessages
        let deliveries = counters.deliveries &- lastDeliveries
        lastRoomMessages = roomMessages
        lastDeliveries = counters.deliveries
        guard config.waitBatch > 1 else { return }
        backend.setBatchedWait(!config.waitBatchAuto || (messages >= 200 && deliveries >= 4 * messages))
    }

    /// Connections whose oldest queued output has waited over 50 ms: demand the server is not
    /// keeping up with (the monitor judges throughput only then).
    private func backloggedConnections(_ now: UInt64) -> Int {
        var n = 0
        for case let c? in connections where c.sendInFlight && c.sendStartedMs != 0 && Connection.elapsedMs(c.sendStartedMs, now) > 50 {
            n += 1
        }
        return n
    }

    private func checkTimeouts(_ now: UInt64) {
        let helloMs = UInt64(config.helloTimeoutMs)
        let idleMs = UInt64(config.idleTimeoutMs)
        let softNs = UInt64(config.outboundSoftSeconds) * 1_000_000_000
        for case let c? in connections where c.closing && !c.closeStarted && now > c.forceCloseAt {
            closeNow(c)   // its peer stopped reading what we still had to say
        }
        for case let c? in connections where !c.closing {
            // Idle connections hold no buffers: give back output memory a second after the
            // last send (busy ones keep theirs, so steady traffic does not allocate).
            if !c.sendInFlight && !c.hasQueuedOutput && c.sendingIsEmpty && Connection.elapsedMs(c.lastOutputMs, now) > 1000 {
                c.releaseOutput(pool: pool, blocksPool: blocksPool)
            }
            // An HTTP head (or a first line that may become one) has a deadline of its own and
            // never takes the JSON hello/idle path below: 408 for HTTP, a silent close while
            // undecided, so a slowloris client holds a connection for seconds, not minutes.
            if c.framing == .http || c.isSniffingRequestLine {
                if Connection.elapsedMs(c.acceptedMs, now) > UInt64(config.httpHeaderTimeoutMs) {
                    limitHit("http_header_timeout")
                    if c.framing == .http { sendHTTP(c, HTTPRouter.requestTimeout(), since: now) } else { closeNow(c) }
                }
                continue
            }
            if !c.isAuthenticated && c.framing != .http && Connection.elapsedMs(c.acceptedMs, now) > helloMs {
                limitHit("hello_timeout")
                sendError(c, .helloTimeout, "no hello within \(config.helloTimeoutMs) ms", id: nil)
                closeAfterFlush(c)
                continue
            }
            if c.overSoftSince != 0 && now &- c.overSoftSince > softNs {
                cutSlowConsumer(c, "output over outbound_soft_bytes for \(config.outboundSoftSeconds) s")
                continue
            }
            if idleMs > 0 && Connection.elapsedMs(c.lastReceiveMs, now) > idleMs {
                if Connection.elapsedMs(c.lastReceiveMs, now) > 2 * idleMs {
                    limitHit("idle_timeout")
                    sendError(c, .idleTimeout, "no traffic for \(2 * config.idleTimeoutMs) ms", id: nil)
                    closeAfterFlush(c)
                } else if !c.idlePingSent {
                    c.idlePingSent = true
                    reply(to: c) { b in
                        b.append("{\"type\":\"ping\",\"ts\":")
                        b.appendDecimal(wallMillis())
                        b.append("}")
                    }
                }
            }
        }
    }

    func limitHit(_ name: String) {
        counters.limitHits[name, default: 0] += 1
    }

    // MARK: IOEventHandler

    func connectionAccepted(fd: Int32) {
        counters.accepted += 1
        let peer = Socket.peerIPv4(fd)
        switch shared.admit(peerIP: peer) {
        case .admitted: break
        case .serverFull:
            limitHit("max_connections")
            rejectAtAccept(fd, "{\"type\":\"error\",\"code\":\"server_full\",\"message\":\"server is at max_connections\"}\n")
            return
        case .tooManyFromAddress:
            limitHit("max_connections_per_ip")
            rejectAtAccept(fd, "{\"type\":\"error\",\"code\":\"too_many_connections\",\"message\":\"too many connections from this address (max_connections_per_ip)\"}\n")
            return
        }
        if fd < 1_000_000 { Socket.configureAccepted(fd) }   // (harness fds are not sockets)
        let slot = freeSlots.popLast() ?? {
            connections.append(nil)
            return connections.count - 1
        }()
        let c = Connection(fd: fd, slot: slot, peerIP: peer,
                           now: turnNanos == 0 ? Clock.monoNanos() : turnNanos, burst: config.rateLimitBurst)
        connections[slot] = c
        lastAcceptedSlot = slot
        liveConnections += 1
        backend.startReceiving(c)

    }

    private func rejectAtAccept(_ fd: Int32, _ msg: StaticString) {
        Socket.writeOnce(fd, UnsafeRawBufferPointer(start: msg.utf8Start, count: msg.utf8CodeUnitCount))
        Glibc.close(fd)
        counters.closed += 1
    }

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if c.closing { return }
        if c.inputHeld {
            holdBytes(c, bytes)
            return
        }
        counters.bytesIn &+= bytes.count
        // The clock read after this turn's wait returned: a message's latency starts when its
        // receive completion is seen, not when the reactor went to sleep before it arrived.
        let now = batchNow()
        c.lastReceiveMs = Connection.ms(now)
        c.idlePingSent = false
        originNanos = now
        var rest = bytes
        if c.framing == .undetermined {
            let (ok, used) = FrameSplitter.detect(c, rest)
            if !ok {
                sendError(c, .badFrame, "unrecognized framing: start with '{' (JSON lines), a 0 byte (binary frames) or an HTTP request", id: nil)
                closeAfterFlush(c)
                return
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            if c.framing == .undetermined { return }
            if draining && c.framing != .http {
                sendShutdownNotice(c)
                return
            }
        }
        if c.framing == .http {
            handleHTTP(c, rest)
            return
        }
        let maxFrame = config.maxFrameBytes
        let unread = FrameSplitter.feed(c, rest, maxFrame: maxFrame) { event in
            switch event {
            case .frame(let body):
                if c.framing == .binary {
                    let payload = UnsafeRawBufferPointer(rebasing: body[1...])
                    switch CompressionCodec(rawValue: body[0]) {
                    case .raw?:
                        handleMessage(c, payload)
                    case let codec?:
                        inflated.removeAll()
                        handleCompressed(c, codec, payload, maxFrame: maxFrame)
                    case nil:
                        sendError(c, .badFrame, "codec \(body[0]) is not supported (0 raw, 1 lz4, 2 zstd)", id: nil)
                    }
                } else {
                    handleMessage(c, body)
                }
            case .tooLarge:
                limitHit("max_frame_bytes")
                sendError(c, .frameTooLarge, "frame exceeds max_frame_bytes (\(maxFrame))", id: nil)
                closeAfterFlush(c)
            case .badFrame(let why):
                sendError(c, .badFrame, why, id: nil)
            }
            return !c.closing && !c.inputHeld
        }
        if c.inputHeld && !c.closing && unread.count > 0 { holdBytes(c, unread) }
    }

    // MARK: held input (a plugin finishing a message later)

    /// Stops processing `c`'s input after the current message; what arrives meanwhile is kept
    /// (bounded) and processed, in order, by `releaseInput`.
    public func holdInput(_ c: Connection) {
        c.inputHeld = true
    }

    /// Sends the ack owed for the held message, then processes the input kept meanwhile.
    public func releaseInput(_ c: Connection) {
        guard c.inputHeld else { return }
        c.inputHeld = false
        if let id = c.extras.heldAckID {
            c.extras.heldAckID = nil
            id.withUnsafeBytes { id in
                reply(to: c) { b in
                    b.append("{\"type\":\"ack\",\"id\":")
                    b.append(id)
                    b.append("}")
                }
            }
        }
        if c.closing || c.heldInputCount == 0 { return }
        let kept = Array(c.extras.heldInput.readable)
        c.extras.heldInput.removeAll()
        c.extras.heldInput.releaseIfEmpty()
        kept.withUnsafeBytes { connectionReceived(c, $0) }
    }

    private func holdBytes(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if c.heldInputCount + bytes.count > 4 * config.maxFrameBytes {
            limitHit("max_frame_bytes")
            sendError(c, .frameTooLarge, "too much input while a reply is pending", id: nil)
            closeAfterFlush(c)
            return
        }
        c.extras.heldInput.append(bytes)
    }

    /// A client frame in lz4/zstd: inflated (bounded by max_frame_bytes) and handled as JSON.
    private func handleCompressed(_ c: Connection, _ codec: CompressionCodec, _ payload: UnsafeRawBufferPointer, maxFrame: Int) {
        inflated.removeAll()
        do throws(CompressionError) {
            try compression.decompress(codec, payload, maxOutput: maxFrame, into: &inflated)
            handleMessage(c, inflated.readable)
        } catch {
            switch error {
            case .tooLarge:
                limitHit("max_frame_bytes")
                sendError(c, .frameTooLarge, "decompressed frame exceeds max_frame_bytes (\(maxFrame))", id: nil)
                closeAfterFlush(c)
            case .corrupt(let why):
                sendError(c, .badFrame, "corrupt \(codec.name) frame: \(why)", id: nil)
            }
        }
        inflated.removeAll()
    }

    func connectionReceiveEnded(_ c: Connection, error: Int32) {
        // Peer closed or reset: flush what is queued (if the socket still takes it), then close.
        if error != 0 { c.dropQueuedOutput(pool: pool) }
        closeAfterFlush(c)
    }

    func connectionSendCompleted(_ c: Connection, error: Int32) {
        if error != 0 {
            // A peer that reset or went away is its own doing; any other send error is the
            // server's (the monitor's error_rate counts those).
            if error != EPIPE && error != ECONNRESET && error != ETIMEDOUT { counters.serverFailures &+= 1 }
            c.dropQueuedOutput(pool: pool)
            closeAfterFlush(c)
        } else {
            sendFinished(c)
        }
        if c.closeAfterFlush || c.hasQueuedOutput { markForFlush(c) }
    }

    func zeroCopySendFinished(copied: Bool) {
        counters.zeroCopySends &+= 1
        if copied { counters.zeroCopyCopied &+= 1 }
    }

    func connectionReleased(_ c: Connection) {
        c.releaseOutput(pool: pool, blocksPool: blocksPool)
        connections[Int(c.slot)] = nil
        freeSlots.append(Int(c.slot))
        liveConnections -= 1
        counters.closed += 1
        shared.connectionClosed(peerIP: c.peerIP)
    }

    func wakeup() {
        if shared.draining.load(ordering: .acquiring) && !draining { beginDrain() }
        // Ring records first: anything in the overflow inbox is newer than them.
        for source in 0..<shared.reactors.count where source != index {
            shared.handoff[source][index]!.drain { room, origin, body in
                guard let local = room.locals[index] else { return }
                originNanos = origin
                renderGeneration &+= 1
                deliverLocal(local, body, excluding: nil)
            }
        }
        inbox.drain(into: &deliveries)
        for d in deliveries {
            guard let local = d.room.locals[index] else { continue }
            originNanos = d.message.originNanos
            renderGeneration &+= 1
            deliverLocal(local, d.message.body.readable, excluding: nil)
        }
        deliveries.removeAll(keepingCapacity: true)
    }

    // MARK: shutdown

    /// Graceful stop: no new connections, every client told, output flushed (bounded).
    private func beginDrain() {
        draining = true
        drainDeadline = Clock.monoNanos() + UInt64(config.drainTimeoutMs) * 1_000_000
        // The listener stays open so load balancers can read /health (503 now); a new chat
        // connection is told to go away as soon as its first bytes show it is not HTTP (one
        // whose first line is still being sniffed may be HTTP: no JSON for it yet).
        for case let c? in connections where !c.closing && c.framing != .http && !c.isSniffingRequestLine {
            sendShutdownNotice(c)
        }
    }

    private func sendShutdownNotice(_ c: Connection) {
        if c.framing == .jsonLines || c.framing == .binary || c.framing == .undetermined {
            reply(to: c) { b in b.append("{\"type\":\"shutdown\"}") }
        }
        closeAfterFlush(c)
    }

    // MARK: closing

    /// No more input is processed; the connection closes once its output is sent.
    func closeAfterFlush(_ c: Connection, grace: UInt64? = nil) {
        if c.closing { return }
        c.closing = true
        let drainNanos: UInt64 = UInt64(config.drainTimeoutMs) * 1_000_000
        let wait: UInt64 = grace ?? drainNanos
        c.extras.forceCloseAt = turnNanos &+ wait
        c.closeAfterFlush = true
        notifyClosed(c)
        markForFlush(c)
    }

    /// Every processor (and the core) learns the connection is going away, once.
    private func notifyClosed(_ c: Connection) {
        for p in plugins { p.connectionClosed(c, self) }
        core.connectionClosed(c, self)
    }

    /// Closes without flushing (queued output is dropped).
    func closeNow(_ c: Connection) {
        if !c.closing {
            c.closing = true
            notifyClosed(c)
        }
        c.closeAfterFlush = true
        c.dropQueuedOutput(pool: pool)
        startClose(c)
    }

    private func startClose(_ c: Connection) {
        if c.closeStarted { return }
        c.dropInput()
        backend.close(c)
    }

    /// Drops what a consumer has not read and closes it with slow_consumer. Found while a
    /// message is being fanned out, so the cut itself waits for the end of the turn (closing
    /// announces user_left, which must not re-enter the fan-out in progress).
    private func cutSlowConsumer(_ c: Connection, _ why: String) {
        if c.cutReason != nil || c.closing { return }
        c.extras.cutReason = why
        pendingCuts.append(c)
    }

    private func performCuts() {
        let cuts = pendingCuts
        pendingCuts.removeAll(keepingCapacity: true)
        for c in cuts where !c.closing {
            limitHit("slow_consumer")
            // Drop what the consumer has not read and queue the error. It is not reading, so
            // the flush gets a short grace period before the close is forced.
            c.dropQueuedOutput(pool: pool)
            c.overSoftSince = 0
            sendError(c, .slowConsumer, c.cutReason ?? "slow consumer", id: nil)
            closeAfterFlush(c, grace: 250_000_000)
        }
    }

    // MARK: messages

    private func handleMessage(_ c: Connection, _ payload: UnsafeRawBufferPointer) {
        counters.messagesIn &+= 1
        do {
            try JSONReader.parse(payload, into: &fields)
        } catch {
            // The fields parsed before the error stay in the table: an id read in full is
            // echoed in the error and acknowledged like any other failed message.
            let id = Self.idBytes(fields, payload)
            // Malformed lines count against the rate limit like any other: a flood of them is
            // answered rate_limited (and closed after rate_limit_strikes), not bad_json forever.
            do throws(ProtocolError) {
                try admitByRate(c)
                sendError(c, .badJSON, Self.describe(error), id: id)
            } catch {
                sendError(c, error.code, error.message, id: id)
            }
            if let id, !c.closing { ack(c, id) }
            return
        }
        let id = Self.idBytes(fields, payload)
        do throws(ProtocolError) {
            guard let typeField = fields.find("type", in: payload), typeField.kind == .string else {
                throw ProtocolError(.missingField, "field 'type' (a string) is required")
            }
            try admitByRate(c)
            try dispatch(c, JSONReader.string(typeField, in: payload), payload)
        } catch {
            if error.code == .badName { limitHit("bad_name") }
            sendError(c, error.code, error.message, id: id)
            if c.closing { return }
        }
        // Every message with an id is acknowledged once handled, after its reply or error —
        // for a message a plugin finishes later, when it releases the input.
        if let id, c.inputHeld {
            c.extras.heldAckID = Array(id)
        } else if let id {
            ack(c, id)
        }
    }

    /// The `id` field's bytes as sent (strings keep their quotes, so the ack echoes the id
    /// exactly).
    private static func idBytes(_ fields: JSONFieldTable, _ payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let f = fields.find("id", in: payload) else { return nil }
        let start = f.kind == .string ? f.valueStart - 1 : f.valueStart
        let end = f.kind == .string ? f.valueEnd + 1 : f.valueEnd
        return UnsafeRawBufferPointer(rebasing: payload[start..<end])
    }

    private func ack(_ c: Connection, _ id: UnsafeRawBufferPointer) {
        reply(to: c) { b in
            b.append("{\"type\":\"ack\",\"id\":")
            b.append(id)
            b.append("}")
        }
    }

    /// Token bucket per connection; sustained abuse closes the connection.
    @inline(__always)
    private func admitByRate(_ c: Connection) throws(ProtocolError) {
        let rate = config.rateLimitPerSec
        if rate == 0 { return }
        if c.tokens < 1 {
            let elapsed = Double(Connection.elapsedMs(c.tokensRefilledMs, turnNanos)) / 1e3
            c.tokens = Float(min(Double(config.rateLimitBurst), Double(c.tokens) + elapsed * Double(rate)))
            c.tokensRefilledMs = Connection.ms(turnNanos)
        }
        if c.tokens >= 1 {
            c.tokens -= 1
            c.rateStrikes = 0
            return
        }
        limitHit("rate_limited")
        c.rateStrikes += 1
        if c.rateStrikes >= config.rateLimitStrikes {
            closeAfterFlush(c)
            throw ProtocolError(.rateLimited, "over \(rate) messages/s for too long; closing")
        }
        throw ProtocolError(.rateLimited, "over \(rate) messages/s (burst \(config.rateLimitBurst)); message dropped")
    }

    /// Hello gate, then the plugin chain, then the core handler.
    private func dispatch(_ c: Connection, _ type: String, _ payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        if !c.isAuthenticated && type != "hello" {
            throw ProtocolError(.helloRequired, "send hello first")
        }
        var processor: MessageProcessor = core
        var found = false
        for i in 0..<plugins.count where plugins[i].canHandle(type) {
            if let flag = pluginFlags[i], !FeatureGate.isEnabled(flag, for: c) {
                throw ProtocolError(.featureDisabled, "'\(type)' is disabled (feature flag \(flag.name))")
            }
            processor = plugins[i]
            found = true
            break
        }
        if !found && !core.canHandle(type) {
            throw ProtocolError(.unsupportedType, "unsupported message type '\(type)'")
        }
        try withUnsafePointer(to: &fields) { (fp) throws(ProtocolError) in
            try processor.process(IncomingMessage(connection: c, type: type, bytes: payload, fields: fp), self)
        }
    }

    static func describe(_ e: JSONError) -> String {
        switch e {
        case .syntax(let at): "malformed JSON at byte \(at)"
        case .invalidUTF8(let at): "invalid UTF-8 at byte \(at)"
        case .notAnObject: "a message must be a JSON object"
        case .tooDeep: "JSON nested too deeply"
        case .tooManyFields: "too many fields in one message"
        }
    }

    // MARK: output (the API plugins use)

    /// Renders one message with `body` and queues it for `c`, framed for its connection.
    public func reply(to c: Connection, _ body: (inout ByteBuffer) -> Void) {
        // A batched room message `c` is to receive must not be overtaken by this reply.
        if batch.room != nil && !batch.onlyFrom(Unmanaged.passUnretained(c).toOpaque()) { flushBatch() }
        renderGeneration &+= 1
        render.removeAll()
        body(&render)
        enqueue(render.readable, to: c)
    }

    public func sendError(_ c: Connection, _ code: ErrorCode, _ message: String, id: UnsafeRawBufferPointer?) {
        counters.errorsSent &+= 1
        reply(to: c) { b in
            b.append("{\"type\":\"error\",\"code\":\"")
            b.append(contentsOf: code.rawValue)
            b.append("\",\"message\":")
            b.appendJSONString(message)
            if let id {
                b.append(",\"id\":")
                b.append(id)
            }
            b.append("}")
        }
    }

    /// Renders a room message once and delivers it to every member of the room on every
    /// reactor, except `excluded`.
    /// The bytes of the message `broadcast` or `reply` rendered last (valid until the next one).
    public var lastRendered: UnsafeRawBufferPointer { render.readable }

    public func broadcast(_ room: LocalRoom, excluding excluded: Connection?, _ body: (inout ByteBuffer) -> Void) {
        renderGeneration &+= 1
        render.removeAll()
        body(&render)
        let bytes = render.readable
        deliverLocal(room, bytes, excluding: excluded)
        let others = room.shared.reactorMask.load(ordering: .acquiring) & ~(1 << UInt64(index))
        if others != 0 { handOff(room.shared, bytes, to: others) }
    }

    /// Delivers a message to every member of `room` on every reactor, also where this reactor
    /// has no members of its own (batched presence: the diff is sent by the reactor whose
    /// connections joined or left, after they are gone).
    public func broadcast(_ room: SharedRoom, _ body: (inout ByteBuffer) -> Void) {
        if let local = room.locals[index] { return broadcast(local, excluding: nil, body) }
        let others = room.reactorMask.load(ordering: .acquiring) & ~(1 << UInt64(index))
        guard others != 0 else { return }
        renderGeneration &+= 1
        render.removeAll()
        body(&render)
        handOff(room, render.readable, to: others)
    }

    /// One copy per target reactor into its handoff ring; the overflow inbox (one shared,
    /// allocated copy) when a ring is full or the message too big.
    private func handOff(_ room: SharedRoom, _ bytes: UnsafeRawBufferPointer, to targets: UInt64) {
        var overflow: RenderedMessage?
        var mask = targets
        while mask != 0 {
            let r = mask.trailingZeroBitCount
            let bit = UInt64(1) << UInt64(r)
            mask &= mask - 1
            let target = shared.reactors[r]
            if overflowing & bit != 0 && target.inbox.isEmpty { overflowing &= ~bit }
            if overflowing & bit == 0,
               shared.handoff[index][r]!.tryWrite(room: room, origin: originNanos, body: bytes) {
                peersToWake |= bit
                continue
            }
            overflowing |= bit
            if overflow == nil {
                let m = RenderedMessage(originNanos: originNanos)
                m.body.append(bytes)
                overflow = m
            }
            target.inbox.post(RoomDelivery(room: room, message: overflow!))
        }
    }

    private func deliverLocal(_ room: LocalRoom, _ bytes: UnsafeRawBufferPointer, excluding excluded: Connection?) {
        roomMessages &+= 1
        let skip = excluded.map { Unmanaged.passUnretained($0).toOpaque() }
        let threshold = config.sharedBlockThreshold
        // With splicing on, big messages are batched too: the batch may reach the splice
        // threshold, and a spliced batch costs two calls per member however many it holds.
        let spliceable = pipes != nil && room.memberRefs.count >= RoomBatch.minMembers
            && bytes.count < SplicePipes.capacity
        if threshold > 0 && bytes.count >= threshold && !spliceable {
            // Large message: rendered once into a shared block that every member's queue
            // references (the kernel reads it once per socket; no copy per recipient here).
            flushBatch()
            let block = MessageBlock.make(copying: bytes, trailer: UInt8(ascii: "\n"), pool: pool)
            for m in room.memberRefs where m.toOpaque() != skip {
                m._withUnsafeGuaranteedRef { enqueue(bytes, block: block, to: $0) }
            }
            block.release(to: pool)
            return
        }
        // Batched per room for the rest of the turn (see `RoomBatch`). Rooms of a few members
        // take the copy straight away (the batch would cost more than it saves).
        if room.memberRefs.count < RoomBatch.minMembers {
            flushBatch()
            for m in room.memberRefs where m.toOpaque() != skip {
                m._withUnsafeGuaranteedRef { enqueue(bytes, to: $0) }
            }
            return
        }
        if batch.room !== room || (pipes != nil && batch.bytes.readableCount + bytes.count >= SplicePipes.capacity) {
            flushBatch()   // another room, or a batch that would not fit one pipe
            batch.begin(room, reactor: self)
        }
        batch.add(bytes, excluded: skip, origin: originNanos)
    }

    /// Delivers the turn's batched messages of one room: every member that gets all of them as
    /// JSON lines takes the whole batch at once (its pipe when the batch reaches
    /// `splice_threshold`, else one reference to a shared block, or one copy when the batch is
    /// small) instead of one copy per message; members using binary
    /// frames or excluded from some message (their own, without echo) get them one by one.
    /// Called before anything else is queued that could overtake the batch: another room's
    /// message, a reply, a membership change, a big message, the end of the turn.
    func flushBatch() {
        guard let room = batch.room else { return }
        batch.room = nil
        room.batchingReactor = nil
        let all = batch.bytes.readable
        let count = batch.messages.count
        let threshold = config.sharedBlockThreshold
        // Members take the batch by tee + splice when it is big enough (loaded into the source
        // pipe on first use), else by a shared block (made on first use), else by a copy.
        var splicing = pipes != nil && all.count >= config.spliceThreshold
        var loaded = false
        var block: MessageBlock?
        let cap = min(config.outboundSoftBytes, config.outboundHardBytes)
        let origin = batch.messages[0].origin
        var delivered = 0
        batch.oneByOne.removeAll(keepingCapacity: true)
        for m in room.memberRefs {
            m._withUnsafeGuaranteedRef { c in
                if c.closeStarted { return }
                if c.sendsBinary || batch.excludes(m.toOpaque())
                    || c.pendingOutputBytes &+ all.count >= cap {
                    batch.oneByOne.append(m)
                    return
                }
                delivered &+= count
                if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(origin == 0 ? Clock.monoNanos() : origin) }
                // Into a pipe only behind nothing but earlier spliced batches: spliced bytes
                // always go out first (see OutputBlocks.pipe). A send in flight with nothing
                // being sent is a wait for room for those.
                if splicing && c.out.isEmpty && c.sendingIsEmpty && (c.blocks?.pointee.out.isEmpty ?? true) {
                    if !loaded {
                        loaded = pipes.unsafelyUnwrapped.load(all)
                        splicing = loaded
                    }
                    if loaded {
                        if c.blocks == nil { c.blocks = blocksPool.take() }
                        switch pipes.unsafelyUnwrapped.tee(into: &c.blocks.unsafelyUnwrapped.pointee, socket: c.fd) {
                        case .teed:
                            counters.splicedBatches &+= 1
                            counters.bytesOut &+= all.count   // (queuedOutputBytes leaves pipes out)
                            markForFlush(c, origin: origin)
                            return
                        case .noRoom:
                            break
                        case .broken:
                            shared.logger.error("splice pipe out of step: closing the connection", ["id": "\(c.slot)"])
                            cutSlowConsumer(c, "internal error: output stream broken")
                            return
                        }
                    }
                }
                if threshold > 0 && all.count >= threshold {
                    if block == nil { block = MessageBlock.make(copying: all, trailer: nil, pool: pool) }
                    queueBlock(block.unsafelyUnwrapped, length: all.count, to: c)
                } else {
                    c.out.reserve(all.count, pool: pool)
                    c.out.appendReserved(all)
                }
                markForFlush(c, origin: origin)
            }
        }
        counters.deliveries &+= delivered
        block?.release(to: pool)
        if loaded { pipes.unsafelyUnwrapped.finishBatch() }
        if !batch.oneByOne.isEmpty {
            // Message by message (the compression cache is per message), member by member;
            // a big one (batched only when splicing) through a shared block of its own.
            for msg in batch.messages {
                renderGeneration &+= 1
                originNanos = msg.origin
                let body = UnsafeRawBufferPointer(rebasing: all[msg.start..<(msg.start + msg.count)])
                let own = threshold > 0 && msg.count >= threshold
                    ? MessageBlock.make(copying: body, trailer: UInt8(ascii: "\n"), pool: pool) : nil
                for m in batch.oneByOne where m.toOpaque() != msg.excluded {
                    m._withUnsafeGuaranteedRef { enqueue(body, block: own, to: $0) }
                }
                own?.release(to: pool)
            }
            batch.oneByOne.removeAll(keepingCapacity: true)
        }
        batch.reset()
    }

    /// Appends one message to `c`'s output with its connection's framing (and codec). With
    /// `block` (holding `body` and a line end), the message is queued by reference.
    @inline(__always)
    private func enqueue(_ body: UnsafeRawBufferPointer, block: MessageBlock? = nil, to c: Connection) {
        if c.closeStarted { return }
        counters.deliveries &+= 1
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(originNanos == 0 ? Clock.monoNanos() : originNanos) }
        if c.sendsBinary {
            if c.outCodec != .raw && body.count >= config.compressionThreshold {
                appendCompressedFrame(body, codec: c.outCodec, to: c)
            } else if let block {
                appendFrameHeader(count: body.count, codec: 0, reserveBody: false, to: c)
                queueBlock(block, length: body.count, to: c)   // the body without the line end
            } else {
                appendFrameHeader(count: body.count, codec: 0, to: c)
                c.out.appendReserved(body)
            }
        } else if let block {
            queueBlock(block, length: block.count, to: c)
        } else {
            c.out.reserve(body.count + 1, pool: pool)
            c.out.appendReserved(body)
            c.out.appendReserved(UInt8(ascii: "\n"))
        }
        markForFlush(c, origin: originNanos)
        let pending = c.pendingOutputBytes
        if pending > config.outboundHardBytes && !c.closing {
            cutSlowConsumer(c, "output over outbound_hard_bytes (\(config.outboundHardBytes))")
        } else if pending > config.outboundSoftBytes && c.overSoftSince == 0 {
            c.overSoftSince = turnNanos
        }
    }

    @inline(__always)
    private func queueBlock(_ block: MessageBlock, length: Int, to c: Connection) {
        if c.blocks == nil { c.blocks = blocksPool.take() }
        c.blocks.unsafelyUnwrapped.pointee.out.append(block, length: length, ownQueued: c.out.readableCount)
    }

    @inline(__always)
    private func appendFrameHeader(count: Int, codec: UInt8, reserveBody: Bool = true, to c: Connection) {
        let n = UInt32(count + 1)
        c.out.reserve(reserveBody ? 5 + count : 5, pool: pool)   // the header (and the body that follows it)
        c.out.appendReserved(UInt8(truncatingIfNeeded: n >> 24))
        c.out.appendReserved(UInt8(truncatingIfNeeded: n >> 16))
        c.out.appendReserved(UInt8(truncatingIfNeeded: n >> 8))
        c.out.appendReserved(UInt8(truncatingIfNeeded: n))
        c.out.appendReserved(codec)
    }

    /// Compresses the current message once per codec and frames the shared bytes for `c`.
    private func appendCompressedFrame(_ body: UnsafeRawBufferPointer, codec: CompressionCodec, to c: Connection) {
        switch codec {
        case .lz4:
            compressOnce(.lz4, body, into: &compressedLZ4, generation: &lz4Generation)
            appendCompressed(compressedLZ4.readable, codec: codec, block: &lz4Block, blockGeneration: &lz4BlockGeneration, to: c)
        case .zstd:
            compressOnce(.zstd, body, into: &compressedZstd, generation: &zstdGeneration)
            appendCompressed(compressedZstd.readable, codec: codec, block: &zstdBlock, blockGeneration: &zstdBlockGeneration, to: c)
        case .raw:
            appendFrameHeader(count: body.count, codec: 0, to: c)
            c.out.appendReserved(body)
        }
    }

    /// Frames this message's compressed bytes for `c`: a header in its own bytes and, at or
    /// over `shared_block_threshold`, a reference to one shared block per message and codec
    /// (made on first use, kept until the next message) instead of a copy per member.
    private func appendCompressed(_ compressed: UnsafeRawBufferPointer, codec: CompressionCodec,
                                  block: inout MessageBlock?, blockGeneration: inout UInt64, to c: Connection) {
        let n = compressed.count
        let threshold = config.sharedBlockThreshold
        guard threshold > 0 && n >= threshold else {
            appendFrameHeader(count: n, codec: codec.rawValue, to: c)
            c.out.appendReserved(compressed)
            return
        }
        if blockGeneration != renderGeneration || block == nil {
            block?.release(to: pool)
            block = MessageBlock.make(copying: compressed, pool: pool)
            blockGeneration = renderGeneration
        }
        appendFrameHeader(count: n, codec: codec.rawValue, reserveBody: false, to: c)
        queueBlock(block!, length: n, to: c)
    }

    /// Fills `buffer` with `body` compressed by `codec` unless it already holds this message.
    private func compressOnce(_ codec: CompressionCodec, _ body: UnsafeRawBufferPointer,
                              into buffer: inout ByteBuffer, generation: inout UInt64) {
        if generation == renderGeneration { return }
        buffer.removeAll()
        compression.compress(codec, body, into: &buffer)
        generation = renderGeneration
    }

    // MARK: HTTP

    private func handleHTTP(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        c.extras.input.append(bytes)
        guard let response = HTTPRouter.route(c.extras.input.readable, from: c, shared: shared) else {
            return   // request incomplete
        }
        c.extras.input.removeAll()
        sendHTTP(c, response, since: originNanos)
    }

    /// Queues a whole response and closes after it: one request per connection.
    private func sendHTTP(_ c: Connection, _ response: borrowing ByteBuffer, since: UInt64) {
        c.out.append(response.readable, pool: pool)
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(since) }
        closeAfterFlush(c)
    }
}
