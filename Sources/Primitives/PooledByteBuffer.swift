/// A growable, move-only byte buffer whose storage is a chunk of a ``BufferPool``.
///
/// Connections queue their output in these: memory comes from the reactor's (NUMA-local) pool
/// only while bytes are queued and goes back with `release(to:)`, so an idle connection holds
/// nothing and steady traffic reuses the same chunks instead of calling malloc.
///
/// Every call that may allocate takes the pool explicitly: a buffer does not remember its pool
/// (that would cost 8 bytes per buffer, two per connection). The owner must hand the chunk back
/// with `release(to:)` before dropping the buffer; a buffer dropped while holding a chunk leaves
/// it counted as outstanding (the pool frees it with its slabs), it is never `free`d wrongly.
public struct PooledByteBuffer: ~Copyable {
    @usableFromInline var base: UnsafeMutableRawPointer?
    @usableFromInline var capacity: Int32 = 0
    @usableFromInline var sizeClass: Int32 = 0
    @usableFromInline var readIndex: Int32 = 0
    @usableFromInline var writeIndex: Int32 = 0

    public init() {}

    /// Unconsumed byte count.
    @inlinable public var readableCount: Int { Int(writeIndex &- readIndex) }
    @inlinable public var isEmpty: Bool { writeIndex == readIndex }
    /// True while the buffer holds a chunk of its pool.
    @inlinable public var holdsChunk: Bool { base != nil }

    /// The unconsumed bytes. Valid until the next mutation.
    @inlinable public var readable: UnsafeRawBufferPointer {
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + Int(readIndex), count: Int(writeIndex &- readIndex))
    }

    /// Makes room for `n` more bytes; compacts, or moves to a bigger chunk of `pool`.
    @inlinable public mutating func reserve(_ n: Int, pool: BufferPool) {
        if Int(writeIndex) &+ n <= Int(capacity) { return }
        grow(n, pool: pool)
    }

    @usableFromInline mutating func grow(_ n: Int, pool: BufferPool) {
        let live = Int(writeIndex - readIndex)
        precondition(live + n <= Int(Int32.max), "PooledByteBuffer: over 2 GiB queued")
        if let base, readIndex > 0, live + n <= Int(capacity) {
            // Compact: the consumed prefix is dead space.
            (base).copyMemory(from: base + Int(readIndex), byteCount: live)
            readIndex = 0
            writeIndex = Int32(live)
            return
        }
        // Double at least, so a growing queue moves O(log n) times.
        let chunk = pool.take(capacity: max(live + n, Int(capacity) * 2))
        if let base {
            chunk.base.copyMemory(from: base + Int(readIndex), byteCount: live)
            pool.give(PooledChunk(base: base, capacity: Int(capacity), sizeClass: Int(sizeClass)))
        }
        base = chunk.base
        capacity = Int32(truncatingIfNeeded: min(chunk.capacity, Int(Int32.max)))
        sizeClass = Int32(chunk.sizeClass)
        readIndex = 0
        writeIndex = Int32(live)
    }

    /// Appends one byte; `reserve` room first.
    @inlinable public mutating func appendReserved(_ byte: UInt8) {
        base.unsafelyUnwrapped.storeBytes(of: byte, toByteOffset: Int(writeIndex), as: UInt8.self)
        writeIndex &+= 1
    }

    /// Appends `bytes`; `reserve` room first.
    @inlinable public mutating func appendReserved(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, bytes.count > 0 else { return }
        (base.unsafelyUnwrapped + Int(writeIndex)).copyMemory(from: src, byteCount: bytes.count)
        writeIndex &+= Int32(bytes.count)
    }

    @inlinable public mutating func append(_ bytes: UnsafeRawBufferPointer, pool: BufferPool) {
        reserve(bytes.count, pool: pool)
        appendReserved(bytes)
    }

    /// Drops `n` bytes from the front (a partial send).
    @inlinable public mutating func consume(_ n: Int) {
        readIndex &+= Int32(n)
        if readIndex == writeIndex { readIndex = 0; writeIndex = 0 }
    }

    /// Forgets the contents, keeping the chunk.
    @inlinable public mutating func removeAll() { readIndex = 0; writeIndex = 0 }

    /// Gives the chunk back to `pool` (the contents are dropped).
    public mutating func release(to pool: BufferPool) {
        if let b = base {
            pool.give(PooledChunk(base: b, capacity: Int(capacity), sizeClass: Int(sizeClass)))
            base = nil
        }
        capacity = 0
        sizeClass = 0
        readIndex = 0
        writeIndex = 0
    }
}
