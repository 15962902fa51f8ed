import CLinux
import Glibc

// Direct descriptors, `accept` variant (docs/architecture.md, "io_uring techniques"): sockets
// are accepted straight into the ring's fixed-file table and have no fd. Every operation on
// them names the slot (`target`), they are shut down and closed by io_uring operations, and a
// real fd is installed (IORING_OP_FIXED_FD_INSTALL) only for what needs one: splice/tee of
// room batches, SO_LINGER at a forced close with zero-copy sends pending.
extension UringBackend {
    /// Single-shot accepts in flight at once, each with its own peer-address storage (a
    /// multishot accept has one address buffer for all its completions, and the per-IP limits
    /// and logs need every peer's address). Re-armed as each completes.
    static let acceptLanes = 4

    func armAcceptLanes() {
        for lane in 0..<Self.acceptLanes { armAcceptLane(lane) }
    }

    /// Arms lane `lane`: into the table when a slot is free for it, else a plain accept.
    func armAcceptLane(_ lane: Int) {
        let fd = listenFD
        guard fd >= 0 else { return }
        acceptLens[lane] = socklen_t(MemoryLayout<sockaddr_in>.size)
        let len = acceptLens + lane
        let addr = UnsafeMutableRawPointer(acceptAddrs + lane).assumingMemoryBound(to: sockaddr.self)
        if fixedClaimed >= techniques.fixedFiles {
            submit(SlotTable.tag(slot: Int32(lane), generation: 0, op: Op.acceptPlain.rawValue)) {
                io_uring_prep_accept($0, fd, addr, len, Int32(SOCK_CLOEXEC.rawValue | SOCK_NONBLOCK.rawValue))
            }
        } else {
            fixedClaimed += 1
            submit(SlotTable.tag(slot: Int32(lane), generation: 0, op: Op.acceptDirect.rawValue)) {
                clinux_prep_accept_direct_alloc($0, fd, addr, len)
            }
        }
    }

    func acceptCompleted(lane: Int, direct: Bool, res: Int32, handler: IOEventHandler) {
        if res >= 0 {
            let a = acceptAddrs[lane]
            let peer = a.sin_family == sa_family_t(AF_INET) ? UInt32(bigEndian: a.sin_addr.s_addr) : 0
            if direct {
                handler.connectionAccepted(AcceptedSocket(fd: -1, fixedIndex: res, peerIPv4: peer))
            } else {
                Socket.configureAccepted(res)
                handler.connectionAccepted(AcceptedSocket(fd: res, peerIPv4: peer))
            }
        } else if direct {
            fixedClaimed -= 1   // no connection holds the slot claimed for this lane
        }
        armAcceptLane(lane)
    }

    func needsRealFD(_ c: Connection) {
        guard c.fd < 0, c.fixedIndex >= 0, c.ops.install == .idle, !c.ops.installFailed, !c.closeStarted else { return }
        let index = c.fixedIndex
        submit(tag(c, .install)) { clinux_prep_fixed_fd_install($0, index) }
        c.ops.install = .inFlight
    }

    func installed(_ c: Connection, res: Int32) {
        c.ops.install = .idle
        if res >= 0 {
            c.fd = res
        } else {
            c.ops.installFailed = true   // no splice for it: shared blocks carry its batches
        }
        if c.closeStarted { releaseIfIdle(c) }
    }

    /// Ends the multishot receive and any send in flight (asynchronously: IORING_OP_SHUTDOWN).
    func shutdownFixed(_ c: Connection) {
        guard c.ops.shutdown == .idle else { return }
        c.ops.shutdown = .inFlight
        let index = c.fixedIndex
        submit(tag(c, .shutdownDirect)) {
            io_uring_prep_shutdown($0, index, Int32(SHUT_RDWR))
            $0.pointee.flags |= Self.fixedFileFlag
        }
    }

    /// Frees the fixed slot (IORING_OP_CLOSE with a file index); the record is released once
    /// this completes, so the slot is never handed out while the connection still names it.
    func closeFixed(_ c: Connection) {
        let index = UInt32(c.fixedIndex)
        submit(tag(c, .closeDirect)) { io_uring_prep_close_direct($0, index) }
        c.ops.closeDirect = .inFlight
    }

    /// A socket turned away at accept: one send of `message` (static), then the slot's close,
    /// linked so the close runs after the send whatever its result.
    func refuseDirect(_ index: Int32, _ message: UnsafeRawBufferPointer) {
        let base = message.baseAddress, count = message.count
        submit(UInt64(Op.refuseSent.rawValue)) {
            io_uring_prep_send($0, index, base, count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            $0.pointee.flags |= Self.fixedFileFlag | UInt8(1 << IOSQE_IO_HARDLINK_BIT)
        }
        submit(UInt64(Op.refuseClosed.rawValue)) { io_uring_prep_close_direct($0, UInt32(index)) }
    }

    /// At the backend's end: the sockets without an fd get a shutdown (their peers see EOF
    /// now, not when the ring's asynchronous teardown drops the table), waited for at most
    /// 100 ms (the reactor is exiting).
    func shutdownDirect() {
        guard techniques.acceptDirect else { return }
        var pending: UInt32 = 0
        slots.forEach { c in
            if !c.fdClosed && c.fixedIndex >= 0 {
                let index = c.fixedIndex
                submit(UInt64(Op.shutdownDirect.rawValue)) {
                    io_uring_prep_shutdown($0, index, Int32(SHUT_RDWR))
                    $0.pointee.flags |= Self.fixedFileFlag
                }
                if c.fd >= 0 { Glibc.close(c.fd) }
                c.lifecycle = .fdClosed
                pending += 1
            }
        }
        guard pending > 0 else { return }
        if !overflow.isEmpty { drainOverflow() }
        var ts = __kernel_timespec(tv_sec: 0, tv_nsec: 100_000_000)
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        _ = io_uring_submit_and_wait_timeout(&ring, &cqe, pending, &ts, nil)
    }
}
