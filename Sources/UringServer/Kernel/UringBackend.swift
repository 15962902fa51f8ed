import CLinux
import Glibc
import Primitives

/// io_uring backend: multishot accept, multishot recv into a provided-buffer ring, one send in
/// flight per socket, everything a turn queued submitted by one io_uring_submit_and_wait.
///
/// user_data packs the operation, the connection's slot and the slot's generation (`SlotTable`),
/// and each kind of operation has its own record in the connection (`ConnectionOps`): a
/// connection is released once every record is idle. When the SQ is full, prepared SQEs wait
/// in a FIFO and go in before the next submit (never a submit in the middle of dispatch).
final class UringBackend: IOBackend {
    enum Op: UInt8 {
        case accept = 1, recv = 2, send = 3, wake = 4
        /// A MSG_RING from another reactor (arrives on this ring) / our own MSG_RING's completion.
        case peerWake = 5, peerWakeSent = 6
        /// IORING_OP_SEND_ZC: a result CQE, then (flagged F_NOTIF) the buffer-release CQE.
        case sendZC = 7
        /// IORING_OP_POLL_ADD (POLLOUT): the socket has room again for spliced bytes.
        case spliceReady = 8
        /// Direct descriptors, `accept` variant (`UringDirectAccept.swift`): an accept lane
        /// (its number in the tag's slot field) straight into the table / into a plain fd (the
        /// table was full); a connection's fd install, fixed-slot close, shutdown; a refusal's
        /// send and close.
        case acceptDirect = 9, acceptPlain = 10, install = 11, closeDirect = 12, shutdownDirect = 13
        case refuseSent = 14, refuseClosed = 15
    }

    // Not in liburing 2.3's headers (kernel 6.2+): ask the notification to say whether the
    // kernel had to copy after all.
    static let sendZCReportUsage: UInt16 = 1 << 3
    static let notifUsageZCCopied: UInt32 = 1 << 31
    static let fixedFileFlag = UInt8(1 << IOSQE_FIXED_FILE_BIT)

    var ring = io_uring()
    var bufRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let bufCount: Int
    let bufSize: Int
    let bufMask: Int32
    let bufBase: UnsafeMutableRawPointer
    private static let bufGroup: UInt16 = 0
    /// Buffers handed back this batch; made visible to the kernel in one advance.
    var pendingRecycles: Int32 = 0
    /// Buffers go back to the ring in bid order, so ring slot i always holds buffer i: then a
    /// bundle's buffers (consecutive ring slots) are consecutive bids. A buffer handed back out
    /// of turn waits here until those before it are back (`giveBack`).
    let returnedEarly: UnsafeMutablePointer<Bool>
    /// The buffer the ring expects back next.
    var nextReturn = 0
    /// Incremental consumption: where the kernel's next write into each buffer starts (the
    /// bytes before it were delivered by earlier completions).
    let consumed: UnsafeMutablePointer<Int32>
    /// The techniques this ring uses (the config's, less what the kernel refused).
    let techniques: UringTechniques
    /// Fixed-file table: slot i holds the socket of the connection in reactor slot i when
    /// `registered[i]` (see `UringTechniques.fixedFiles`).
    let registered: UnsafeMutablePointer<Bool>
    /// `accept` variant: each accept lane's peer address and its length (the kernel writes
    /// them when the accept completes).
    let acceptAddrs: UnsafeMutablePointer<sockaddr_in>
    let acceptLens: UnsafeMutablePointer<socklen_t>
    /// `accept` variant: fixed slots held by connections (until their close completes) or
    /// claimed by a lane armed to accept into the table. A full table makes the kernel drop the
    /// connection it accepted (ENFILE, the peer sees a reset), so a lane accepts into the table
    /// only when a slot is surely free, and a plain fd otherwise.
    var fixedClaimed = 0
    /// A receive completed since the last `releaseIdleMemory`; the buffers' pages have been
    /// given back since the last receive.
    var receivedSinceIdleCheck = false
    var buffersReleased = true

