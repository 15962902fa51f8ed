// The io_uring and epoll workloads behind UringBenchmarks.
//
// A separate module because CLinux cannot be imported next to package-benchmark: Benchmark
// depends on swift-system, whose CSystem clang module includes the kernel's <linux/io_uring.h>,
// while liburing 2.3 ships its own copy of that header with different anonymous unions, and
// clang refuses the two definitions of `struct io_uring_sqe` in one compilation. Here CLinux is
// an `internal import` in a module built with library evolution (so clients never load it),
// the public API only uses Swift types, and each call runs a whole loop (`iterations` times)
// so the cross-module call is not what gets measured.
//
// Rings are created on the thread that calls `make…`: clinux_queue_init asks for
// IORING_SETUP_SINGLE_ISSUER, so the creating thread must be the one that submits.
internal import CLinux
import Glibc

final class Ring {
    var ring = io_uring()
    let cqes: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    let flags: UInt32

    init(entries: UInt32) {
        var f: UInt32 = 0
        let rc = clinux_queue_init(&ring, entries, &f)
        precondition(rc == 0, "clinux_queue_init: \(rc)")
        flags = f
        cqes = .allocate(capacity: Int(entries) * 2)
    }

    deinit {
        io_uring_queue_exit(&ring)
        cqes.deallocate()
    }

    @inline(__always) func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        if let s = io_uring_get_sqe(&ring) { return s }
        fatalError("SQ full")
    }

    /// Submits what is queued, waits for `n` completions and reaps them, calling `body` on each.
    @inline(__always) func submitAndReap(_ n: Int, _ body: (UnsafeMutablePointer<io_uring_cqe>) -> Void) {
        _ = io_uring_submit_and_wait(&ring, UInt32(n))
        var got = 0
        while got < n {
            let k = Int(io_uring_peek_batch_cqe(&ring, cqes, UInt32(n - got)))
            if k == 0 {
                _ = io_uring_submit_and_wait(&ring, 1)
                continue
            }
            for i in 0..<k { body(cqes[i]!) }
            io_uring_cq_advance(&ring, UInt32(k))
            got += k
        }
    }
}

/// A connected loopback TCP pair (client, server side), TCP_NODELAY on both.
func tcpPair(nonBlocking: Bool) -> (Int32, Int32) {
    let lfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(lfd >= 0)
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            precondition(bind(lfd, sa, len) == 0)
            precondition(listen(lfd, 1) == 0)
            precondition(getsockname(lfd, sa, &len) == 0)
        }
    }
    let cfd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            precondition(connect(cfd, sa, len) == 0)
        }
    }
    let sfd = accept(lfd, nil, nil)
    precondition(sfd >= 0)
    close(lfd)
    var one: Int32 = 1
    for fd in [cfd, sfd] {
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if nonBlocking { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    }
    return (cfd, sfd)
}

public let messageSize = 64

// MARK: - nop

/// One batch = `batch` nop SQEs, one io_uring_submit_and_wait(batch), `batch` CQEs reaped with
/// io_uring_peek_batch_cqe + io_uring_cq_advance.
public final class NopBatches {
    let ring: Ring
    public let batch: Int

    public init(batch: Int) {
        self.batch = batch
        ring = Ring(entries: 256)
    }

    /// Setup flags the ring got (SINGLE_ISSUER|DEFER_TASKRUN on 6.1+).
    public var setupFlags: UInt32 { ring.flags }

    /// Runs `iterations` batches; returns the sum of the CQE results (0).
    @inline(never)
    public func run(iterations: Int) -> Int {
        var sum = 0
        for _ in 0..<iterations {
            for _ in 0..<batch { io_uring_prep_nop(ring.sqe()) }
            ring.submitAndReap(batch) { cqe in sum &+= Int(cqe.pointee.res) }
        }
        return sum
    }
}

// MARK: - round trips

/// A 64-byte round trip over a loopback TCP pair: a → b, then b → a.
public protocol RoundTripper: AnyObject {
    func run(iterations: Int)
}

/// io_uring with one-shot send + recv: each half is one io_uring_enter carrying the send on one
/// end and the recv on the other (2 syscalls per round trip).
public final class UringEcho: RoundTripper {
    let ring = Ring(entries: 64)
    let a: Int32, b: Int32
    let out = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    let inp = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)

    public init() {
        (a, b) = tcpPair(nonBlocking: false)
        out.initializeMemory(as: UInt8.self, repeating: 0x61, count: 4096)
    }

    deinit { close(a); close(b); out.deallocate(); inp.deallocate() }

    @inline(__always) func half(from src: Int32, to dst: Int32) {
        let s1 = ring.sqe()
        io_uring_prep_send(s1, src, out, messageSize, 0)
        io_uring_sqe_set_data64(s1, 1)
        let s2 = ring.sqe()
        io_uring_prep_recv(s2, dst, inp, 4096, 0)
        io_uring_sqe_set_data64(s2, 2)
        ring.submitAndReap(2) { cqe in
            precondition(cqe.pointee.res == Int32(messageSize), "res \(cqe.pointee.res)")
        }
    }

    @inline(never)
    public func run(iterations: Int) {
        for _ in 0..<iterations {
            half(from: a, to: b)
            half(from: b, to: a)
        }
    }
}

/// io_uring as the server does it: a multishot recv armed once per socket, reading into a
/// provided-buffer ring; each received buffer is recycled (add + advance) right away.
/// Each half is one io_uring_enter (the send) whose wait also reaps the peer's recv CQE.
public final class UringMultishotEcho: RoundTripper {
    static let group: UInt16 = 3
    static let bufCount = 64
    static let bufSize = 4096
    let ring = Ring(entries: 64)
    let a: Int32, b: Int32
    let out = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    let bufs = UnsafeMutableRawPointer.allocate(byteCount: bufCount * bufSize, alignment: 4096)
    let br: UnsafeMutablePointer<io_uring_buf_ring>
    let mask: Int32

