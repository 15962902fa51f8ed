#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A message rendered once and referenced by every connection it goes to: fan-out queues a
/// reference per recipient (``BlockQueue``) instead of copying the bytes into each recipient's
/// output, and the kernel reads the one copy for every socket (sendmsg with an iovec per block).
///
/// The block is a chunk of one reactor's ``BufferPool``: a 16-byte header (reference count,
/// length, chunk capacity, size class) followed by the bytes. The count is a plain integer, not
/// an atomic: a block belongs to the reactor that made it and only that thread touches it
/// (each reactor a message is handed to builds its own block from the hand-off copy).
public struct MessageBlock: Equatable {
    public let raw: UnsafeMutableRawPointer

    @usableFromInline static let headerSize = 16
    // Header fields (Int32 each): refs, count, capacity, sizeClass.

    @inlinable init(raw: UnsafeMutableRawPointer) { self.raw = raw }

    /// A block holding `bytes` followed by `trailer` (e.g. the line end of JSON lines), with one
    /// reference, owned by the caller.
    public static func make(copying bytes: UnsafeRawBufferPointer, trailer: UInt8? = nil, pool: BufferPool) -> MessageBlock {
        let count = bytes.count + (trailer == nil ? 0 : 1)
        precondition(count <= Int(Int32.max) - headerSize, "MessageBlock: message over 2 GiB")
        let chunk = pool.take(capacity: headerSize + count)
        let b = MessageBlock(raw: chunk.base)
        b.raw.storeBytes(of: Int32(1), toByteOffset: 0, as: Int32.self)
        b.raw.storeBytes(of: Int32(count), toByteOffset: 4, as: Int32.self)
        b.raw.storeBytes(of: Int32(truncatingIfNeeded: chunk.capacity), toByteOffset: 8, as: Int32.self)
        b.raw.storeBytes(of: Int32(chunk.sizeClass), toByteOffset: 12, as: Int32.self)
        if let src = bytes.baseAddress, bytes.count > 0 {
            (b.raw + headerSize).copyMemory(from: src, byteCount: bytes.count)
        }
        if let t = trailer { (b.raw + headerSize + bytes.count).storeBytes(of: t, as: UInt8.self) }
        return b
    }

    /// Byte count (trailer included).
    @inlinable public var count: Int { Int(raw.load(fromByteOffset: 4, as: Int32.self)) }
    @inlinable public var base: UnsafeRawPointer { UnsafeRawPointer(raw + Self.headerSize) }
    @inlinable public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
    @inlinable public var referenceCount: Int { Int(raw.load(fromByteOffset: 0, as: Int32.self)) }

    @inlinable public func retain() {
        raw.storeBytes(of: raw.load(fromByteOffset: 0, as: Int32.self) &+ 1, toByteOffset: 0, as: Int32.self)
    }

    /// Drops one reference; the last one gives the chunk back to `pool` (the pool it came from).
    @inlinable public func release(to pool: BufferPool) {
        let refs = raw.load(fromByteOffset: 0, as: Int32.self) &- 1
        precondition(refs >= 0, "MessageBlock released more often than retained")
        if refs > 0 {
            raw.storeBytes(of: refs, toByteOffset: 0, as: Int32.self)
            return
        }
        let capacity = Int(raw.load(fromByteOffset: 8, as: Int32.self))
        let sizeClass = Int(raw.load(fromByteOffset: 12, as: Int32.self))
        pool.give(PooledChunk(base: raw, capacity: capacity, sizeClass: sizeClass))
    }
}

/// The shared blocks queued for one connection, in order with its own output bytes (kept in a
/// separate ``PooledByteBuffer``, "own bytes": replies, frame headers, small messages).
///
/// Each entry remembers how many own bytes come before it, counted from where the queue
/// started, so the two streams interleave exactly as they were queued: `fill` describes them as
/// one iovec list for sendmsg, and `consume` accounts a (partial) send across both.
/// Storage grows by doubling and is kept when the queue empties (no allocation in steady state).
public struct BlockQueue {
    @usableFromInline struct Entry {
        /// Own bytes queued before this block, counted from `ownConsumed`'s origin.
        var position: Int
        var block: MessageBlock
        var length: Int
    }

