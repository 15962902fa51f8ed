import CLinux
import Glibc
import Synchronization

/// A relay thread in io_uring mode: one multishot recvmsg on the thread's socket fills buffers
/// from a provided-buffer ring (one datagram per buffer, source address included), and every
/// copy to a member is an IORING_OP_SENDMSG whose iovec points into that same buffer — the
/// payload is never copied in user space. A buffer goes back to the ring when its last send
/// completes. Everything a batch of completions queued goes to the kernel in the one
/// io_uring_submit_and_wait of the next turn.
///
/// user_data: the op in the high 32 bits (1 recv, 2 send), the send slot in the low 32.
final class UringRelayLoop {
    private let fd: Int32
    private let core: RelayCore
    private let stop: RelayFlag
    private var ring = io_uring()

    // Provided buffers.
    private static let bufGroup: UInt16 = 1
    static let bufSize = 2048
    private let bufCount: Int
    private let bufBase: UnsafeMutableRawPointer
    private let bufRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let bufMask: Int32
    /// Sends in flight per buffer: it is recycled when this drops to 0.
    private let bufRefs: UnsafeMutablePointer<Int32>
    private var pendingRecycles: Int32 = 0
    /// Template for the multishot recvmsg: only the name length matters.
    private let recvHdr: UnsafeMutablePointer<msghdr>

    // Send slots: a msghdr, an iovec, a destination and (for acks) 12 bytes of their own.
    private let slots: Int
    private let sendHdr: UnsafeMutablePointer<msghdr>
    private let sendIov: UnsafeMutablePointer<iovec>
    private let sendAddr: UnsafeMutablePointer<sockaddr_in>
    private let sendBuf: UnsafeMutablePointer<Int32>
    private let ackBytes: UnsafeMutablePointer<UInt8>
    private let freeSlots: UnsafeMutablePointer<Int32>
    private var freeCount: Int
    /// Sends queued since the last submit (the rest of the slots in use were submitted before).
    private var queuedThisTurn = 0

    private let cqes: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private static let cqeBatch: UInt32 = 256
    private static let opRecv: UInt64 = 1 << 32
    private static let opSend: UInt64 = 2 << 32

    struct SetupError: Error, CustomStringConvertible { let description: String }

    /// Runs on the relay thread itself (the ring is single-issuer).
    init(fd: Int32, core: RelayCore, buffers: Int, stop: RelayFlag) throws(SetupError) {
        self.fd = fd
        self.core = core
        self.stop = stop
        var flags: UInt32 = 0
        let r = clinux_queue_init(&ring, 4096, &flags)
        guard r == 0 else { throw SetupError(description: "io_uring_queue_init: \(String(cString: strerror(-r)))") }
        bufCount = buffers
        var err: Int32 = 0
        guard let br = clinux_buf_ring_setup(&ring, UInt32(buffers), Self.bufGroup, &err) else {
            io_uring_queue_exit(&ring)
            throw SetupError(description: "io_uring_register_buf_ring: \(String(cString: strerror(-err)))")
        }
        bufRing = br
        bufMask = io_uring_buf_ring_mask(UInt32(buffers))
        bufBase = .allocate(byteCount: buffers * Self.bufSize, alignment: 4096)
        bufRefs = .allocate(capacity: buffers)
        bufRefs.initialize(repeating: 0, count: buffers)
        for i in 0..<buffers {
            io_uring_buf_ring_add(bufRing, bufBase + i * Self.bufSize, UInt32(Self.bufSize), UInt16(i), bufMask, Int32(i))
        }
        io_uring_buf_ring_advance(bufRing, Int32(buffers))
        recvHdr = .allocate(capacity: 1)
        recvHdr.initialize(to: msghdr())
        recvHdr.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)

