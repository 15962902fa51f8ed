import CLinux
import Glibc
import Synchronization

/// A relay thread in epoll mode: epoll_wait on the thread's socket, recvmmsg up to 64
/// datagrams at a time, and one sendmmsg for every copy those datagrams produced (each entry's
/// iovec points into the receive buffer: no user-space copy). The receive buffers are reused
/// only after the sendmmsg that referenced them has returned.
final class EpollRelayLoop {
    private let fd: Int32
    private let epfd: Int32
    private let core: RelayCore
    private let stop: RelayFlag

    private static let batch = 64
    private static let bufSize = UringRelayLoop.bufSize
    private let recvVec: OpaquePointer
    private let recvIov: UnsafeMutablePointer<iovec>
    private let recvAddr: UnsafeMutablePointer<sockaddr_in>
    private let recvBufs: UnsafeMutableRawPointer

    private let sendCap = 1024
    private let sendVec: OpaquePointer
    private let sendIov: UnsafeMutablePointer<iovec>
    private let sendAddr: UnsafeMutablePointer<sockaddr_in>
    private var sendCount = 0
    private var sendLen: UnsafeMutablePointer<Int>
    private let ackBytes: UnsafeMutablePointer<UInt8>

    struct SetupError: Error, CustomStringConvertible { let description: String }

    init(fd: Int32, core: RelayCore, stop: RelayFlag) throws(SetupError) {
        self.fd = fd
        self.core = core
        self.stop = stop
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epfd >= 0 else { throw SetupError(description: "epoll_create1: \(String(cString: strerror(clinux_errno())))") }
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = fd
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)
        let size = clinux_mmsghdr_size()
        recvVec = OpaquePointer(UnsafeMutableRawPointer.allocate(byteCount: size * Self.batch, alignment: 16))
        UnsafeMutableRawPointer(recvVec).initializeMemory(as: UInt8.self, repeating: 0, count: size * Self.batch)
        recvIov = .allocate(capacity: Self.batch)
        recvAddr = .allocate(capacity: Self.batch)
        recvAddr.initialize(repeating: sockaddr_in(), count: Self.batch)
        recvBufs = .allocate(byteCount: Self.batch * Self.bufSize, alignment: 4096)
        for i in 0..<Self.batch {
            recvIov[i] = iovec(iov_base: recvBufs + i * Self.bufSize, iov_len: Self.bufSize)
            let h = clinux_mmsghdr_at(recvVec, UInt32(i))!
            h.pointee.msg_iov = recvIov + i
            h.pointee.msg_iovlen = 1
            h.pointee.msg_name = UnsafeMutableRawPointer(recvAddr + i)
        }
        sendVec = OpaquePointer(UnsafeMutableRawPointer.allocate(byteCount: size * sendCap, alignment: 16))
        UnsafeMutableRawPointer(sendVec).initializeMemory(as: UInt8.self, repeating: 0, count: size * sendCap)
        sendIov = .allocate(capacity: sendCap)
        sendIov.initialize(repeating: iovec(), count: sendCap)
        sendAddr = .allocate(capacity: sendCap)
        sendAddr.initialize(repeating: sockaddr_in(), count: sendCap)
        sendLen = .allocate(capacity: sendCap)
        ackBytes = .allocate(capacity: Self.batch * 12)
        for i in 0..<sendCap {
            let h = clinux_mmsghdr_at(sendVec, UInt32(i))!
            h.pointee.msg_iov = sendIov + i
            h.pointee.msg_iovlen = 1
            h.pointee.msg_name = UnsafeMutableRawPointer(sendAddr + i)
            h.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
    }

    deinit {
        close(epfd)
        UnsafeMutableRawPointer(recvVec).deallocate(); recvIov.deallocate(); recvAddr.deallocate(); recvBufs.deallocate()
        UnsafeMutableRawPointer(sendVec).deallocate(); sendIov.deallocate(); sendAddr.deallocate(); sendLen.deallocate()
        ackBytes.deallocate()
    }

    /// Queues a copy; acks are queued too but not counted as relayed packets.
    private func queue(_ bytes: UnsafeMutableRawPointer, _ len: Int, to: AddrKey, isAck: Bool = false) {
        if sendCount == sendCap { flush() }
        fillSockaddr(sendAddr + sendCount, to)
        sendIov[sendCount].iov_base = bytes
        sendIov[sendCount].iov_len = len
        sendLen[sendCount] = isAck ? 0 : len
        sendCount += 1
    }

    /// Sends everything queued. A full socket buffer drops the rest (counted): waiting would
    /// delay every other channel on this thread, and late audio is useless anyway.
    private func flush() {
        var off = 0
        while off < sendCount {
            let r = clinux_sendmmsg(fd, OpaquePointer(UnsafeMutableRawPointer(sendVec) + off * clinux_mmsghdr_size()), UInt32(sendCount - off))
            if r == -EINTR { continue }
            if r <= 0 {
                core.counters.drop(.sendFailed, UInt64(sendCount - off))
                break
            }
            for i in off..<(off + Int(r)) where sendLen[i] > 0 { core.sent(bytes: sendLen[i]) }
            off += Int(r)
        }
        sendCount = 0
    }

    func run() {
        var ev = epoll_event()
        while !stop.isSet {
            let ready = epoll_wait(epfd, &ev, 1, 100)
            let now = RelayClock.monoNanos()
            let wall = RelayClock.wallMillis()
            if ready > 0 {
                while true {
                    for i in 0..<Self.batch {
                        clinux_mmsghdr_at(recvVec, UInt32(i))!.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
                    }
                    let n = clinux_recvmmsg(fd, recvVec, UInt32(Self.batch))
                    if n <= 0 { break }
                    let got = RelayClock.monoNanos()
                    var forwarded: UInt64 = 0
                    var acks = 0
                    for i in 0..<Int(n) {
                        let h = clinux_mmsghdr_at(recvVec, UInt32(i))!
                        let len = Int(clinux_mmsghdr_len(recvVec, UInt32(i)))
                        let truncated = h.pointee.msg_flags & Int32(MSG_TRUNC) != 0
                        let sa = recvAddr[i]
                        guard sa.sin_family == sa_family_t(AF_INET) else { core.counters.drop(.malformed); continue }
                        let from = addrKey(ip: UInt32(bigEndian: sa.sin_addr.s_addr), port: UInt16(bigEndian: sa.sin_port))
                        let p = (recvBufs + i * Self.bufSize).assumingMemoryBound(to: UInt8.self)
                        switch core.handle(p, len, truncated: truncated, from: from, now: now, wall: wall) {
                        case .forward:
                            for d in 0..<core.destCount { queue(UnsafeMutableRawPointer(p), len, to: core.dests[d]) }
                            forwarded &+= 1
                        case .ack:
                            let a = ackBytes + acks * 12
                            a.update(from: core.ack, count: 12)
                            acks += 1
                            queue(UnsafeMutableRawPointer(a), 12, to: from, isAck: true)
                        case .dropped, .consumed: break
                        }
                    }
                    // Receive → hand-off: measured up to the sendmmsg call, as the io_uring
                    // loop measures up to its submit.
                    if forwarded > 0 { core.recordLatency(RelayClock.monoNanos() &- got, packets: forwarded) }
                    if sendCount > 0 { flush() }
                    if Int(n) < Self.batch { break }
                }
            }
            core.sweepIfDue(now: now, wall: wall)
        }
    }
}
