/// A growable, move-only byte buffer over malloc'd memory.
///
/// Connections keep their pending input (a partial line) and queued output in these. An empty
/// buffer owns no memory: `releaseIfEmpty()` hands the storage back, so an idle connection holds
/// no buffers at all. `readIndex` lets a consumer (a partial send, a parser) drop a prefix
/// without moving bytes until the next compaction.
public struct ByteBuffer: ~Copyable {
    @usableFromInline var base: UnsafeMutablePointer<UInt8>?
    @usableFromInline var capacity: Int = 0
    /// Bytes before `readIndex` are consumed.
    @usableFromInline var readIndex: Int = 0
    @usableFromInline var writeIndex: Int = 0

    public init() {}

    deinit { base?.deallocate() }

    /// Unconsumed byte count.
    @inlinable public var readableCount: Int { writeIndex - readIndex }
    @inlinable public var isEmpty: Bool { writeIndex == readIndex }

    /// The unconsumed bytes. Valid until the next mutation.
    @inlinable public var readable: UnsafeRawBufferPointer {
        guard let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + readIndex, count: writeIndex - readIndex)
    }

    /// Make room for `n` more bytes at the write end; compacts or grows (doubling) as needed.
    @inlinable public mutating func reserve(_ n: Int) {
        if writeIndex &+ n <= capacity { return }
        grow(n)
    }

    @usableFromInline mutating func grow(_ n: Int) {
        if writeIndex + n <= capacity { return }
        if readIndex > 0 {
            // Compact first: consumed prefix is dead space.
            let live = writeIndex - readIndex
            if live + n <= capacity, let base {
                base.update(from: base + readIndex, count: live)
                readIndex = 0
                writeIndex = live
                return
            }
        }
        var newCap = max(capacity, 256)
        let need = writeIndex - readIndex + n
        while newCap < need { newCap &*= 2 }
        let newBase = UnsafeMutablePointer<UInt8>.allocate(capacity: newCap)
        if let base {
            newBase.update(from: base + readIndex, count: writeIndex - readIndex)
            base.deallocate()
        }
        writeIndex -= readIndex
        readIndex = 0
        base = newBase
        capacity = newCap
    }

    @inlinable public mutating func append(_ byte: UInt8) {
        reserve(1)
        base.unsafelyUnwrapped[writeIndex] = byte
        writeIndex &+= 1
    }

    @inlinable public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count)
        UnsafeMutableRawPointer(base.unsafelyUnwrapped + writeIndex)
            .copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        writeIndex &+= bytes.count
    }

    public mutating func append(_ s: StaticString) {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    public mutating func append(contentsOf s: String) {
        var s = s
        s.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Appends the decimal form of `v` without allocating.
    public mutating func appendDecimal(_ v: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes of scratch
        withUnsafeMutableBytes(of: &digits) { scratch in
            var n = v.magnitude
            var i = scratch.count
            repeat {
                i -= 1
                scratch[i] = UInt8(truncatingIfNeeded: n % 10) &+ 48
                n /= 10
            } while n > 0
            if v < 0 { i -= 1; scratch[i] = UInt8(ascii: "-") }
            append(UnsafeRawBufferPointer(rebasing: scratch[i...]))
        }
    }

    /// Raw write access to `n` reserved bytes; `body` returns how many it wrote.
    public mutating func writeWithUnsafeMutableBytes(minimumCapacity n: Int,
                                                     _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        reserve(n)
        let written = body(UnsafeMutableRawBufferPointer(start: base.unsafelyUnwrapped + writeIndex,
                                                         count: capacity - writeIndex))
        precondition(written >= 0 && written <= capacity - writeIndex)
        writeIndex &+= written
    }

    /// Marks `n` readable bytes as consumed.
    public mutating func consume(_ n: Int) {
        precondition(n <= readableCount)
        readIndex &+= n
        if readIndex == writeIndex { readIndex = 0; writeIndex = 0 }
    }

    public mutating func removeAll() { readIndex = 0; writeIndex = 0 }

    /// Frees the storage when nothing is left to read, so idle owners hold no memory.
    public mutating func releaseIfEmpty() {
        if readIndex == writeIndex, let b = base {
            b.deallocate()
            base = nil
            capacity = 0
            readIndex = 0
            writeIndex = 0
        }
    }
}