        slots = 4096
        sendHdr = .allocate(capacity: slots)
        sendHdr.initialize(repeating: msghdr(), count: slots)
        sendIov = .allocate(capacity: slots)
        sendIov.initialize(repeating: iovec(), count: slots)
        sendAddr = .allocate(capacity: slots)
        sendAddr.initialize(repeating: sockaddr_in(), count: slots)
        sendBuf = .allocate(capacity: slots)
        sendBuf.initialize(repeating: -1, count: slots)
        ackBytes = .allocate(capacity: slots * 12)
        freeSlots = .allocate(capacity: slots)
        for i in 0..<slots {
            freeSlots[i] = Int32(slots - 1 - i)
            sendHdr[i].msg_name = UnsafeMutableRawPointer(sendAddr + i)
            sendHdr[i].msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            sendHdr[i].msg_iov = sendIov + i
            sendHdr[i].msg_iovlen = 1
        }
        freeCount = slots
        cqes = .allocate(capacity: Int(Self.cqeBatch))
    }

    deinit {
        clinux_buf_ring_free(&ring, bufRing, UInt32(bufCount), Self.bufGroup)
        io_uring_queue_exit(&ring)
        bufBase.deallocate(); bufRefs.deallocate(); recvHdr.deallocate()
        sendHdr.deallocate(); sendIov.deallocate(); sendAddr.deallocate(); sendBuf.deallocate()
        ackBytes.deallocate(); freeSlots.deallocate(); cqes.deallocate()
    }

    private func sqe() -> UnsafeMutablePointer<io_uring_sqe>? {
        if let s = io_uring_get_sqe(&ring) { return s }
        io_uring_submit(&ring)   // the SQ is full: hand the batch over, then there is room
        return io_uring_get_sqe(&ring)
    }

    private func armRecv() {
        guard let s = sqe() else { return }
        clinux_prep_recvmsg_multishot_select(s, fd, recvHdr, Self.bufGroup)
        io_uring_sqe_set_data64(s, Self.opRecv)
    }

    /// Queues one send of `len` bytes at `bytes` to `to`; `bid` is the buffer it points into
    /// (-1: the slot's own ack bytes).
    private func queueSend(_ bytes: UnsafeRawPointer, _ len: Int, to: AddrKey, bid: Int32) -> Bool {
        guard freeCount > 0 else { core.counters.drop(.sendBacklog); return false }
        guard let s = sqe() else { core.counters.drop(.sendBacklog); return false }
        freeCount -= 1
        queuedThisTurn += 1
        let slot = Int(freeSlots[freeCount])
        fillSockaddr(sendAddr + slot, to)
        sendIov[slot].iov_base = UnsafeMutableRawPointer(mutating: bytes)
        sendIov[slot].iov_len = len
        sendBuf[slot] = bid
        io_uring_prep_sendmsg(s, fd, sendHdr + slot, 0)
        io_uring_sqe_set_data64(s, Self.opSend | UInt64(slot))
        if bid >= 0 { bufRefs[Int(bid)] += 1 }
        return true
    }

    private func recycle(_ bid: Int) {
        io_uring_buf_ring_add(bufRing, bufBase + bid * Self.bufSize, UInt32(Self.bufSize), UInt16(bid), bufMask, pendingRecycles)
        pendingRecycles += 1
    }

    func run() {
        armRecv()
        var ts = __kernel_timespec(tv_sec: 0, tv_nsec: 100_000_000)
        var short = __kernel_timespec(tv_sec: 0, tv_nsec: 1_000_000)
        var ip: UInt32 = 0, port: UInt16 = 0, plen: UInt32 = 0, trunc: Int32 = 0
        var payload: UnsafeMutablePointer<UInt8>? = nil
        while !stop.isSet {
            var one: UnsafeMutablePointer<io_uring_cqe>? = nil
            // A UDP send completes during the submit itself, so its CQE is there at once: waiting
            // for one completion would wake the thread right back up for the sends of the frame it
            // just relayed (two io_uring_enter per frame). Waiting for the sends' completions plus
            // one makes it one enter per frame. Sends that did not complete inline (the socket
            // buffer was full) are waited for at most 1 ms, so they never hold up a packet long.
            let inFlight = slots - freeCount
            let stale = inFlight - queuedThisTurn
            queuedThisTurn = 0
            if stale > 0 {
                _ = io_uring_submit_and_wait_timeout(&ring, &one, UInt32(inFlight + 1), &short, nil)
            } else {
                _ = io_uring_submit_and_wait_timeout(&ring, &one, UInt32(inFlight + 1), &ts, nil)
            }
            let now = RelayClock.monoNanos()
            let wall = RelayClock.wallMillis()
            var forwarded: UInt64 = 0
            var rearm = false
            // At most two batches of completions per turn: under a flood the CQ refills while
            // we work, and a turn that never ends holds its sends back (they go at the submit).
            for _ in 0..<2 {
                let n = io_uring_peek_batch_cqe(&ring, cqes, Self.cqeBatch)
                if n == 0 { break }
                for i in 0..<Int(n) {
                    let cqe = cqes[i]!
                    let ud = cqe.pointee.user_data, res = cqe.pointee.res, flags = cqe.pointee.flags
                    if ud == Self.opRecv {
                        if flags & UInt32(IORING_CQE_F_MORE) == 0 { rearm = true }
                        guard flags & UInt32(IORING_CQE_F_BUFFER) != 0 else { continue }
                        let bid = Int(flags >> UInt32(IORING_CQE_BUFFER_SHIFT))
                        let buf = bufBase + bid * Self.bufSize
                        if res > 0, clinux_recvmsg_parse(buf, res, recvHdr, &ip, &port, &payload, &plen, &trunc) == 0, let p = payload {
                            let from = addrKey(ip: ip, port: port)
                            switch core.handle(p, Int(plen), truncated: trunc != 0, from: from, now: now, wall: wall) {
                            case .forward:
                                for d in 0..<core.destCount { _ = queueSend(p, Int(plen), to: core.dests[d], bid: Int32(bid)) }
                                forwarded &+= 1
                            case .ack:
                                if freeCount > 0 {
                                    let a = ackBytes + Int(freeSlots[freeCount - 1]) * 12
                                    a.update(from: core.ack, count: 12)
                                    _ = queueSend(a, 12, to: from, bid: -1)
                                }
                            case .dropped, .consumed: break
                            }
                        } else if res > 0 {
                            core.counters.drop(.malformed)
                        }
                        if bufRefs[bid] == 0 { recycle(bid) }
                    } else {
                        let slot = Int(ud & 0xffff_ffff)
                        let bid = sendBuf[slot]
                        if res < 0 { core.counters.drop(.sendFailed) } else if bid >= 0 { core.sent(bytes: Int(res)) }
                        freeSlots[freeCount] = Int32(slot)
                        freeCount += 1
                        if bid >= 0 {
                            bufRefs[Int(bid)] -= 1
                            if bufRefs[Int(bid)] == 0 { recycle(Int(bid)) }
                        }
                    }
                }
                io_uring_cq_advance(&ring, n)
                if n < Self.cqeBatch { break }
            }
            if pendingRecycles > 0 {
                io_uring_buf_ring_advance(bufRing, pendingRecycles)
                pendingRecycles = 0
            }
            if rearm { armRecv() }
            // Receive (this turn's completions) → hand-off (the submit at the top of the next
            // turn, which follows at once).
            if forwarded > 0 { core.recordLatency(RelayClock.monoNanos() &- now, packets: forwarded) }
            core.sweepIfDue(now: now, wall: wall)
        }
    }
}
