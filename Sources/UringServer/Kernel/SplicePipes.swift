import CLinux
import Glibc

/// The two ends of a non-blocking pipe.
struct SplicePipe {
    var readFD: Int32
    var writeFD: Int32
}

/// The batches a member's pipe holds, in order, to know how many of its slots are in use: a
/// batch written into the (emptied) source pipe fills whole pages, `tee` links each page into
/// its own slot, and `splice` frees a slot once its page is consumed.
struct PipeLayout {
    static let maxBatches = 64
    /// Sizes of the batches still (partly) in the pipe, a ring of `maxBatches`.
    private let sizes: UnsafeMutablePointer<Int>
    private var head = 0
    private var count = 0
    /// Bytes of the oldest batch already spliced.
    private var headConsumed = 0
    /// Pages of the batches in the ring.
    private var pages = 0
    /// Bytes in the pipe the socket has not taken yet.
    private(set) var bytes = 0

    init() { sizes = .allocate(capacity: Self.maxBatches) }
    func deallocate() { sizes.deallocate() }

    var slotsInUse: Int { pages - headConsumed / SplicePipes.pageSize }
    var isFull: Bool { count == Self.maxBatches }

    mutating func added(_ n: Int) {
        sizes[(head + count) % Self.maxBatches] = n
        count += 1
        pages += SplicePipes.pages(n)
        bytes += n
    }

    mutating func consumed(_ n: Int) {
        bytes -= n
        headConsumed += n
        while count > 0 && headConsumed >= sizes[head] {
            headConsumed -= sizes[head]
            pages -= SplicePipes.pages(sizes[head])
            head = (head + 1) % Self.maxBatches
            count -= 1
        }
    }

    mutating func reset() {
        head = 0; count = 0; headConsumed = 0; pages = 0; bytes = 0
    }
}

/// Sends big room batches without the kernel copying them once per recipient.
///
/// A plain send (or sendmsg of a shared block) makes the kernel copy the bytes into every
/// recipient's socket buffer, the largest cost of big-message fan-out (docs/performance.md,
/// "Spliced batches"). Here the batch is written once into a *source* pipe (one copy, into pipe
/// pages); each member gets it with `tee` into a pipe of its own (the pages are referenced, not
/// copied) and `splice` from there into its socket (the socket buffer references the same
/// pages). The only remaining copy per recipient is the receiver's own `recv`.
///
/// Member pipes are held only while a socket has spliced bytes it has not taken yet: a socket
/// that takes the whole batch at once gives its pipe back in the same call, so with readers
/// that keep up one pipe serves a whole room. A member whose socket is full collects further
/// batches in its pipe while it has room. Pipes cost two file descriptors and count against
/// the user's pipe page budget (`fs.pipe-user-pages-soft`, 16,384 pages), so a reactor opens
/// at most `maxPipes` (of 64 pages each: 2,048 pages); when none can be had,
/// callers fall back to shared blocks, so nothing depends on pipes being available.
///
/// Both backends call `splice`/`tee` directly (non-blocking): io_uring runs IORING_OP_SPLICE and
/// IORING_OP_TEE only in its worker threads (they return -EAGAIN when issued inline), which
/// would add a thread hop per recipient.
final class SplicePipes {
    /// Bytes one pipe holds (64 pages; the default is 16); batches are cut at this size, big
    /// enough for a turn's batch of 4 KiB fan-out to take one tee and one splice.
    static let capacity = 262144
    static let pageSize = 4096
    static let slots = capacity / pageSize
    @inline(__always)
    static func pages(_ bytes: Int) -> Int { (bytes + pageSize - 1) / pageSize }
    /// Pipes one reactor keeps open at most (source, pooled, and held by members).
    static let maxPipes = 32
    private var source: SplicePipe?
    /// Bytes of the current batch in the source pipe (0: none loaded).
    private(set) var sourceBytes = 0
    /// Empty pipes for reuse. All of them are kept (at most `maxPipes`) while batches are
    /// being spliced: an empty pipe holds no pages, while opening one (pipe2 + F_SETPIPE_SZ)
    /// and closing it cost more than the splice it serves; with a pool of 8 a 50-member room
    /// churned 2,600 pipes a second. After a second without a batch they are closed
    /// (`releaseIdle`), so a server that went quiet holds no more descriptors than before.
    private var free: [SplicePipe] = []
    /// A batch was loaded since the last `releaseIdle`.
    private var usedSinceIdleCheck = false
    private let devNull: Int32
    /// Pipes currently open (source, pooled and held by members), for /stats and tests.
    private(set) var openPipes = 0

    init() {
        devNull = open("/dev/null", O_WRONLY | O_CLOEXEC)
    }

    deinit {
        if let s = source { closePipe(s) }
        for p in free { closePipe(p) }
        if devNull >= 0 { Glibc.close(devNull) }
    }

    private func openPipe() -> SplicePipe? {
        guard openPipes < Self.maxPipes else { return nil }
        var fds: [Int32] = [-1, -1]
        let got = clinux_pipe_open(&fds, Self.capacity)
        guard got >= Self.capacity else { return nil }
        openPipes += 1
        return SplicePipe(readFD: fds[0], writeFD: fds[1])
    }

