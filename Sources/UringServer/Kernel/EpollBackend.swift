import CLinux
import Glibc
import Primitives

/// epoll backend: level-triggered readiness, reads into one scratch buffer per reactor (idle
/// connections hold no receive memory, as with the io_uring buffer ring), writes straight from
/// the connection's queue and waits for EPOLLOUT only when the socket is full. Event data
/// carries the same slot + generation tags as io_uring's user_data (`SlotTable`).
final class EpollBackend: IOBackend {
    private let epfd: FileDescriptor
    private var listenFD: Int32 = -1
    private var wakeTarget: WakeTarget?
    private let scratch: UnsafeMutableRawBufferPointer
    private var events: UnsafeMutablePointer<epoll_event>
    private let maxEvents = 512
    private var slots = SlotTable()
    private var released: [Connection] = []
    let counters = KernelCounters()

    // Tags for the non-connection fds (operation byte only; connection tags name a slot).
    private static let listenTag: UInt64 = 1
    private static let wakeTag: UInt64 = 2
    private static let connectionOp: UInt8 = 3

    /// The reactor's pool: shared message blocks go back to it once written.
    private let pool: BufferPool
    /// The reactor's pipes for spliced room batches (nil: it does not splice).
    private let pipes: SplicePipes?

    init(recvBufferSize: Int, pool: BufferPool, pipes: SplicePipes? = nil) throws(SyscallError) {
        self.pool = pool
        self.pipes = pipes
        epfd = FileDescriptor(try Sys.call("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
        scratch = .allocate(byteCount: max(recvBufferSize, 65536), alignment: 64)
        events = .allocate(capacity: maxEvents)
    }

    func releaseIdleMemory() {}   // one small scratch buffer: nothing worth giving back

    func shutdown() {
        if listenFD >= 0 { Glibc.close(listenFD); listenFD = -1 }
        slots.forEach { c in
            if !c.fdClosed {
                Glibc.close(c.fd)
                c.lifecycle = .fdClosed
            }
        }
        scratch.deallocate()
        events.deallocate()
    }

    private func ctl(_ op: Int32, _ fd: Int32, _ mask: UInt32, _ tag: UInt64) {
        var ev = epoll_event()
        ev.events = mask
        ev.data.u64 = tag
        _ = epoll_ctl(epfd.rawValue, op, fd, &ev)
    }

    @inline(__always)
    private func tag(_ c: Connection) -> UInt64 { slots.tag(c, Self.connectionOp) }

    func addListener(fd: Int32) throws(SyscallError) {
        listenFD = fd   // created non-blocking (Socket.listen)
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = Self.listenTag
        _ = try Sys.call("epoll_ctl") { epoll_ctl(epfd.rawValue, EPOLL_CTL_ADD, fd, &ev) }
    }

    func addWakeup(_ target: WakeTarget) throws(SyscallError) {
        wakeTarget = target
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.u64 = Self.wakeTag
        _ = try Sys.call("epoll_ctl") { epoll_ctl(epfd.rawValue, EPOLL_CTL_ADD, target.eventFD.rawValue, &ev) }
    }

    func wake(_ peer: WakeTarget) { peer.signal() }

    func refuse(_ socket: AcceptedSocket, _ message: UnsafeRawBufferPointer) {
        Socket.writeOnce(socket.fd, message)
        Glibc.close(socket.fd)
    }

    /// Accepted sockets are already non-blocking (accept4 with SOCK_NONBLOCK).
    func startReceiving(_ c: Connection) {
        slots.register(c)
        ctl(EPOLL_CTL_ADD, c.fd, EPOLLIN.rawValue | EPOLLRDHUP.rawValue, tag(c))
        c.ops.recv = .inFlight
    }

    func send(_ c: Connection) {
        guard !c.sendInFlight else { return }
        if writeOut(c) == .blocked {
            c.ops.send = .inFlight   // waiting for EPOLLOUT
            ctl(EPOLL_CTL_MOD, c.fd, EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue, tag(c))
        }
    }

    private enum WriteResult { case drained, blocked, failed }

    /// Writes as much of `c.output.out` (and its shared blocks) as the socket takes.
    private func writeOut(_ c: Connection) -> WriteResult {
        if let pipes, let b = c.output.blocks, b.pointee.pipeBytes > 0 {
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
            let r = c.output.out.readable
            let fd = c.fd
            do throws(Errno) {
                let written: Int?
                if let b = c.output.blocks, !b.pointee.out.isEmpty {
                    // Own bytes and shared blocks in one sendmsg (see UringBackend.send).
                    let msg = b.pointee.message(b.pointee.out, own: r)
                    written = try Sys.nonBlocking { sendmsg(fd, msg, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
                } else {
                    written = try Sys.nonBlocking { Glibc.send(fd, r.baseAddress, r.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
                }
                guard let n = written else { return .blocked }
                if n > 0 {
                    c.consumeQueued(n, pool: pool)
                    continue
                }
                throw Errno(EPIPE)   // nothing written, no error: the socket is not taking bytes
            } catch {
                c.dropQueuedOutput(pool: pool)
                pendingSendErrors.append((c, error.rawValue))
                return .failed
            }
        }
        return .drained
    }

    /// Send failures found while flushing are reported from poll, never re-entrantly.
    private var pendingSendErrors: [(Connection, Int32)] = []

    func close(_ c: Connection) {
        c.lifecycle = .closeStarted
        if c.ops.recv == .inFlight {
            _ = epoll_ctl(epfd.rawValue, EPOLL_CTL_DEL, c.fd, nil)
            c.ops.recv = .idle
        }
        c.ops.send = .idle   // nothing is in the kernel's hands: writes are synchronous
        Glibc.close(c.fd)
        c.lifecycle = .released
        slots.unregister(c)
        released.append(c)
    }

    @discardableResult
    func poll(timeoutMillis: Int32, gather: Bool, handler: IOEventHandler) -> Bool {
        if !pendingSendErrors.isEmpty {
            let errs = pendingSendErrors
            pendingSendErrors.removeAll(keepingCapacity: true)
            for (c, e) in errs where !c.closeStarted { handler.connectionSendCompleted(c, error: e) }
            if !released.isEmpty { deliverReleased(handler) }
            return false
        }
        let n = epoll_wait(epfd.rawValue, events, Int32(maxEvents), timeoutMillis)
        if n > 0 {
            for i in 0..<Int(n) {
                let ev = events[i]
                switch ev.data.u64 {
                case Self.listenTag: acceptAll(handler)
                case Self.wakeTag:
                    wakeTarget?.eventFD.drain()
                    handler.wakeup()
                default:
                    // A connection closed earlier in this batch no longer resolves.
                    guard let c = slots.connection(ev.data.u64), !c.closeStarted else { continue }
                    if ev.events & (EPOLLOUT.rawValue) != 0 && c.ops.send == .inFlight {
                        switch writeOut(c) {
                        case .drained:
                            c.ops.send = .idle
                            ctl(EPOLL_CTL_MOD, c.fd, EPOLLIN.rawValue | EPOLLRDHUP.rawValue, tag(c))
                            handler.connectionSendCompleted(c, error: 0)
                        case .blocked: break
                        case .failed:
                            c.ops.send = .idle
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
        return false
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
            Socket.configureAccepted(fd)
            handler.connectionAccepted(AcceptedSocket(fd: fd, peerIPv4: Socket.peerIPv4(fd)))
        }
    }

    /// Reads until the socket is empty (bounded per turn so one client cannot starve others).
    private func readAll(_ c: Connection, _ handler: IOEventHandler) {
        let fd = c.fd
        for _ in 0..<16 {
            let buf = scratch
            do throws(Errno) {
                guard let n = try Sys.nonBlocking({ recv(fd, buf.baseAddress, buf.count, Int32(MSG_DONTWAIT)) }) else { return }
                if n == 0 {
                    handler.connectionReceiveEnded(c, error: 0)
                    return
                }
                handler.connectionReceived(c, UnsafeRawBufferPointer(start: buf.baseAddress, count: n))
                if c.closing { return }
                if n < buf.count { return }
            } catch {
                handler.connectionReceiveEnded(c, error: error.rawValue)
                return
            }
        }
    }
}