    var listenFD: Int32 = -1
    var slots = SlotTable()
    /// Connections whose last operation completed after their close: handed back after the batch.
    var released: [Connection] = []
    /// Prepared SQEs that found the SQ full, in order; moved into the SQ before the next submit.
    var overflow: [io_uring_sqe] = []
    var counters = KernelCounters()
    /// CQE pointers of the batch being reaped.
    static let cqeBatchSize = 256
    let cqeBatch = UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>.allocate(capacity: UringBackend.cqeBatchSize)
    var wakeTarget: WakeTarget?
    /// Where the eventfd read lands. Allocated: the kernel writes it after the call that
    /// prepared the read has returned, so it needs a fixed address (a pointer from
    /// withUnsafeMutablePointer is only valid inside the closure).
    private let wakeValue = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Connections whose multishot recv ended with ENOBUFS: re-armed after the batch recycled.
    var rearmRecv: [Connection] = []
    let setupFlags: UInt32
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC (0: never, or unsupported here).
    let zeroCopyThreshold: Int

    /// Batched waiting (kernel 6.12+, IORING_FEAT_MIN_TIMEOUT): wake when this many completions
    /// are ready, or `waitBatchMicros` after the wait began if at least one is. 0: unsupported
    /// here or disabled; then every completion wakes the reactor.
    let waitBatch: UInt32
    let waitBatchMicros: UInt32
    /// Send SQEs prepared since the last wait: their completions (mostly posted during the
    /// submit itself) carry no new work, so the batched wait counts past them.
    var sendsSinceWait: UInt32 = 0

    /// The reactor's pool: shared message blocks go back to it once sent.
    let pool: BufferPool
    /// The reactor's pipes for spliced room batches (nil: it does not splice).
    let pipes: SplicePipes?