    private func closePipe(_ p: SplicePipe) {
        Glibc.close(p.readFD)
        Glibc.close(p.writeFD)
        openPipes -= 1
    }

    /// Writes `bytes` (at most `capacity`) into the source pipe for the `tee` calls that
    /// follow. False when that is not possible; the caller then uses shared blocks.
    func load(_ bytes: UnsafeRawBufferPointer) -> Bool {
        precondition(sourceBytes == 0, "SplicePipes.load: previous batch not finished")
        guard bytes.count > 0, bytes.count <= Self.capacity, devNull >= 0 else { return false }
        if source == nil { source = openPipe() }
        guard let s = source else { return false }
        var done = 0
        while done < bytes.count {
            let off = done
            if let n = try? Sys.nonBlocking({ write(s.writeFD, bytes.baseAddress! + off, bytes.count - off) }) ?? nil, n > 0 {
                done += n
            } else {
                // Cannot happen with an empty pipe of `capacity` bytes; do not guess at its
                // state: close it, the next batch opens a fresh one.
                closePipe(s)
                source = nil
                return false
            }
        }
        sourceBytes = bytes.count
        usedSinceIdleCheck = true
        return true
    }

    enum TeeResult {
        case teed
        /// `b` unchanged: its pipe has no room (after splicing what the socket takes now), or
        /// no pipe can be had. Use a shared block.
        case noRoom
        /// The kernel took part of the batch into `b`'s pipe, which is then out of step with
        /// the stream: the pipe is dropped, and the connection must be closed.
        case broken
    }

    /// Duplicates the loaded batch into `b`'s pipe (one from the pool if it has none).
    func tee(into b: inout OutputBlocks, socket fd: Int32) -> TeeResult {
        precondition(sourceBytes > 0)
        // tee needs a free slot per page of the source.
        let need = Self.pages(sourceBytes)
        if b.pipe != nil && (b.layout.slotsInUse + need > Self.slots || b.layout.isFull) {
            if case .failed = drain(&b, to: fd) { return .noRoom }   // the send path reports it
        }
        guard b.layout.slotsInUse + need <= Self.slots && !b.layout.isFull,
              let s = source, let p = b.pipe ?? take() else { return .noRoom }
        let n = clinux_tee(s.readFD, p.writeFD, sourceBytes)
        if n == sourceBytes {
            b.pipe = p
            b.layout.added(n)
            return .teed
        }
        if n <= 0 {
            if b.pipe == nil { give(p) }
            return .noRoom
        }
        // With the slots counted above this cannot happen; if it does, the member's stream
        // would continue mid-batch. Drop the pipe and what it held.
        if b.pipe == nil { b.pipe = p }
        b.layout.added(n)
        discard(&b)
        return .broken
    }

    /// Ends the batch: the source pipe's pages are dropped (by moving them to /dev/null, no
    /// copy); members keep their references until their sockets are done with them.
    func finishBatch() {
        guard let s = source, sourceBytes > 0 else { return }
        var left = sourceBytes
        sourceBytes = 0
        while left > 0 {
            let n = left
            if let moved = try? Sys.nonBlockingNegated({ clinux_splice(s.readFD, devNull, n) }) ?? nil, moved > 0 {
                left -= moved
                continue
            }
            closePipe(s)
            source = nil
            return
        }
    }

    enum DrainResult { case drained, blocked, failed(Int32) }

    /// Splices `b`'s pipe into socket `fd` (non-blocking). When the pipe is empty it goes back
    /// to the pool.
    func drain(_ b: inout OutputBlocks, to fd: Int32) -> DrainResult {
        guard let p = b.pipe else { return .drained }
        while b.layout.bytes > 0 {
            let want = b.layout.bytes
            do throws(Errno) {
                guard let n = try Sys.nonBlockingNegated({ clinux_splice(p.readFD, fd, want) }) else { return .blocked }
                if n == 0 { return .failed(EPIPE) }
                b.layout.consumed(n)
            } catch {
                return .failed(error.rawValue)
            }
        }
        b.pipe = nil
        give(p)
        return .drained
    }

    /// Forgets what `b`'s pipe still holds (the connection failed or is gone).
    func discard(_ b: inout OutputBlocks) {
        guard let p = b.pipe else { return }
        b.pipe = nil
        if b.layout.bytes == 0 {
            give(p)
        } else {
            b.layout.reset()
            closePipe(p)   // closing drops its pages; cheaper than draining a stuck pipe
        }
    }

    /// Called once a second: when no batch was loaded since the last call, the source and the
    /// pooled pipes are closed (pipes members still hold stay with them until drained).
    func releaseIdle() {
        defer { usedSinceIdleCheck = false }
        guard !usedSinceIdleCheck, sourceBytes == 0 else { return }
        if let s = source { closePipe(s); source = nil }
        for p in free { closePipe(p) }
        free.removeAll()
    }

    private func take() -> SplicePipe? { free.popLast() ?? openPipe() }

    private func give(_ p: SplicePipe) { free.append(p) }
}