    public init() {
        (a, b) = tcpPair(nonBlocking: false)
        out.initializeMemory(as: UInt8.self, repeating: 0x62, count: 4096)
        var err: Int32 = 0
        guard let br = clinux_buf_ring_setup(&ring.ring, UInt32(Self.bufCount), Self.group, &err) else {
            fatalError("clinux_buf_ring_setup: \(err)")
        }
        self.br = br
        mask = io_uring_buf_ring_mask(UInt32(Self.bufCount))
        for i in 0..<Self.bufCount {
            io_uring_buf_ring_add(br, bufs + i * Self.bufSize, UInt32(Self.bufSize), UInt16(i), mask, Int32(i))
        }
        io_uring_buf_ring_advance(br, Int32(Self.bufCount))
        arm(a, tag: 10)
        arm(b, tag: 11)
    }

    deinit {
        close(a); close(b)
        clinux_buf_ring_free(&ring.ring, br, UInt32(Self.bufCount), Self.group)
        out.deallocate(); bufs.deallocate()
    }

    func arm(_ fd: Int32, tag: UInt64) {
        let s = ring.sqe()
        clinux_prep_recv_multishot_select(s, fd, Self.group)
        io_uring_sqe_set_data64(s, tag)
    }

    @inline(__always) func half(from src: Int32) {
        let s = ring.sqe()
        io_uring_prep_send(s, src, out, messageSize, 0)
        io_uring_sqe_set_data64(s, 1)
        var recycled: Int32 = 0
        ring.submitAndReap(2) { cqe in
            let tag = cqe.pointee.user_data
            let res = cqe.pointee.res
            precondition(res == Int32(messageSize), "tag \(tag) res \(res)")
            if tag >= 10 {
                let flags = cqe.pointee.flags
                precondition(flags & IORING_CQE_F_BUFFER != 0)
                let bid = Int(flags >> IORING_CQE_BUFFER_SHIFT)
                io_uring_buf_ring_add(br, bufs + bid * Self.bufSize, UInt32(Self.bufSize), UInt16(bid), mask, recycled)
                recycled += 1
                if flags & IORING_CQE_F_MORE == 0 { arm(tag == 10 ? a : b, tag: tag) }
            }
        }
        io_uring_buf_ring_advance(br, recycled)
    }

    @inline(never)
    public func run(iterations: Int) {
        for _ in 0..<iterations {
            half(from: a)
            half(from: b)
        }
    }
}

/// The same round trip through epoll: write, epoll_wait for the peer, read; and back.
/// Level-triggered EPOLLIN on both non-blocking ends: 6 syscalls per round trip.
public final class EpollEcho: RoundTripper {
    let a: Int32, b: Int32
    let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
    let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: 4)
    let out = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    let inp = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)

    public init() {
        (a, b) = tcpPair(nonBlocking: true)
        out.initializeMemory(as: UInt8.self, repeating: 0x63, count: 4096)
        for fd in [a, b] {
            var ev = epoll_event()
            ev.events = EPOLLIN.rawValue
            ev.data.fd = fd
            precondition(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0)
        }
    }

    deinit { close(a); close(b); close(ep); events.deallocate(); out.deallocate(); inp.deallocate() }

    @inline(__always) func half(from src: Int32, to dst: Int32) {
        precondition(write(src, out, messageSize) == messageSize)
        while true {
            let n = epoll_wait(ep, events, 4, -1)
            precondition(n >= 1)
            var ready = false
            for i in 0..<Int(n) where events[i].data.fd == dst { ready = true }
            if ready { break }
        }
        precondition(read(dst, inp, 4096) == messageSize)
    }

    @inline(never)
    public func run(iterations: Int) {
        for _ in 0..<iterations {
            half(from: a, to: b)
            half(from: b, to: a)
        }
    }
}

// MARK: - provided-buffer recycling

/// The user-space side of recycling provided buffers (no syscall: the kernel reads the ring tail
/// when a recv picks a buffer). Group 5 is registered but no recv uses it, so buffers can be
/// re-added forever.
public final class BufRingRecycler {
    static let group: UInt16 = 5
    let ring = Ring(entries: 8)
    let entries = 256
    let br: UnsafeMutablePointer<io_uring_buf_ring>
    let mask: Int32
    let bufs = UnsafeMutableRawPointer.allocate(byteCount: 256 * 4096, alignment: 4096)
    var next = 0

    public init() {
        var err: Int32 = 0
        guard let br = clinux_buf_ring_setup(&ring.ring, UInt32(entries), Self.group, &err) else {
            fatalError("clinux_buf_ring_setup: \(err)")
        }
        self.br = br
        mask = io_uring_buf_ring_mask(UInt32(entries))
    }

    deinit {
        clinux_buf_ring_free(&ring.ring, br, UInt32(entries), Self.group)
        bufs.deallocate()
    }

    /// `iterations` times: add `perAdvance` buffers, then one io_uring_buf_ring_advance.
    @inline(never)
    public func run(iterations: Int, perAdvance: Int) {
        for _ in 0..<iterations {
            for i in 0..<perAdvance {
                let bid = (next &+ i) & (entries - 1)
                io_uring_buf_ring_add(br, bufs + bid * 4096, 4096, UInt16(bid), mask, Int32(i))
            }
            io_uring_buf_ring_advance(br, Int32(perAdvance))
            next &+= perAdvance
        }
    }
}
