import CLinux
import Glibc
import Primitives

/// io_uring backend: multishot accept, multishot recv into a provided-buffer ring, one send in
/// flight per socket, everything a turn queued submitted by one io_uring_submit_and_wait.
///
/// user_data packing (as liburing's examples/proxy.c): the low 4 bits are the operation, the
/// rest is the Connection's object address (objects are 16-byte aligned). The connection
/// record stays alive in the reactor's table until its last completion is reaped, so the
/// pointer in user_data is always valid when the CQE arrives.
final class UringBackend: IOBackend {
    private enum Op: UInt64 {
        case accept = 1, recv = 2, send = 3, wake = 4
        /// A MSG_RING from another reactor (arrives on this ring) / our own MSG_RING's completion.
        case peerWake = 5, peerWakeSent = 6
        /// IORING_OP_SEND_ZC: a result CQE, then (flagged F_NOTIF) the buffer-release CQE.
        case sendZC = 7
        /// IORING_OP_POLL_ADD (POLLOUT): the socket has room again for spliced bytes.
        case spliceReady = 8
    }

    // Not in liburing 2.3's headers (kernel 6.2+): ask the notification to say whether the
    // kernel had to copy after all.
    private static let sendZCReportUsage: UInt16 = 1 << 3
    private static let notifUsageZCCopied: UInt32 = 1 << 31

    private var ring = io_uring()
    private var bufRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let bufCount: Int
    private let bufSize: Int
    private let bufMask: Int32
    private let bufBase: UnsafeMutableRawPointer
    private static let bufGroup: UInt16 = 0
    /// Buffers handed back this batch; made visible to the kernel in one advance.
    private var pendingRecycles: Int32 = 0
    /// A receive completed since the last `releaseIdleMemory`; the buffers' pages have been
    /// given back since the last receive.
    private var receivedSinceIdleCheck = false
    private var buffersReleased = true

    private var listenFD: Int32 = -1
    /// CQE pointers of the batch being reaped.
    private static let cqeBatchSize = 256
    private let cqeBatch = UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>.allocate(capacity: UringBackend.cqeBatchSize)
    private var wakeFD: Int32 = -1
    /// Where the eventfd read lands. Allocated: the kernel writes it after the call that
    /// prepared the read has returned, so it needs a fixed address (a pointer from
    /// withUnsafeMutablePointer is only valid inside the closure).
    private let wakeValue = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Connections whose multishot recv ended with ENOBUFS: re-armed after the batch recycled.
    private var rearmRecv: [Connection] = []
    let setupFlags: UInt32
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC (0: never, or unsupported here).
    let zeroCopyThreshold: Int

    /// Batched waiting (kernel 6.12+, IORING_FEAT_MIN_TIMEOUT): wake when this many completions
    /// are ready, or `waitBatchMicros` after the wait began if at least one is. 0: unsupported
    /// here or disabled; then every completion wakes the reactor.
    let waitBatch: UInt32
    let waitBatchMicros: UInt32
    /// Whether the next waits use the batch (see `setBatchedWait`).
    private(set) var batchedWait = false
    /// Send SQEs prepared since the last wait: their completions (mostly posted during the
    /// submit itself) carry no new work, so the batched wait counts past them.
    private var sendsSinceWait: UInt32 = 0

    /// The reactor's pool: shared message blocks go back to it once sent.
    private let pool: BufferPool
    /// The reactor's pipes for spliced room batches (nil: it does not splice).
    private let pipes: SplicePipes?

