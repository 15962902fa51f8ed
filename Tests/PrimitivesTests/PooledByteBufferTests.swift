import Primitives
import Testing

/// `PooledByteBuffer`: the output queue every connection uses. Contents survive growth across
/// size classes and compaction; chunks go back to the pool; `trim` then frees the slabs.
@Suite struct PooledByteBufferTests {
    @Test func growsKeepsOrderAndGivesChunksBack() {
        let pool = BufferPool(slabBytes: 64 * 1024)
        var b = PooledByteBuffer()
        #expect(!b.holdsChunk && b.isEmpty && pool.chunksOutstanding == 0)
        var expected: [UInt8] = []
        for i in 0..<3000 {   // ~17 KB: moves through several size classes
            let piece = [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 1 + i % 11)
            piece.withUnsafeBytes { b.append($0, pool: pool) }
            expected += piece
            if i % 500 == 499 {   // a partial send drops a prefix, later appends compact or grow
                b.consume(37)
                expected.removeFirst(37)
            }
        }
        #expect(Array(b.readable) == expected)
        #expect(b.holdsChunk && pool.chunksOutstanding == 1, "one chunk at a time: \(pool.chunksOutstanding)")

        b.consume(b.readableCount)
        #expect(b.isEmpty && b.holdsChunk, "consuming everything keeps the chunk for the next turn")
        b.release(to: pool)
        #expect(!b.holdsChunk && pool.chunksOutstanding == 0)
        #expect(pool.bytesHeld > 0)
        let freed = pool.trim()
        #expect(freed > 0 && pool.bytesHeld == 0, "trim freed \(freed), still held \(pool.bytesHeld)")
    }

    @Test func trimKeepsClassesInUse() {
        let pool = BufferPool(slabBytes: 64 * 1024)
        var busy = PooledByteBuffer(), idle = PooledByteBuffer()
        let small = [UInt8](repeating: 1, count: 100), big = [UInt8](repeating: 2, count: 5000)
        small.withUnsafeBytes { busy.append($0, pool: pool) }
        big.withUnsafeBytes { idle.append($0, pool: pool) }
        idle.release(to: pool)
        let held = pool.bytesHeld
        #expect(pool.trim() > 0 && pool.bytesHeld < held, "the 8 KiB class is unused and goes")
        #expect(Array(busy.readable) == small, "the class in use keeps its slab and the bytes")
        small.withUnsafeBytes { busy.append($0, pool: pool) }   // still works after the trim
        #expect(busy.readableCount == 200)
        busy.release(to: pool)
        #expect(pool.chunksOutstanding == 0)
    }
}
