import Glibc
import Primitives

/// A connection's output, in the order it goes out: a spliced pipe's bytes first (see
/// `OutputBlocks.pipe`), then own bytes and shared blocks interleaved. `out` is filled during a
/// turn; `sending` is what the kernel is sending (io_uring: stable while a send is in flight;
/// epoll writes straight from `out`). The reactor appends; the backends send, account and drop
/// through this one API, and only this folder touches the pipes.
struct OutputQueue: ~Copyable {
    /// Output queued during this turn, in a chunk of the reactor's buffer pool (no chunk while
    /// nothing is queued and the connection has been quiet for a second).
    var out = PooledByteBuffer()
    /// Output the kernel is sending (io_uring backend only; stable while a send is in flight).
    var sending = PooledByteBuffer()
    /// Shared message blocks queued in order with `out` and `sending` (large fan-out messages
    /// are referenced, not copied); nil unless some were queued lately.
    var blocks: UnsafeMutablePointer<OutputBlocks>?

    /// Output bytes queued or in flight, shared blocks and pipe included.
    @inline(__always)
    var pendingBytes: Int {
        out.readableCount + sending.readableCount
            + (blocks.map { $0.pointee.out.byteCount + $0.pointee.sending.byteCount + $0.pointee.pipeBytes } ?? 0)
    }

    /// Output queued and not yet handed to a send.
    @inline(__always)
    var hasQueued: Bool {
        !out.isEmpty || blocks.map { !$0.pointee.out.isEmpty || $0.pointee.pipeBytes > 0 } ?? false
    }
    @inline(__always)
    var queuedBytes: Int { out.readableCount + (blocks?.pointee.out.byteCount ?? 0) }
    /// Nothing is being sent (io_uring: the in-flight buffer and its blocks are done).
    @inline(__always)
    var sendingIsEmpty: Bool { sending.isEmpty && (blocks?.pointee.sending.isEmpty ?? true) }

    /// Queues a reference to `length` bytes of a shared block (after what is queued so far).
    @inline(__always)
    mutating func appendBlock(_ block: MessageBlock, length: Int, blocksPool: OutputBlocksPool) {
        if blocks == nil { blocks = blocksPool.take() }
        blocks.unsafelyUnwrapped.pointee.out.append(block, length: length, ownQueued: out.readableCount)
    }

    /// Nothing queued or being sent but earlier spliced batches: a batch may go into the pipe
    /// (spliced bytes always go out first).
    @inline(__always)
    var canTakeSplicedBatch: Bool { out.isEmpty && sendingIsEmpty && (blocks?.pointee.out.isEmpty ?? true) }

    /// Duplicates the batch loaded in `pipes` into this connection's pipe (tee; pages by
    /// reference). Call only when `canTakeSplicedBatch`.
    mutating func takeSplicedBatch(from pipes: SplicePipes, blocksPool: OutputBlocksPool, socket fd: Int32) -> SplicePipes.TeeResult {
        if blocks == nil { blocks = blocksPool.take() }
        return pipes.tee(into: &blocks.unsafelyUnwrapped.pointee, socket: fd)
    }

    /// Forgets the queued output (not what is in flight).
    mutating func dropQueued(pool: BufferPool) {
        out.removeAll()
        blocks?.pointee.out.removeAll(pool: pool)
    }

    /// Forgets what was being sent (the send failed).
    mutating func dropSending(pool: BufferPool) {
        sending.removeAll()
        blocks?.pointee.sending.removeAll(pool: pool)
    }

    /// The queue becomes the in-flight buffer; new output goes to a fresh queue (io_uring).
    @inline(__always)
    mutating func startSending() {
        swap(&sending, &out)
        if let b = blocks { swap(&b.pointee.sending, &b.pointee.out) }
    }

    /// Accounts `n` bytes of `sending` as sent (own bytes and blocks, in queue order).
    mutating func consumeSending(_ n: Int, pool: BufferPool) {
        if let b = blocks, !b.pointee.sending.isEmpty {
            b.pointee.sending.consume(n, own: &sending, pool: pool)
        } else {
            sending.consume(n)
        }
    }

    /// Accounts `n` bytes of `out` as written (epoll writes straight from the queue).
    mutating func consumeQueued(_ n: Int, pool: BufferPool) {
        if let b = blocks, !b.pointee.out.isEmpty {
            b.pointee.out.consume(n, own: &out, pool: pool)
        } else {
            out.consume(n)
        }
    }

    /// Gives every output buffer back (the connection is idle or gone).
    mutating func release(pool: BufferPool, blocksPool: OutputBlocksPool) {
        dropQueued(pool: pool)
        dropSending(pool: pool)
        out.release(to: pool)
        sending.release(to: pool)
        if let b = blocks {
            blocks = nil
            blocksPool.give(b)
        }
    }
}