    init(entries: Int, recvBufferCount: Int, recvBufferSize: Int, zeroCopyThreshold: Int,
         waitBatch: Int = 0, waitBatchMicros: Int = 0, techniques: UringTechniques = UringTechniques(recvBundle: false, bufIncremental: false),
         pool: BufferPool, pipes: SplicePipes? = nil) throws(SyscallError) {
        self.pool = pool
        self.pipes = pipes
        var flags: UInt32 = 0
        _ = try Sys.negated("io_uring_queue_init", clinux_queue_init(&ring, UInt32(entries), &flags))
        setupFlags = flags
        let batching = waitBatch > 1 && waitBatchMicros > 0 && clinux_min_wait_supported(&ring) != 0
        self.waitBatch = batching ? UInt32(waitBatch) : 0
        self.waitBatchMicros = batching ? UInt32(waitBatchMicros) : 0
        // Registered ring fd: every io_uring_enter skips the fd table lookup (fdget/fdput);
        // liburing then enters with IORING_ENTER_REGISTERED_RING. Optional (kernel 5.18+);
        // other rings still reach this one through its real fd (MSG_RING).
        _ = io_uring_register_ring_fd(&ring)
        self.zeroCopyThreshold = zeroCopyThreshold > 0 && clinux_opcode_supported(&ring, Int32(IORING_OP_SEND_ZC.rawValue)) != 0
            ? zeroCopyThreshold : 0
        var err: Int32 = 0
        var used = techniques
        var ringFlags: UInt16 = 0
        if used.bufIncremental { ringFlags |= UInt16(IOU_PBUF_RING_INC) }
        var br = clinux_buf_ring_setup_flags(&ring, UInt32(recvBufferCount), Self.bufGroup, ringFlags, &err)
        if br == nil && ringFlags != 0 {
            used.bufIncremental = false   // a kernel without IOU_PBUF_RING_INC: whole buffers
            br = clinux_buf_ring_setup(&ring, UInt32(recvBufferCount), Self.bufGroup, &err)
        }
        guard let br else {
            io_uring_queue_exit(&ring)
            registered = .allocate(capacity: 1)
            acceptAddrs = .allocate(capacity: 1)
            acceptLens = .allocate(capacity: 1)
            throw SyscallError(call: "io_uring_register_buf_ring", errno: -err)
        }
        if clinux_ring_features(&ring) & UInt32(IORING_FEAT_RECVSEND_BUNDLE) == 0 { used.recvBundle = false }
        if used.fixedFiles > 0 && io_uring_register_files_sparse(&ring, UInt32(used.fixedFiles)) != 0 {
            used.fixedFiles = 0   // no sparse tables (or over RLIMIT_NOFILE): plain fds
        }
        if used.fixedFiles == 0 { used.acceptDirect = false }
        acceptAddrs = .allocate(capacity: Self.acceptLanes)
        acceptAddrs.initialize(repeating: sockaddr_in(), count: Self.acceptLanes)
        acceptLens = .allocate(capacity: Self.acceptLanes)
        acceptLens.initialize(repeating: 0, count: Self.acceptLanes)
        registered = .allocate(capacity: max(1, used.fixedFiles))
        registered.initialize(repeating: false, count: max(1, used.fixedFiles))
        self.techniques = used
        bufRing = br
        bufCount = recvBufferCount
        bufSize = recvBufferSize
        bufMask = io_uring_buf_ring_mask(UInt32(recvBufferCount))
        // One mapping for all buffers; pages are only backed once the kernel writes into them.
        let mem = mmap(nil, recvBufferCount * recvBufferSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let mem, mem != MAP_FAILED else {
            clinux_buf_ring_free(&ring, br, UInt32(recvBufferCount), Self.bufGroup)
            io_uring_queue_exit(&ring)
            throw SyscallError(call: "mmap", errno: Errno.current.rawValue)
        }
        bufBase = mem
        returnedEarly = .allocate(capacity: recvBufferCount)
        returnedEarly.initialize(repeating: false, count: recvBufferCount)
        consumed = .allocate(capacity: recvBufferCount)
        consumed.initialize(repeating: 0, count: recvBufferCount)
        for i in 0..<recvBufferCount {
            io_uring_buf_ring_add(bufRing, bufBase + i * bufSize, UInt32(bufSize), UInt16(i), bufMask, Int32(i))
        }
        io_uring_buf_ring_advance(bufRing, Int32(recvBufferCount))
    }

    func shutdown() {
        if listenFD >= 0 {
            Glibc.shutdown(listenFD, Int32(SHUT_RDWR))
            Glibc.close(listenFD)
            listenFD = -1
        }
        // shutdown() first: a pending request holds a reference to its file, so close() alone
        // would leave the socket open until the ring's (asynchronous) teardown.
        shutdownDirect()
        slots.forEach { c in
            if !c.fdClosed && c.fd >= 0 {
                Glibc.shutdown(c.fd, Int32(SHUT_RDWR))
                Glibc.close(c.fd)
                c.lifecycle = .fdClosed
            }
        }
        wakeTarget?.ringFD.store(-1, ordering: .releasing)
        cqeBatch.deallocate()
        clinux_buf_ring_free(&ring, bufRing, UInt32(bufCount), Self.bufGroup)
        munmap(bufBase, bufCount * bufSize)
        returnedEarly.deallocate()
        consumed.deallocate()
        registered.deallocate()
        io_uring_queue_exit(&ring)
        acceptAddrs.deallocate()   // after the exit: pending accepts write them until then
        acceptLens.deallocate()
        wakeValue.deallocate()   // after the exit: the ring's pending read is gone with it
    }

    /// The provided buffers are used round-robin, so even light traffic over many connections
    /// touches every one of them (1 MiB per reactor by default). After a second with no receive
    /// their pages go back to the system; the next receive faults in only what it uses.
    ///
    /// Safe only with DEFER_TASKRUN: then the kernel copies into a provided buffer solely while
    /// this thread is inside io_uring_enter, and every buffer it filled has a CQE. With the CQ
    /// empty and no enter in progress, no buffer holds data and none is being written.
    func releaseIdleMemory() {
        defer { receivedSinceIdleCheck = false }
        guard !receivedSinceIdleCheck, !buffersReleased,
              setupFlags & UInt32(IORING_SETUP_DEFER_TASKRUN) != 0,
              io_uring_cq_ready(&ring) == 0 else { return }
        _ = madvise(bufBase, bufCount * bufSize, MADV_DONTNEED)
        buffersReleased = true
    }

    // MARK: submission

    /// Prepares one SQE with `prep` and tags it: in the SQ when it has room and nothing is
    /// waiting, else at the end of the overflow FIFO (order is kept either way).
    @inline(__always)
    func submit(_ tag: UInt64, _ prep: (UnsafeMutablePointer<io_uring_sqe>) -> Void) {
        if overflow.isEmpty, let s = io_uring_get_sqe(&ring) {
            prep(s)
            io_uring_sqe_set_data64(s, tag)
            return
        }
        var local = io_uring_sqe()
        prep(&local)
        io_uring_sqe_set_data64(&local, tag)
        overflow.append(local)
    }

    /// Moves the overflow FIFO into the SQ, submitting (without waiting) whenever it fills.
    func drainOverflow() {
        var i = 0
        while i < overflow.count {
            if let s = io_uring_get_sqe(&ring) {
                s.pointee = overflow[i]
                i += 1
            } else {
                _ = io_uring_submit(&ring)
            }
        }
        // A burst (thousands of connections arriving in one turn) can queue thousands of SQEs
        // of 64 bytes; that capacity is not kept once the burst is over.
        overflow.removeAll(keepingCapacity: overflow.capacity <= 256)
    }

    @inline(__always)
    func tag(_ c: Connection, _ op: Op) -> UInt64 { slots.tag(c, op.rawValue) }
    @inline(__always)
    private static func tag(_ op: Op) -> UInt64 { UInt64(op.rawValue) }

    func addListener(fd: Int32) throws(SyscallError) {
        listenFD = fd
        if techniques.acceptDirect {
            // Accepted sockets inherit TCP_NODELAY from the listener (they have no fd to set it on).
            try Socket.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            armAcceptLanes()
        } else {
            armAccept()
        }
    }

    func armAccept() {
        // Non-blocking sockets: io_uring's own operations do not care, and the direct splice
        // calls (see `SplicePipes`) must never wait for room in a socket.
        let fd = listenFD
        submit(Self.tag(.accept)) { io_uring_prep_multishot_accept($0, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue)) }
    }