    init(entries: Int, recvBufferCount: Int, recvBufferSize: Int, zeroCopyThreshold: Int,
         waitBatch: Int = 0, waitBatchMicros: Int = 0, pool: BufferPool, pipes: SplicePipes? = nil) throws(SyscallError) {
        self.pool = pool
        self.pipes = pipes
        var flags: UInt32 = 0
        _ = try uringCall("io_uring_queue_init", clinux_queue_init(&ring, UInt32(entries), &flags))
        setupFlags = flags
        let batching = waitBatch > 1 && waitBatchMicros > 0 && clinux_min_wait_supported(&ring) != 0
        self.waitBatch = batching ? UInt32(waitBatch) : 0
        self.waitBatchMicros = batching ? UInt32(waitBatchMicros) : 0
        batchedWait = batching
        // Registered ring fd: every io_uring_enter skips the fd table lookup (fdget/fdput);
        // liburing then enters with IORING_ENTER_REGISTERED_RING. Optional (kernel 5.18+);
        // other rings still reach this one through its real fd (MSG_RING).
        _ = io_uring_register_ring_fd(&ring)
        self.zeroCopyThreshold = zeroCopyThreshold > 0 && clinux_opcode_supported(&ring, Int32(IORING_OP_SEND_ZC.rawValue)) != 0
            ? zeroCopyThreshold : 0
        var err: Int32 = 0
        guard let br = clinux_buf_ring_setup(&ring, UInt32(recvBufferCount), Self.bufGroup, &err) else {
            io_uring_queue_exit(&ring)
            throw SyscallError(call: "io_uring_register_buf_ring", errno: -err)
        }
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
            throw SyscallError(call: "mmap", errno: currentErrno())
        }
        bufBase = mem
        for i in 0..<recvBufferCount {
            io_uring_buf_ring_add(bufRing, bufBase + i * bufSize, UInt32(bufSize), UInt16(i), bufMask, Int32(i))
        }
        io_uring_buf_ring_advance(bufRing, Int32(recvBufferCount))
    }

    func setBatchedWait(_ on: Bool) { batchedWait = on && waitBatch > 0 }

    func shutdown() {
        cqeBatch.deallocate()
        clinux_buf_ring_free(&ring, bufRing, UInt32(bufCount), Self.bufGroup)
        munmap(bufBase, bufCount * bufSize)
        io_uring_queue_exit(&ring)
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

    /// Next free SQE; when the SQ is full, submits what is queued (without waiting) and retries.
    @inline(__always)
    private func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        while true {
            if let s = io_uring_get_sqe(&ring) { return s }
            _ = io_uring_submit(&ring)
        }
    }

    @inline(__always)
    private static func pack(_ c: Connection?, _ op: Op) -> UInt64 {
        guard let c else { return op.rawValue }
        return UInt64(UInt(bitPattern: Unmanaged.passUnretained(c).toOpaque())) | op.rawValue
    }

    func addListener(fd: Int32) throws(SyscallError) {
        listenFD = fd
        armAccept()
    }

    private func armAccept() {
        let s = sqe()
        // Non-blocking sockets: io_uring's own operations do not care, and the direct splice
        // calls (see `SplicePipes`) must never wait for room in a socket.
        io_uring_prep_multishot_accept(s, listenFD, nil, nil, Int32(SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue))
        io_uring_sqe_set_data64(s, Self.pack(nil, .accept))
    }

    func addWakeup(fd: Int32) throws(SyscallError) {
        wakeFD = fd
        armWake()
    }

    private func armWake() {
        let s = sqe()
        io_uring_prep_read(s, wakeFD, wakeValue, 8, 0)
        io_uring_sqe_set_data64(s, Self.pack(nil, .wake))
    }

    var ringFD: Int32 { ring.ring_fd }

    func wakePeer(ringFD: Int32, eventFD: Int32) {
        guard ringFD >= 0 else {
            var one: UInt64 = 1
            _ = write(eventFD, &one, 8)
            return
        }
        let s = sqe()
        io_uring_prep_msg_ring(s, ringFD, 0, Op.peerWake.rawValue, 0)
        io_uring_sqe_set_data64(s, Self.pack(nil, .peerWakeSent))
    }

    func startReceiving(_ c: Connection) {
        let s = sqe()
        clinux_prep_recv_multishot_select(s, c.fd, Self.bufGroup)
        io_uring_sqe_set_data64(s, Self.pack(c, .recv))
        c.recvArmed = true
    }

    func send(_ c: Connection) {
        precondition(!c.sendInFlight)
        if let pipes, let b = c.blocks, b.pointee.pipeBytes > 0 {
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
            swap(&c.sending, &c.out)
            if let b = c.blocks { swap(&b.pointee.sending, &b.pointee.out) }
        }
        let r = c.sending.readable
        let s = sqe()
        if let b = c.blocks, !b.pointee.sending.isEmpty {
            // Shared blocks: one sendmsg whose iovecs interleave our own bytes and the blocks
            // (the kernel reads each block once per socket; nothing is copied per recipient).
            io_uring_prep_sendmsg(s, c.fd, b.pointee.message(b.pointee.sending, own: r), UInt32(MSG_NOSIGNAL))
            io_uring_sqe_set_data64(s, Self.pack(c, .send))
        } else if zeroCopyThreshold > 0 && r.count >= zeroCopyThreshold && !c.zcCopies {
            // The kernel sends from our pages; `sending` stays untouched until the notification.
            io_uring_prep_send_zc(s, c.fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL), UInt32(Self.sendZCReportUsage))
            io_uring_sqe_set_data64(s, Self.pack(c, .sendZC))
        } else {
            io_uring_prep_send(s, c.fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL))
            io_uring_sqe_set_data64(s, Self.pack(c, .send))
        }
        c.sendInFlight = true
        sendsSinceWait &+= 1
    }

    /// One-shot POLLOUT for a socket that did not take all its spliced bytes; the send stays
    /// "in flight" until it completes.
    private func waitForRoom(_ c: Connection) {
        let s = sqe()
        io_uring_prep_poll_add(s, c.fd, UInt32(POLLOUT) | UInt32(POLLERR) | UInt32(POLLHUP))
        io_uring_sqe_set_data64(s, Self.pack(c, .spliceReady))
        c.sendInFlight = true
    }

    /// The socket has room (or an error): splice the rest, then report like a send.
    private func spliceReady(_ c: Connection, res: Int32, handler: IOEventHandler) {
        c.sendInFlight = false
        if c.closeStarted {
            releaseIfIdle(c)
            return
        }
        guard let pipes, let b = c.blocks, b.pointee.pipeBytes > 0 else {
            // Nothing left to splice: it failed in `send` (and was dropped), or the poll says so.
            let broken = res < 0 || Int16(truncatingIfNeeded: res) & Int16(POLLERR | POLLHUP) != 0
            handler.connectionSendCompleted(c, error: broken ? EPIPE : 0)
            return
        }
        switch pipes.drain(&b.pointee, to: c.fd) {
        case .drained: handler.connectionSendCompleted(c, error: 0)
        case .blocked: waitForRoom(c)
        case .failed(let e):
            pipes.discard(&b.pointee)
            handler.connectionSendCompleted(c, error: e)
        }
    }

    func close(_ c: Connection) {
        c.closeStarted = true
        // shutdown() ends the multishot recv (it completes with 0 and no F_MORE) and fails any
        // send in flight; the fd is closed only once both completions are reaped.
        if c.recvArmed || c.sendInFlight {
            Glibc.shutdown(c.fd, Int32(SHUT_RDWR))
        }
        releaseIfIdle(c)
    }

    private var released: [Connection] = []

    private func releaseIfIdle(_ c: Connection) {
        guard c.closeStarted, !c.recvArmed else { return }
        // A zero-copy send whose result is in but whose notification is not: the kernel lets
        // go of our pages only when the socket's queued data is freed, which for a peer that
        // stopped reading means when the socket is gone. So the fd is closed now, and the
        // record (owner of the buffer, and what user_data points at) is released after the
        // notification.
        if !c.fdClosed && (!c.sendInFlight || c.zcNotifPending) {
            if c.zcNotifPending {
                // Data still queued for a peer that does not read would keep our pages (and
                // the notification) until TCP gives up, minutes later: abort with a reset,
                // which frees the queue at once. (Only forced closes get here; a graceful one
                // waits for its sends to finish.)
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            }
            Glibc.close(c.fd)
            c.fdClosed = true
            if !c.sendInFlight { released.append(c) }
        } else if c.fdClosed && !c.sendInFlight {
            released.append(c)   // the notification that held the release has arrived
        }
    }

    // MARK: completion

    func poll(timeoutMillis: Int32, handler: IOEventHandler) {
        if !rearmRecv.isEmpty {
            for c in rearmRecv where !c.closeStarted { startReceiving(c) }
            rearmRecv.removeAll(keepingCapacity: true)
        }
        if batchedWait {
            // One enter submits the turn's SQEs and waits for a batch (see `waitBatch`) of
            // completions beyond those of the sends it submits: most of those are posted during
            // the submit itself and bring no new work, so counting them ended the wait early
            // and split the load into more, smaller turns (fan-out 50 x 64 B, alternating A/B,
            // medians of 10: +4.7 % deliveries per CPU-s, +5 % deliveries/s).
            _ = clinux_submit_and_wait_batch(&ring, waitBatch &+ sendsSinceWait, waitBatchMicros,
                                             timeoutMillis < 0 ? -1 : Int64(timeoutMillis) * 1_000_000)
        } else if timeoutMillis < 0 {
            _ = io_uring_submit_and_wait(&ring, 1)
        } else {
            var ts = __kernel_timespec(tv_sec: Int64(timeoutMillis / 1000),
                                       tv_nsec: Int64(timeoutMillis % 1000) * 1_000_000)
            var cqe: UnsafeMutablePointer<io_uring_cqe>?
            _ = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, nil)
        }
        sendsSinceWait = 0
        var seen: UInt32 = 0
        // Reap in batches (one read of the CQ tail, one head update per batch, not per CQE).
        // Handlers may queue more SQEs but never wait, so this terminates.
        while seen < 4096 {   // bound one turn; the rest waits for the next
            let n = io_uring_peek_batch_cqe(&ring, cqeBatch, UInt32(Self.cqeBatchSize))
            if n == 0 { break }
            for i in 0..<Int(n) {
                let cqe = cqeBatch[i].unsafelyUnwrapped
                dispatch(data: cqe.pointee.user_data, res: cqe.pointee.res, flags: cqe.pointee.flags, handler: handler)
            }
            io_uring_cq_advance(&ring, n)
            seen &+= n
        }
        if pendingRecycles > 0 {
            io_uring_buf_ring_advance(bufRing, pendingRecycles)
            pendingRecycles = 0
        }
        if !released.isEmpty {
            for c in released { handler.connectionReleased(c) }
            released.removeAll(keepingCapacity: true)
        }
    }

    private func dispatch(data: UInt64, res: Int32, flags: UInt32, handler: IOEventHandler) {
        guard let op = Op(rawValue: data & 15) else { return }
        switch op {
        case .accept:
            if res >= 0 {
                handler.connectionAccepted(fd: res)
            }
            if flags & UInt32(IORING_CQE_F_MORE) == 0 {
                if listenFD >= 0 { armAccept() }
            }
        case .wake:
            handler.wakeup()
            if wakeFD >= 0 { armWake() }
        case .peerWake:
            handler.wakeup()
        case .peerWakeSent:
            break   // a failed MSG_RING (the peer is gone at shutdown) needs no handling
        case .recv:
            receivedSinceIdleCheck = true
            buffersReleased = false
            let c = connection(data)
            let more = flags & UInt32(IORING_CQE_F_MORE) != 0
            if !more { c.recvArmed = false }
            if flags & UInt32(IORING_CQE_F_BUFFER) != 0 {
                let bid = Int(flags >> UInt32(IORING_CQE_BUFFER_SHIFT))
                let buf = bufBase + bid * bufSize
                if res > 0 && !c.closeStarted {
                    handler.connectionReceived(c, UnsafeRawBufferPointer(start: buf, count: Int(res)))
                }
                recycle(bid: bid, addr: buf)
            }
            if res == -ENOBUFS {
                // Out of provided buffers: they come back as this batch is processed.
                if !c.closeStarted { rearmRecv.append(c) }
            } else if res <= 0 {
                if !c.closeStarted { handler.connectionReceiveEnded(c, error: -res) }
            } else if !more && !c.closeStarted {
                startReceiving(c)   // multishot ended without error (e.g. CQ overflow): re-arm
            }
            if c.closeStarted { releaseIfIdle(c) }
        case .send:
            sendCompleted(connection(data), res: res, handler: handler)
        case .spliceReady:
            spliceReady(connection(data), res: res, handler: handler)
        case .sendZC:
            let c = connection(data)
            if flags & UInt32(IORING_CQE_F_NOTIF) != 0 {
                // The kernel let go of our pages: only now may `sending` be reused.
                c.zcNotifPending = false
                let copied = UInt32(bitPattern: res) & Self.notifUsageZCCopied != 0
                if copied { c.zcCopies = true }   // pinning pages for a copy only costs more
                handler.zeroCopySendFinished(copied: copied)
                let failed = c.zcFailed
                c.zcFailed = false
                sendCompleted(c, res: failed ? -EPIPE : 0, handler: handler, accounted: true)
            } else if flags & UInt32(IORING_CQE_F_MORE) != 0 {
                // The result; a notification follows. Account the bytes now, finish then.
                c.zcNotifPending = true
                if res < 0 { c.zcFailed = true; c.dropSending(pool: pool) } else { c.consumeSending(Int(res), pool: pool) }
                if c.closeStarted { releaseIfIdle(c) }   // close the fd: that frees the queued data
            } else {
                sendCompleted(c, res: res, handler: handler)   // failed before any page was used
            }
        }
    }

    /// A send's result (`accounted`: the bytes were already consumed, `res` only says whether
    /// any are left). One place for plain sends and zero-copy ones.
    private func sendCompleted(_ c: Connection, res: Int32, handler: IOEventHandler, accounted: Bool = false) {
        c.sendInFlight = false
        if c.closeStarted {
            releaseIfIdle(c)
            return
        }
        if res < 0 {
            c.dropSending(pool: pool)
            handler.connectionSendCompleted(c, error: -res)
            return
        }
        if !accounted { c.consumeSending(Int(res), pool: pool) }
        if !c.sendingIsEmpty {
            send(c)   // a partial send continues where it stopped
        } else {
            // The reactor sends what was queued meanwhile at the end of this turn. The
            // buffer keeps its memory while the connection is busy (the reactor frees it
            // after a second without output), so steady traffic does not malloc.
            handler.connectionSendCompleted(c, error: 0)
        }
    }

    @inline(__always)
    private func connection(_ data: UInt64) -> Connection {
        let p = UnsafeRawPointer(bitPattern: UInt(data & ~15))!
        return Unmanaged<Connection>.fromOpaque(p).takeUnretainedValue()
    }

    @inline(__always)
    private func recycle(bid: Int, addr: UnsafeMutableRawPointer) {
        io_uring_buf_ring_add(bufRing, addr, UInt32(bufSize), UInt16(bid), bufMask, pendingRecycles)
        pendingRecycles += 1
    }
}
