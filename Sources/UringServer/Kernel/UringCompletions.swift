import CLinux
import Glibc
import Primitives

// The io_uring backend's other half: one enter that submits and waits, then every completion
// reaped in batches and dispatched by the operation its user_data names.
extension UringBackend {
    @discardableResult
    func poll(timeoutMillis: Int32, gather: Bool, handler: IOEventHandler) -> Bool {
        if !rearmRecv.isEmpty {
            for c in rearmRecv where !c.closeStarted { armRecv(c) }
            rearmRecv.removeAll(keepingCapacity: true)
        }
        if !overflow.isEmpty { drainOverflow() }
        let gathered = gather && waitBatch > 0
        if gathered {
            // One enter submits the turn's SQEs and waits for a batch (see `waitBatch`) of
            // completions beyond those of the sends it submits: most of those are posted during
            // the submit itself and bring no new work, and counting them would end the wait
            // early (docs/performance.md, "Batched waiting").
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
        return gathered
    }

    private func dispatch(data: UInt64, res: Int32, flags: UInt32, handler: IOEventHandler) {
        guard let op = Op(rawValue: SlotTable.op(data)) else { return }
        switch op {
        case .accept:
            if res >= 0 { handler.connectionAccepted(Self.accepted(res)) }
            if flags & UInt32(IORING_CQE_F_MORE) == 0 && listenFD >= 0 { armAccept() }
        case .acceptDirect, .acceptPlain:
            acceptCompleted(lane: Int(data >> 32), direct: op == .acceptDirect, res: res, handler: handler)
        case .install:
            guard let c = slots.connection(data) else { return }
            installed(c, res: res)
        case .closeDirect:
            fixedClaimed -= 1
            guard let c = slots.connection(data) else { return }
            c.ops.closeDirect = .idle
            releaseIfIdle(c)
        case .refuseClosed:
            fixedClaimed -= 1
        case .shutdownDirect:
            guard let c = slots.connection(data) else { return }
            c.ops.shutdown = .idle
            releaseIfIdle(c)
        case .refuseSent:
            break   // best effort; the linked close follows whatever its result
        case .wake:
            // The read itself consumed the eventfd's count.
            handler.wakeup()
            armWake()
        case .peerWake:
            handler.wakeup()
        case .peerWakeSent:
            break   // a failed MSG_RING (the peer is gone at shutdown) needs no handling
        case .recv:
            receivedSinceIdleCheck = true
            buffersReleased = false
            let more = flags & UInt32(IORING_CQE_F_MORE) != 0
            let c = slots.connection(data)
            if let c, !more { c.ops.recv = .idle }
            if flags & UInt32(IORING_CQE_F_BUFFER) != 0 {
                received(c, bid: Int(flags >> UInt32(IORING_CQE_BUFFER_SHIFT)), res: res, flags: flags, handler: handler)
            }
            guard let c else { return }
            if res == -ENOBUFS {
                // Out of provided buffers: they come back as this batch is processed.
                if !c.closeStarted { rearmRecv.append(c) }
            } else if res <= 0 {
                if !c.closeStarted { handler.connectionReceiveEnded(c, error: -res) }
            } else if !more && !c.closeStarted {
                armRecv(c)   // multishot ended without error (e.g. CQ overflow): re-arm
            }
            if c.closeStarted { releaseIfIdle(c) }
        case .send:
            guard let c = slots.connection(data) else { return }
            c.ops.send = .idle
            sendCompleted(c, res: res, handler: handler)
        case .spliceReady:
            guard let c = slots.connection(data) else { return }
            c.ops.poll = .idle
            spliceReady(c, res: res, handler: handler)
        case .sendZC:
            guard let c = slots.connection(data) else { return }
            if flags & UInt32(IORING_CQE_F_NOTIF) != 0 {
                // The kernel let go of our pages: only now may `sending` be reused.
                c.ops.zeroCopyNotification = .idle
                let copied = UInt32(bitPattern: res) & Self.notifUsageZCCopied != 0
                if copied { c.ops.zeroCopyCopies = true }   // pinning pages for a copy only costs more
                counters.zeroCopySends &+= 1
                if copied { counters.zeroCopyCopied &+= 1 }
                let failed = c.ops.zeroCopyFailed
                c.ops.zeroCopyFailed = false
                sendCompleted(c, res: failed ? -EPIPE : 0, handler: handler, accounted: true)
            } else if flags & UInt32(IORING_CQE_F_MORE) != 0 {
                // The result; a notification follows. Account the bytes now, finish then.
                c.ops.send = .idle
                c.ops.zeroCopyNotification = .inFlight
                if res < 0 { c.ops.zeroCopyFailed = true; c.dropSending(pool: pool) } else { c.consumeSending(Int(res), pool: pool) }
                if c.closeStarted { releaseIfIdle(c) }   // close the fd: that frees the queued data
            } else {
                c.ops.send = .idle
                sendCompleted(c, res: res, handler: handler)   // failed before any page was used
            }
        }
    }

    /// A send's result (`accounted`: the bytes were already consumed, `res` only says whether
    /// any are left). One place for plain sends and zero-copy ones.
    private func sendCompleted(_ c: Connection, res: Int32, handler: IOEventHandler, accounted: Bool = false) {
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

    /// The socket has room (or an error): splice the rest, then report like a send.
    private func spliceReady(_ c: Connection, res: Int32, handler: IOEventHandler) {
        if c.closeStarted {
            releaseIfIdle(c)
            return
        }
        guard let pipes, let b = c.output.blocks, b.pointee.pipeBytes > 0 else {
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

    /// An accepted fd from the multishot accept (already non-blocking and close-on-exec).
    static func accepted(_ fd: Int32) -> AcceptedSocket {
        Socket.configureAccepted(fd)
        return AcceptedSocket(fd: fd, peerIPv4: Socket.peerIPv4(fd))
    }

    /// A receive completion's bytes, buffer by buffer (a bundle covers consecutive buffers from
    /// `bid`, all full but the last; with incremental consumption the first one continues where
    /// the last completion naming it stopped). A stale completion's buffers go back too.
    @inline(__always)
    private func received(_ c: Connection?, bid: Int, res: Int32, flags: UInt32, handler: IOEventHandler) {
        guard res > 0 else {
            // Without data the kernel kept the buffer in the ring when it consumes in pieces or
            // in bundles (nothing committed); a plain receive used it up.
            if !techniques.bufIncremental && !techniques.recvBundle { giveBack(bid) }
            return
        }
        let mask = Int(bufMask)
        var b = bid, left = Int(res)
        while left > 0 {
            let start = techniques.bufIncremental ? Int(consumed[b]) : 0
            let n = min(left, bufSize - start)
            if let c, !c.closeStarted {
                handler.connectionReceived(c, UnsafeRawBufferPointer(start: bufBase + b * bufSize + start, count: n))
            }
            left -= n
            if left == 0 && flags & UInt32(IORING_CQE_F_BUF_MORE) != 0 {
                consumed[b] = Int32(start + n)   // the kernel goes on filling this buffer
            } else {
                consumed[b] = 0
                giveBack(b)
            }
            b = (b + 1) & mask
        }
    }

    /// Hands buffer `bid` back to the ring, in bid order (see `returnedEarly`).
    @inline(__always)
    func giveBack(_ bid: Int) {
        guard bid == nextReturn else {
            returnedEarly[bid] = true
            return
        }
        let mask = Int(bufMask)
        var b = bid
        repeat {
            returnedEarly[b] = false
            io_uring_buf_ring_add(bufRing, bufBase + b * bufSize, UInt32(bufSize), UInt16(b), bufMask, pendingRecycles)
            pendingRecycles += 1
            b = (b + 1) & mask
        } while returnedEarly[b]
        nextReturn = b
    }
}
