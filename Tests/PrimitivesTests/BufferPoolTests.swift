import Testing
import Primitives
import Synchronization

@Suite struct BufferPoolTests {
    @Test func sizeClasses() {
        #expect(BufferPool.sizeClass(for: 0) == 0)
        #expect(BufferPool.sizeClass(for: 1) == 0)
        #expect(BufferPool.sizeClass(for: 256) == 0)
        #expect(BufferPool.sizeClass(for: 257) == 1)
        #expect(BufferPool.sizeClass(for: 512) == 1)
        #expect(BufferPool.sizeClass(for: 513) == 2)
        #expect(BufferPool.sizeClass(for: 4096) == 4)
        #expect(BufferPool.sizeClass(for: 65_536) == 8)
        #expect(BufferPool.sizeClass(for: 65_537) == 9)
        #expect(BufferPool.sizeClass(for: 262_144) == 10)
        #expect(BufferPool.sizeClass(for: 262_145) == -1)
    }

    @Test func takeRoundsUpAndChunksAreDisjointAndWritable() {
        let pool = BufferPool()
        var chunks: [PooledChunk] = []
        for (i, cap) in [1, 100, 256, 300, 1000, 5000, 40_000, 65_536].enumerated() {
            let c = pool.take(capacity: cap)
            #expect(c.capacity >= cap)
            #expect(c.capacity == BufferPool.minChunkSize << BufferPool.sizeClass(for: cap))
            // Fill the whole chunk with a per-chunk byte.
            c.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(i + 1))
            chunks.append(c)
        }
        // More of one class than a slab's worth, to cross slab boundaries.
        for i in 0..<1500 {
            let c = pool.take(capacity: 256)
            c.bytes.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: 9 + i))
            chunks.append(c)
        }
        // No overlap: every chunk still holds its own byte everywhere.
        for (i, c) in chunks.enumerated() {
            let expected: UInt8 = i < 8 ? UInt8(i + 1) : UInt8(truncatingIfNeeded: 9 + (i - 8))
            #expect(c.bytes.allSatisfy { $0 == expected })
        }
        #expect(pool.chunksOutstanding == chunks.count)
        let bytes = chunks.reduce(0) { $0 + $1.capacity }
        #expect(pool.bytesOutstanding == bytes)
        #expect(pool.bytesHeld >= bytes)
        for c in chunks { pool.give(c) }
        #expect(pool.chunksOutstanding == 0)
        #expect(pool.bytesOutstanding == 0)
    }

    @Test func giveThenTakeReusesTheChunk() {
        let pool = BufferPool()
        let a = pool.take(capacity: 2048)
        pool.give(a)
        let b = pool.take(capacity: 1500) // same class (2 KiB)
        #expect(a.base == b.base)
        pool.give(b)
    }

    @Test func steadyStateDoesNotGrow() {
        let pool = BufferPool(slabBytes: 64 * 1024)
        let sizes = [200, 700, 3000, 16_000, 65_000]
        // Warm-up: at most 8 of each class out at once.
        for s in sizes { pool.reserve(capacity: s, count: 8) }
        for s in sizes { #expect(pool.freeCount(sizeClass: BufferPool.sizeClass(for: s)) >= 8) }
        let slabs = pool.slabCount
        let held = pool.bytesHeld
        var live: [PooledChunk] = []
        live.reserveCapacity(8 * sizes.count)
        for round in 0..<20_000 {
            for s in sizes { live.append(pool.take(capacity: s)) }
            if live.count >= 8 * sizes.count || round % 3 == 0 {
                for c in live { pool.give(c) }
                live.removeAll(keepingCapacity: true)
            }
        }
        for c in live { pool.give(c) }
        #expect(pool.slabCount == slabs)
        #expect(pool.bytesHeld == held)
        #expect(pool.chunksOutstanding == 0)
    }

    @Test func oversizeChunksAreSeparateAllocations() {
        let pool = BufferPool()
        let held = pool.bytesHeld
        let c = pool.take(capacity: 300_000)
        #expect(c.capacity >= 300_000)
        c.bytes.initializeMemory(as: UInt8.self, repeating: 7)
        #expect(pool.chunksOutstanding == 1)
        #expect(pool.bytesHeld == held + c.capacity)
        pool.give(c)
        #expect(pool.chunksOutstanding == 0)
        #expect(pool.bytesHeld == held)
    }

    @Test func sourceFollowsNUMAAvailability() {
        let pool = BufferPool(node: 0)
        if NUMA.isAvailable {
            #expect(pool.source == .numa(node: 0))
        } else {
            #expect(pool.source == .malloc)
        }
        // A node that does not exist falls back to plain allocation.
        #expect(BufferPool(node: 4096).source == .malloc)
        #expect(BufferPool(node: -1).source == .malloc)
        let c = BufferPool(node: -1).take(capacity: 10)
        _ = c // the pool is gone; nothing to check but that deinit did not crash
    }

    @Test func describeNUMA() {
        let line = BufferPool.describeNUMA(node: 0)
        if NUMA.isAvailable {
            #expect(line.hasPrefix("numa: \(NUMA.nodeCount) node"))
            #expect(line.hasSuffix("pool on node 0"))
        } else {
            #expect(line == "numa: unavailable, using malloc")
        }
        #expect(NUMA.nodeCount >= 1)
    }

    @Test func pinningAThread() {
        // On a separate thread: pinning the test runner's own threads would skew other tests.
        final class Result: Sendable {
            let pinned = Atomic<Int>(-1)
            let cpuAfter = Atomic<Int>(-2)
            let bogus = Atomic<Int>(0)
        }
        let r = Result()
        runOnThreads(1) { _ in
            r.pinned.store(pinCurrentThread(toCPU: 0) ? 1 : 0, ordering: .relaxed)
            r.cpuAfter.store(NUMA.currentCPU, ordering: .relaxed)
            r.bogus.store(Int(NUMA.pinCurrentThread(toCPU: 1 << 20)), ordering: .relaxed)
        }
        #expect(r.pinned.load(ordering: .relaxed) == 1)
        #expect(r.cpuAfter.load(ordering: .relaxed) == 0)
        #expect(r.bogus.load(ordering: .relaxed) < 0)
    }
}
