import CLinux
import Glibc
import Primitives

/// epoll backend: level-triggered readiness, reads into one scratch buffer per reactor (idle
/// connections hold no receive memory, as with the io_uring buffer ring), writes straight from
/// the connection's queue and waits for EPOLLOUT only when the socket is full.
final class EpollBackend: IOBackend {
    private let epfd: Int32
    private var listenFD: Int32 = -1
    private var wakeFD: Int32 = -1
    private let scratch: UnsafeMutableRawBufferPointer
    private var events: UnsafeMutablePointer<epoll_event>
    private let maxEvents = 512
    private var released: [Connection] = []

    // epoll_event.data tags for the non-connection fds (connection tags are object addresses).
    private static let listenTag: UInt64 = 1
    private static let wakeTag: UInt64 = 2

    /// The reactor's pool: shared message blocks go back to it once written.
    private let pool: BufferPool
    /// The reactor's pipes for spliced room batches (nil: it does not splice).
    private let pipes: SplicePipes?

    init(recvBufferSize: Int, pool: BufferPool, pipes: SplicePipes? = nil) throws(SyscallError) {
        self.pool = pool
        self.pipes = pipes
        epfd = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        scratch = .allocate(byteCount: max(recvBufferSize, 65536), alignment: 64)
        events = .allocate(capacity: maxEvents)
    }

    func releaseIdleMemory() {}   // one small scratch buffer: nothing worth giving back
    func setBatchedWait(_ on: Bool) {}   // epoll_wait has no minimum wait
    var batchedWait: Bool { false }

    func shutdown() {
        Glibc.close(epfd)
        scratch.deallocate()
        events.deallocate()
    }

    private func ctl(_ op: Int32, _ fd: Int32, _ mask: UInt32, _ tag: UInt64) {
        var ev = epoll_event()
        ev.events = mask
        ev.data.u64 = tag
        _ = epoll_ctl(epfd, op, fd, &ev)
    }

    @inline(__always)
    private static func tag(_ c: Connection) -> UInt64 {
        UInt64(UInt(bitPattern: Unmanaged.passUnretained(c).toOpaque()))
    }