    @usableFromInline var entries: UnsafeMutablePointer<Entry>?
    @usableFromInline var capacity = 0
    @usableFromInline var head = 0
    @usableFromInline var tail = 0
    /// Bytes of the head block already sent.
    @usableFromInline var headSent = 0
    /// Own bytes consumed since the queue last became non-empty (the origin of `position`).
    @usableFromInline var ownConsumed = 0
    /// Unsent bytes in queued blocks.
    public private(set) var byteCount = 0

    public init() {}

    @inlinable public var isEmpty: Bool { head == tail }
    /// Blocks queued (partly sent ones included).
    @inlinable public var blockCount: Int { tail - head }

    /// Queues the first `length` bytes of `block` (taking a reference) after the `ownQueued`
    /// own bytes now waiting in the companion buffer.
    public mutating func append(_ block: MessageBlock, length: Int, ownQueued: Int) {
        precondition(length > 0 && length <= block.count, "BlockQueue.append: bad length")
        if head == tail {
            head = 0
            tail = 0
            headSent = 0
            ownConsumed = 0
        }
        if tail == capacity { makeRoom() }
        entries.unsafelyUnwrapped[tail] = Entry(position: ownConsumed + ownQueued, block: block, length: length)
        tail += 1
        byteCount += length
        block.retain()
    }

    private mutating func makeRoom() {
        if head > 0 {
            // Slide the live entries to the front.
            entries!.update(from: entries! + head, count: tail - head)
            tail -= head
            head = 0
            if tail < capacity { return }
        }
        let newCapacity = max(16, capacity * 2)
        let n = UnsafeMutablePointer<Entry>.allocate(capacity: newCapacity)
        if let old = entries {
            n.moveInitialize(from: old, count: tail)
            old.deallocate()
        }
        entries = n
        capacity = newCapacity
    }

    /// Accounts `n` sent bytes, in queue order: own bytes (consumed from `own`) up to the next
    /// block, then that block (released once sent whole), and so on.
    public mutating func consume(_ n: Int, own: inout PooledByteBuffer, pool: BufferPool) {
        var n = n
        while n > 0 {
            if head == tail {
                precondition(n <= own.readableCount, "BlockQueue.consume: more than was queued")
                own.consume(n)
                return
            }
            let e = entries.unsafelyUnwrapped[head]
            let ownBefore = e.position - ownConsumed
            if ownBefore > 0 {
                let k = min(n, ownBefore)
                own.consume(k)
                ownConsumed += k
                n -= k
                continue
            }
            let k = min(n, e.length - headSent)
            headSent += k
            byteCount -= k
            n -= k
            if headSent == e.length {
                e.block.release(to: pool)
                head += 1
                headSent = 0
            }
        }
    }

    /// Describes, in order, up to `max` pieces of what is unsent: own bytes (`own`, the
    /// companion buffer's readable bytes) and blocks. Returns the iovec count and byte total.
    public func fill(_ iov: UnsafeMutablePointer<iovec>, max: Int, own: UnsafeRawBufferPointer) -> (count: Int, bytes: Int) {
        var n = 0
        var total = 0
        var ownPos = 0
        var i = head
        while n < max {
            if i < tail {
                let e = entries.unsafelyUnwrapped[i]
                let rel = e.position - ownConsumed
                if rel > ownPos {
                    iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: own.baseAddress! + ownPos), iov_len: rel - ownPos)
                    total += rel - ownPos
                    ownPos = rel
                    n += 1
                    continue
                }
                let off = i == head ? headSent : 0
                iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: e.block.base + off), iov_len: e.length - off)
                total += e.length - off
                n += 1
                i += 1
            } else {
                if own.count > ownPos {
                    iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: own.baseAddress! + ownPos), iov_len: own.count - ownPos)
                    total += own.count - ownPos
                    n += 1
                }
                break
            }
        }
        return (n, total)
    }

    /// Drops every queued block (the own bytes are the caller's to drop).
    public mutating func removeAll(pool: BufferPool) {
        while head < tail {
            entries.unsafelyUnwrapped[head].block.release(to: pool)
            head += 1
        }
        head = 0
        tail = 0
        headSent = 0
        ownConsumed = 0
        byteCount = 0
    }

    /// Frees the entry storage (the queue must be empty).
    public mutating func deallocate() {
        precondition(isEmpty, "BlockQueue.deallocate with blocks queued")
        entries?.deallocate()
        entries = nil
        capacity = 0
    }
}
