import Glibc
import Primitives

/// A connection's queued references to shared message blocks (see `MessageBlock`), for the
/// output buffer being filled (`out`) and the one being sent (`sending`, io_uring), plus the
/// iovec list and msghdr of the sendmsg in flight (the kernel may read them until it completes).
///
/// Attached to a connection only while it has blocks queued or sent recently, and recycled
/// through the reactor's free list (`OutputBlocksPool`): a connection that only ever gets small
/// messages never has one, and steady traffic allocates nothing.
struct OutputBlocks {
    /// iovecs per sendmsg: enough to coalesce a turn's worth of messages per socket; the rest
    /// goes in the next send (IOV_MAX is 1024). A binary frame takes two (header, block), so
    /// compressed fan-out needs room for twice the messages of a turn; 4 KiB per connection
    /// with blocks queued.
    static let iovCapacity = 256

    var out = BlockQueue()
    var sending = BlockQueue()
    /// A pipe holding room batches by page reference (see `SplicePipes`), and how many of its
    /// bytes the socket has not taken yet. They go out before anything in `out`/`sending`: a
    /// batch is only spliced to a connection with nothing else queued or being sent.
    var pipe: SplicePipe?
    var layout = PipeLayout()
    @inline(__always)
    var pipeBytes: Int { layout.bytes }
    let iov: UnsafeMutablePointer<iovec>
    /// Allocated, not stored inline: the kernel reads it when the SQE is submitted, after the
    /// call that prepared it has returned, so its address must be fixed (an inout projection
    /// of an inline field is not guaranteed to be).
    let msg: UnsafeMutablePointer<msghdr>

    init() {
        iov = .allocate(capacity: Self.iovCapacity)
        msg = .allocate(capacity: 1)
        msg.initialize(to: msghdr())
    }

    /// The msghdr for one sendmsg of `queue` with its own bytes `own` (as many pieces as
    /// `iovCapacity` allows; the rest goes in the next send).
    func message(_ queue: BlockQueue, own: UnsafeRawBufferPointer) -> UnsafeMutablePointer<msghdr> {
        msg.pointee = msghdr()
        msg.pointee.msg_iov = iov
        msg.pointee.msg_iovlen = queue.fill(iov, max: Self.iovCapacity, own: own).count
        return msg
    }

    var isEmpty: Bool { out.isEmpty && sending.isEmpty && pipe == nil }
}

/// Per-reactor free list of `OutputBlocks` (allocated on first need, kept for reuse).
final class OutputBlocksPool {
    private var free: [UnsafeMutablePointer<OutputBlocks>] = []
    /// Where pipes go back (nil: this reactor does not splice).
    let pipes: SplicePipes?

    init(pipes: SplicePipes? = nil) { self.pipes = pipes }

    /// `take` calls since the last `releaseIfIdle`.
    private var takes = 0

    func take() -> UnsafeMutablePointer<OutputBlocks> {
        takes &+= 1
        if let p = free.popLast() { return p }
        let p = UnsafeMutablePointer<OutputBlocks>.allocate(capacity: 1)
        p.initialize(to: OutputBlocks())
        return p
    }

    /// Takes back an `OutputBlocks` with no blocks queued (a pipe it holds is given back, or
    /// closed with whatever it still held: the connection is idle or gone).
    func give(_ p: UnsafeMutablePointer<OutputBlocks>) {
        pipes?.discard(&p.pointee)
        precondition(p.pointee.isEmpty, "OutputBlocksPool.give with blocks queued")
        free.append(p)
    }

    /// Called once a second: when nothing was taken since the last call, the pooled records
    /// (4 KiB of iovecs each) go back to the system. A burst that spliced to hundreds of idle
    /// members would otherwise keep one per member for good; steady traffic takes every
    /// second and keeps its pool.
    /// Returns how many were released.
    @discardableResult
    func releaseIfIdle() -> Int {
        defer { takes = 0 }
        guard takes == 0 else { return 0 }
        let n = free.count
        for p in free { Self.destroy(p) }
        free.removeAll()
        return n
    }

    private static func destroy(_ p: UnsafeMutablePointer<OutputBlocks>) {
        p.pointee.out.deallocate()
        p.pointee.sending.deallocate()
        p.pointee.iov.deallocate()
        p.pointee.msg.deallocate()
        p.pointee.layout.deallocate()
        p.deinitialize(count: 1)
        p.deallocate()
    }

    deinit {
        for p in free { Self.destroy(p) }
    }
}