    func addWakeup(_ target: WakeTarget) throws(SyscallError) {
        wakeTarget = target
        armWake()
        // Other io_uring reactors wake this one with a MSG_RING to this ring.
        target.ringFD.store(ring.ring_fd, ordering: .releasing)
    }

    func armWake() {
        guard let fd = wakeTarget?.eventFD.rawValue else { return }
        let value = wakeValue
        submit(Self.tag(.wake)) { io_uring_prep_read($0, fd, value, 8, 0) }
    }

    func wake(_ peer: WakeTarget) {
        let ringFD = peer.ringFD.load(ordering: .acquiring)
        guard ringFD >= 0 else { return peer.signal() }
        // The completion lands on the peer's ring with user_data `peerWake`.
        submit(Self.tag(.peerWakeSent)) { io_uring_prep_msg_ring($0, ringFD, 0, UInt64(Op.peerWake.rawValue), 0) }
    }

    func refuse(_ socket: AcceptedSocket, _ message: UnsafeRawBufferPointer) {
        if socket.fixedIndex >= 0 { return refuseDirect(socket.fixedIndex, message) }
        Socket.writeOnce(socket.fd, message)
        Glibc.close(socket.fd)
    }

    /// Called once per connection, right after the accept; the connection is tracked (its
    /// completions resolve) from here until its release.
    func startReceiving(_ c: Connection) {
        slots.register(c)
        let slot = Int(c.slot)
        if slot < techniques.fixedFiles && !techniques.acceptDirect {
            // Synchronous: the receive armed next names the slot. A failure leaves the plain fd.
            var fd = c.fd
            registered[slot] = io_uring_register_files_update(&ring, UInt32(slot), &fd, 1) == 1
        }
        armRecv(c)
    }

    /// What an SQE for `c` names: its fixed-file slot, or its fd.
    @inline(__always)
    func target(_ c: Connection) -> (fd: Int32, fixed: Bool) {
        if c.fixedIndex >= 0 { return (c.fixedIndex, true) }
        let slot = Int(c.slot)
        return slot < techniques.fixedFiles && registered[slot] ? (c.slot, true) : (c.fd, false)
    }

    /// Drops `c`'s socket from the fixed-file table (the table's reference would keep the
    /// socket open after close(2)). Synchronous, so the slot is free before it is reused.
    func unregisterFixed(_ c: Connection) {
        let slot = Int(c.slot)
        guard slot < techniques.fixedFiles, registered[slot] else { return }
        var none: Int32 = -1
        _ = io_uring_register_files_update(&ring, UInt32(slot), &none, 1)
        registered[slot] = false
    }

    func armRecv(_ c: Connection) {
        let (fd, fixed) = target(c), bundle: Int32 = techniques.recvBundle ? 1 : 0
        submit(tag(c, .recv)) {
            clinux_prep_recv_multishot_bundle($0, fd, Self.bufGroup, bundle)
            if fixed { $0.pointee.flags |= Self.fixedFileFlag }
        }
        c.ops.recv = .inFlight
    }

