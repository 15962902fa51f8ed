import Glibc
import Primitives
import Testing

/// `MessageBlock` and `BlockQueue`: a fan-out message queued by reference, interleaved with a
/// connection's own bytes. What `fill` describes must be exactly what was queued, in order,
/// through any sequence of partial sends; blocks go back to the pool after their last reader.
@Suite struct MessageBlockTests {
    /// Everything `fill` describes (up to `max` iovecs), concatenated.
    func described(_ q: BlockQueue, own: borrowing PooledByteBuffer, max: Int = 64) -> (bytes: [UInt8], iovecs: Int) {
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: max)
        defer { iov.deallocate() }
        let (n, total) = q.fill(iov, max: max, own: own.readable)
        var out: [UInt8] = []
        for i in 0..<n { out += UnsafeRawBufferPointer(start: iov[i].iov_base, count: iov[i].iov_len) }
        #expect(out.count == total)
        return (out, n)
    }

    @Test func blockCountsReferencesAndReturnsToPool() {
        let pool = BufferPool(slabBytes: 64 * 1024)
        let text = Array("hello".utf8)
        let b = text.withUnsafeBytes { MessageBlock.make(copying: $0, trailer: UInt8(ascii: "\n"), pool: pool) }
        #expect(Array(b.bytes) == text + [10] && b.count == 6 && b.referenceCount == 1)
        b.retain()
        #expect(b.referenceCount == 2 && pool.chunksOutstanding == 1)
        b.release(to: pool)
        #expect(pool.chunksOutstanding == 1, "one reference left: still out")
        b.release(to: pool)
        #expect(pool.chunksOutstanding == 0)
    }

    @Test func interleavesOwnBytesAndBlocksThroughPartialSends() {
        let pool = BufferPool(slabBytes: 64 * 1024)
        var own = PooledByteBuffer()
        var q = BlockQueue()
        var expected: [UInt8] = []
        var blocks: [MessageBlock] = []
        // own "A", block 1, block 2, own "BB", block 3, own "CCC"; blocks of different sizes,
        // one queued without its trailing byte (as binary frames do).
        func ownAppend(_ s: String) {
            Array(s.utf8).withUnsafeBytes { own.append($0, pool: pool) }
            expected += Array(s.utf8)
        }
        func blockAppend(_ size: Int, fill: UInt8, dropTrailer: Bool = false) {
            let body = [UInt8](repeating: fill, count: size)
            let b = body.withUnsafeBytes { MessageBlock.make(copying: $0, trailer: 10, pool: pool) }
            let length = dropTrailer ? size : size + 1
            q.append(b, length: length, ownQueued: own.readableCount)
            expected += Array(b.bytes.prefix(length))
            blocks.append(b)
        }
        ownAppend("A")
        blockAppend(300, fill: 0x61)
        blockAppend(5000, fill: 0x62, dropTrailer: true)
        ownAppend("BB")
        blockAppend(40, fill: 0x63)
        ownAppend("CCC")
        for b in blocks { b.release(to: pool) }   // the queue holds the only references now
        #expect(q.blockCount == 3 && q.byteCount == 301 + 5000 + 41)

        var (got, n) = described(q, own: own)
        #expect(got == expected && n == 6)
        // Partial sends of awkward sizes: each time, what is left is described exactly.
        var sent: [UInt8] = []
        for step in [1, 150, 151, 4999, 3, 2, 39] {
            let k = min(step, expected.count - sent.count)
            let before = described(q, own: own).bytes
            sent += before.prefix(k)
            q.consume(k, own: &own, pool: pool)
            (got, n) = described(q, own: own)
            #expect(got == Array(expected.dropFirst(sent.count)), "after consuming \(sent.count)")
        }
        #expect(sent.count == expected.count - 3 && got == Array("CCC".utf8))
        #expect(q.isEmpty && q.byteCount == 0)
        #expect(pool.chunksOutstanding == 1, "every block went back; only the own buffer's chunk is out")
        q.consume(3, own: &own, pool: pool)
        let ownEmpty = own.isEmpty
        #expect(ownEmpty)
        own.release(to: pool)
        q.deallocate()
        #expect(pool.chunksOutstanding == 0)
    }

    @Test func fillStopsAtMaxAndRemoveAllReleases() {
        let pool = BufferPool(slabBytes: 64 * 1024)
        var own = PooledByteBuffer()
        var q = BlockQueue()
        let body = [UInt8](repeating: 7, count: 100)
        let b = body.withUnsafeBytes { MessageBlock.make(copying: $0, trailer: 10, pool: pool) }
        for _ in 0..<100 {   // grows the entry storage past its first capacity
            Array("x".utf8).withUnsafeBytes { own.append($0, pool: pool) }
            q.append(b, length: 101, ownQueued: own.readableCount)
        }
        #expect(b.referenceCount == 101)
        let (part, n) = described(q, own: own, max: 10)
        #expect(n == 10 && part.count == 5 * 102, "10 iovecs: 5 × (own byte, block)")
        q.removeAll(pool: pool)
        #expect(b.referenceCount == 1 && q.isEmpty && q.byteCount == 0)
        b.release(to: pool)
        own.release(to: pool)
        q.deallocate()
        #expect(pool.chunksOutstanding == 0)
    }
}