    func addListener(fd: Int32) throws(SyscallError) {
        listenFD = fd
        Socket.setNonBlocking(fd)
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = Self.listenTag
        _ = try syscall("epoll_ctl") { epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) }
    }

    func addWakeup(fd: Int32) throws(SyscallError) {
        wakeFD = fd
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = Self.wakeTag
        _ = try syscall("epoll_ctl") { epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) }
    }

    var ringFD: Int32 { -1 }

    func wakePeer(ringFD: Int32, eventFD: Int32) {
        var one: UInt64 = 1
        _ = write(eventFD, &one, 8)
    }

    func startReceiving(_ c: Connection) {
        Socket.setNonBlocking(c.fd)
        ctl(EPOLL_CTL_ADD, c.fd, EPOLLIN.rawValue | EPOLLRDHUP.rawValue, Self.tag(c))
        c.recvArmed = true
    }

    func send(_ c: Connection) {
        guard !c.sendInFlight else { return }
        if writeOut(c) == .blocked {
            c.sendInFlight = true   // waiting for EPOLLOUT
            ctl(EPOLL_CTL_MOD, c.fd, EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue, Self.tag(c))
        }
    }

    private enum WriteResult { case drained, blocked, failed }

    /// Writes as much of `c.out` (and its shared blocks) as the socket takes.
    private func writeOut(_ c: Connection) -> WriteResult {
        if let pipes, let b = c.blocks, b.pointee.pipeBytes > 0 {
            // Spliced bytes go first (they were queued before anything else; see OutputBlocks).
            switch pipes.drain(&b.pointee, to: c.fd) {
            case .drained: break
            case .blocked: return .blocked
            case .failed(let e):
                pipes.discard(&b.pointee)
                c.dropQueuedOutput(pool: pool)
                pendingSendErrors.append((c, e))
                return .failed
            }
        }
        while c.hasQueuedOutput {
            let r = c.out.readable
            let n: Int
            if let b = c.blocks, !b.pointee.out.isEmpty {
                // Own bytes and shared blocks in one sendmsg (see UringBackend.send).
                n = sendmsg(c.fd, b.pointee.message(b.pointee.out, own: r), Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            } else {
                n = Glibc.send(c.fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if n > 0 {
                c.consumeQueued(n, pool: pool)
                continue
            }
            let e = currentErrno()
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { return .blocked }
            c.dropQueuedOutput(pool: pool)
            pendingSendErrors.append((c, e == 0 ? EPIPE : e))
            return .failed
        }
        return .drained
    }

    /// Send failures found while flushing are reported from poll, never re-entrantly.
    private var pendingSendErrors: [(Connection, Int32)] = []

    func close(_ c: Connection) {
        c.closeStarted = true
        if c.recvArmed {
            _ = epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, nil)
            c.recvArmed = false
        }
        c.sendInFlight = false
        Glibc.close(c.fd)
        c.fdClosed = true
        released.append(c)
    }

    func poll(timeoutMillis: Int32, handler: IOEventHandler) {
        if !pendingSendErrors.isEmpty {
            let errs = pendingSendErrors
            pendingSendErrors.removeAll(keepingCapacity: true)
            for (c, e) in errs where !c.closeStarted { handler.connectionSendCompleted(c, error: e) }
            if !released.isEmpty { deliverReleased(handler) }
            return
        }
        let n = epoll_wait(epfd, events, Int32(maxEvents), timeoutMillis)
        if n > 0 {
            for i in 0..<Int(n) {
                let ev = events[i]
                switch ev.data.u64 {
                case Self.listenTag: acceptAll(handler)
                case Self.wakeTag:
                    var v: UInt64 = 0
                    _ = read(wakeFD, &v, 8)
                    handler.wakeup()
                default:
                    // Connections released this batch are still referenced by `released`, so
                    // this pointer is valid; closeStarted tells us to ignore the event.
                    let p = UnsafeRawPointer(bitPattern: UInt(ev.data.u64))!
                    let c = Unmanaged<Connection>.fromOpaque(p).takeUnretainedValue()
                    if c.closeStarted { continue }
                    if ev.events & (EPOLLOUT.rawValue) != 0 && c.sendInFlight {
                        switch writeOut(c) {
                        case .drained:
                            c.sendInFlight = false
                            ctl(EPOLL_CTL_MOD, c.fd, EPOLLIN.rawValue | EPOLLRDHUP.rawValue, Self.tag(c))
                            handler.connectionSendCompleted(c, error: 0)
                        case .blocked: break
                        case .failed:
                            c.sendInFlight = false
                            pendingSendErrors.removeAll(where: { $0.0 === c })
                            handler.connectionSendCompleted(c, error: EPIPE)
                        }
                    }
                    if c.closeStarted { continue }
                    if ev.events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue) != 0 {
                        readAll(c, handler)
                    }
                }
            }
        }
        if !released.isEmpty { deliverReleased(handler) }
    }

    private func deliverReleased(_ handler: IOEventHandler) {
        let r = released
        released.removeAll(keepingCapacity: true)
        for c in r { handler.connectionReleased(c) }
    }

    private func acceptAll(_ handler: IOEventHandler) {
        for _ in 0..<256 {
            let fd = clinux_accept_nonblock(listenFD)
            if fd < 0 { return }   // EAGAIN (drained) or a transient error; level-triggered retries
            handler.connectionAccepted(fd: fd)
        }
    }

    /// Reads until the socket is empty (bounded per turn so one client cannot starve others).
    private func readAll(_ c: Connection, _ handler: IOEventHandler) {
        for _ in 0..<16 {
            let n = recv(c.fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            if n > 0 {
                handler.connectionReceived(c, UnsafeRawBufferPointer(start: scratch.baseAddress, count: n))
                if c.closeStarted || c.closing { return }
                if n < scratch.count { return }
                continue
            }
            if n == 0 {
                handler.connectionReceiveEnded(c, error: 0)
                return
            }
            let e = currentErrno()
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return }
            handler.connectionReceiveEnded(c, error: e)
            return
        }
    }
}