    func send(_ c: Connection) {
        precondition(!c.sendInFlight)
        if let pipes, let b = c.output.blocks, b.pointee.pipeBytes > 0 {
            // Spliced bytes go first (they were queued before anything else; see OutputBlocks).
            switch pipes.drain(&b.pointee, to: c.fd) {
            case .drained:
                if !c.hasQueuedOutput && c.sendingIsEmpty { return }   // the caller finishes it
            case .blocked:
                waitForRoom(c)
                return
            case .failed:
                // The stream cannot go on without those bytes. Shut the socket down so the
                // poll completes at once with POLLHUP, which reports the failure (this call
                // cannot: the reactor is in the middle of its turn).
                pipes.discard(&b.pointee)
                Glibc.shutdown(c.fd, Int32(SHUT_RDWR))
                waitForRoom(c)
                return
            }
        }
        if c.sendingIsEmpty {
            // The queue becomes the in-flight buffer; new output goes to a fresh queue.
            c.output.startSending()
        }
        let r = c.output.sending.readable
        let (fd, fixed) = target(c)
        if let b = c.output.blocks, !b.pointee.sending.isEmpty {
            // Shared blocks: one sendmsg whose iovecs interleave our own bytes and the blocks
            // (the kernel reads each block once per socket; nothing is copied per recipient).
            let msg = b.pointee.message(b.pointee.sending, own: r)
            submit(tag(c, .send)) {
                io_uring_prep_sendmsg($0, fd, msg, UInt32(MSG_NOSIGNAL))
                if fixed { $0.pointee.flags |= Self.fixedFileFlag }
            }
        } else if zeroCopyThreshold > 0 && r.count >= zeroCopyThreshold && !c.ops.zeroCopyCopies {
            // A forced close with this send's pages pending needs SO_LINGER, so a real fd.
            if c.fd < 0 { needsRealFD(c) }
            // The kernel sends from our pages; `sending` stays untouched until the notification.
            submit(tag(c, .sendZC)) {
                io_uring_prep_send_zc($0, fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL), UInt32(Self.sendZCReportUsage))
                if fixed { $0.pointee.flags |= Self.fixedFileFlag }
            }
        } else {
            submit(tag(c, .send)) {
                io_uring_prep_send($0, fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL))
                if fixed { $0.pointee.flags |= Self.fixedFileFlag }
            }
        }
        c.ops.send = .inFlight
        sendsSinceWait &+= 1
    }

    /// One-shot POLLOUT for a socket that did not take all its spliced bytes; the output stays
    /// the kernel's until it completes.
    func waitForRoom(_ c: Connection) {
        let (fd, fixed) = target(c)
        submit(tag(c, .spliceReady)) {
            io_uring_prep_poll_add($0, fd, UInt32(POLLOUT) | UInt32(POLLERR) | UInt32(POLLHUP))
            if fixed { $0.pointee.flags |= Self.fixedFileFlag }
        }
        c.ops.poll = .inFlight
    }

    func close(_ c: Connection) {
        c.lifecycle = .closeStarted
        // shutdown() ends the multishot recv (it completes with 0 and no F_MORE) and fails any
        // send in flight; the fd is closed only once both completions are reaped.
        if c.ops.recv == .inFlight || c.sendInFlight {
            if c.fd >= 0 { Glibc.shutdown(c.fd, Int32(SHUT_RDWR)) } else { shutdownFixed(c) }
        }
        releaseIfIdle(c)
    }

    /// Closes the fd and releases the record as soon as the kernel is done with them.
    func releaseIfIdle(_ c: Connection) {
        guard c.lifecycle >= .closeStarted, c.lifecycle < .released, c.ops.recv == .idle else { return }
        // A zero-copy send whose result is in but whose notification is not: the kernel lets
        // go of our pages only when the socket's queued data is freed, which for a peer that
        // stopped reading means when the socket is gone. So the fd is closed now, and the
        // record (owner of the buffer) is released after the notification.
        if c.lifecycle < .fdClosed && c.ops.send == .idle && c.ops.poll == .idle && c.ops.install == .idle
            && c.ops.shutdown == .idle {
            if c.ops.zeroCopyNotification == .inFlight && c.fd >= 0 {
                // Data still queued for a peer that does not read would keep our pages (and
                // the notification) until TCP gives up, minutes later: abort with a reset,
                // which frees the queue at once. (Only forced closes get here; a graceful one
                // waits for its sends to finish.)
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            }
            if c.fixedIndex >= 0 {
                closeFixed(c)
                if c.fd >= 0 { Glibc.close(c.fd) }   // the installed fd: its reference goes too
            } else {
                unregisterFixed(c)
                Glibc.close(c.fd)
            }
            c.lifecycle = .fdClosed
        }
        if c.lifecycle == .fdClosed && c.ops.allIdle {
            c.lifecycle = .released
            slots.unregister(c)
            released.append(c)
        }
    }
}
