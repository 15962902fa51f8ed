import CNuma
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// NUMA facts and thread placement, read once per process.
public enum NUMA {
    /// `numa_available() >= 0`: libnuma's policy calls work here (they may not in a container
    /// whose seccomp profile blocks get_mempolicy/mbind).
    public static let isAvailable: Bool = cnuma_available() >= 0

    /// Number of configured memory nodes (1 when NUMA is unavailable).
    public static var nodeCount: Int {
        isAvailable ? max(1, Int(cnuma_configured_nodes())) : 1
    }

    /// CPU the calling thread runs on right now (sched_getcpu), or -1.
    public static var currentCPU: Int { Int(cnuma_current_cpu()) }

    /// Node of `cpu`; 0 when NUMA is unavailable or the CPU is unknown.
    public static func node(ofCPU cpu: Int) -> Int {
        guard isAvailable, cpu >= 0 else { return 0 }
        warmUp()
        let n = cnuma_node_of_cpu(Int32(cpu))
        return n < 0 ? 0 : Int(n)
    }

    /// Node of the CPU the calling thread runs on right now.
    public static var currentNode: Int { node(ofCPU: currentCPU) }

    /// Fills libnuma's per-node CPU-mask cache from one thread. libnuma fills it lazily and
    /// without a lock: reactors asking for their node at the same moment both allocate it, and
    /// one allocation leaks (LeakSanitizer saw 8 KB from `numa_node_to_cpus`). `node(ofCPU:)`
    /// calls it first, so no caller needs to. Runs once per process (a static initializer:
    /// Swift runs it exactly once even when threads race to it).
    public static func warmUp() { _ = cacheFilled }

    private static let cacheFilled: Bool = {
        guard isAvailable else { return false }
        let cpus = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_CONF))))
        for cpu in 0..<cpus { _ = cnuma_node_of_cpu(Int32(cpu)) }
        return true
    }()

    /// Restricts the calling thread to the single CPU `cpu` (sched_setaffinity).
    /// Returns 0 or a negative errno (EINVAL for a CPU that does not exist or is not allowed).
    @discardableResult
    public static func pinCurrentThread(toCPU cpu: Int) -> Int32 {
        cnuma_pin_current_thread(Int32(truncatingIfNeeded: cpu))
    }
}

/// Pins the calling thread to `cpu`; true on success. See ``NUMA/pinCurrentThread(toCPU:)``.
@discardableResult
public func pinCurrentThread(toCPU cpu: Int) -> Bool {
    NUMA.pinCurrentThread(toCPU: cpu) == 0
}

/// A chunk handed out by a ``BufferPool``: `capacity` writable bytes at `base`.
///
/// A plain value: the pool does not track which chunks are out, so a chunk must be given back
/// exactly once, to the pool that made it, and not used afterwards.
public struct PooledChunk {
    public let base: UnsafeMutableRawPointer
    /// Usable bytes: the size class (a power of two), at least the capacity asked for.
    public let capacity: Int
    /// Index into the pool's size classes, or -1 for an oversize chunk allocated on its own.
    @usableFromInline let sizeClass: Int

    @inlinable init(base: UnsafeMutableRawPointer, capacity: Int, sizeClass: Int) {
        self.base = base
        self.capacity = capacity
        self.sizeClass = sizeClass
    }

    @inlinable public var bytes: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base, count: capacity)
    }
}

/// A pool of fixed-size chunks for ONE reactor thread, carved from slabs allocated on that
/// reactor's NUMA node.
///
/// Not thread-safe by design: each reactor owns one and is the only thread that calls it (no
/// locks, no atomics). Size classes are the powers of two from 256 B to 256 KiB (a turn's room
/// batch, shared by reference, goes past 128 KiB at 4 KiB fan-out, and a one-off allocation is
/// an mmap + mbind + munmap); a larger request is served by a one-off allocation and freed on
/// `give`.
///
/// Free chunks form an intrusive singly linked list per class (the link lives in the chunk's
/// first 8 bytes), so `take`/`give` on a warm pool only move a pointer: no malloc, no syscall.
/// Memory comes from `numa_alloc_onnode` on `node` when `numa_available() >= 0`, else from an
/// ordinary page-aligned allocation. Slabs are only released when the pool is deinitialised.
public final class BufferPool {
    public static let minChunkSize = 256
    public static let maxChunkSize = 256 * 1024
    /// 256, 512, …, 262144.
    public static let sizeClassCount = 11
    @usableFromInline static let minShift = 8

    /// Where the slabs come from.
    public enum Source: Equatable, Sendable {
        case numa(node: Int)
        case malloc
    }

    public let source: Source
    /// Target slab size: each refill of a class carves max(1, slabBytes / chunkSize) chunks.
    public let slabBytes: Int

    /// Free-list heads, one per size class (nil: empty).
    @usableFromInline var freeHeads: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Chunks currently handed out, per class.
    @usableFromInline var outstandingPerClass: UnsafeMutablePointer<Int>
    @usableFromInline var oversizeOutstanding = 0
    @usableFromInline var oversizeBytesOutstanding = 0
    /// Every slab, for deinit (appended only when a class refills: never in steady state).
    private var slabs: [(base: UnsafeMutableRawPointer, bytes: Int, sizeClass: Int)] = []
    private var slabBytesTotal = 0

    /// A pool whose slabs live on `node`. `node` defaults to the node of the CPU the calling
    /// thread runs on now, so create the pool on the reactor thread, after pinning it.
    /// With NUMA unavailable (or a node out of range) the pool uses ordinary allocations.
    public init(node: Int = NUMA.currentNode, slabBytes: Int = 256 * 1024) {
        if NUMA.isAvailable, node >= 0, node <= Int(cnuma_max_node()) {
            source = .numa(node: node)
        } else {
            source = .malloc
        }
        self.slabBytes = max(slabBytes, Self.maxChunkSize)
        freeHeads = .allocate(capacity: Self.sizeClassCount)
        freeHeads.initialize(repeating: nil, count: Self.sizeClassCount)
        outstandingPerClass = .allocate(capacity: Self.sizeClassCount)
        outstandingPerClass.initialize(repeating: 0, count: Self.sizeClassCount)
    }

    deinit {
        for s in slabs { Self.release(s.base, bytes: s.bytes, source: source) }
        freeHeads.deallocate()
        outstandingPerClass.deallocate()
    }

    /// One log line for start-up: "numa: 1 node, pool on node 0" or
    /// "numa: unavailable, using malloc". `node` defaults to the calling thread's node.
    public static func describeNUMA(node: Int = NUMA.currentNode) -> String {
        guard NUMA.isAvailable else { return "numa: unavailable, using malloc" }
        let n = NUMA.nodeCount
        return "numa: \(n) node\(n == 1 ? "" : "s"), pool on node \(node)"
    }

    // MARK: take / give

    /// Size class index for `capacity` (0 for <= 256 B), or -1 when above 256 KiB.
    @inlinable @inline(__always)
    public static func sizeClass(for capacity: Int) -> Int {
        if capacity <= minChunkSize { return 0 }
        if capacity > maxChunkSize { return -1 }
        // ceil(log2(capacity)) - 8
        return (Int.bitWidth &- (capacity &- 1).leadingZeroBitCount) &- minShift
    }

    /// A chunk of at least `capacity` bytes (rounded up to the size class). Contents are
    /// undefined. Allocates only when the class's free list is empty (a refill carves a slab).
    @inlinable
    public func take(capacity: Int) -> PooledChunk {
        let c = Self.sizeClass(for: capacity)
        if c < 0 { return takeOversize(capacity) }
        let head: UnsafeMutableRawPointer
        if let h = freeHeads[c] {
            head = h
        } else {
            head = refill(c)
        }
        freeHeads[c] = head.load(as: UnsafeMutableRawPointer?.self)
        outstandingPerClass[c] &+= 1
        return PooledChunk(base: head, capacity: Self.minChunkSize &<< c, sizeClass: c)
    }

    /// Hands `chunk` back. It must come from this pool and not be given twice.
    @inlinable
    public func give(_ chunk: PooledChunk) {
        let c = chunk.sizeClass
        if c < 0 { return giveOversize(chunk) }
        precondition(c < Self.sizeClassCount && outstandingPerClass[c] > 0,
                     "BufferPool.give: chunk not from this pool or given twice")
        chunk.base.storeBytes(of: freeHeads[c], as: UnsafeMutableRawPointer?.self)
        freeHeads[c] = chunk.base
        outstandingPerClass[c] &-= 1
    }

    /// Makes sure `count` chunks of `capacity`'s class are free, so that many `take`s in a row
    /// do not allocate (warm-up). Oversize capacities are ignored.
    public func reserve(capacity: Int, count: Int) {
        let c = Self.sizeClass(for: capacity)
        guard c >= 0 else { return }
        while freeCount(sizeClass: c) < count {
            let h = refill(c)
            h.storeBytes(of: freeHeads[c], as: UnsafeMutableRawPointer?.self)
            freeHeads[c] = h
        }
    }

    /// Gives the slabs of every size class with no chunk outstanding back to the system and
    /// returns the bytes released. Call it when traffic stops (a burst's buffers would otherwise
    /// stay resident for good); a class still in use keeps its slabs, so a busy reactor never
    /// refills because of a trim.
    @discardableResult
    public func trim() -> Int {
        var released = 0
        var i = 0
        while i < slabs.count {
            let s = slabs[i]
            if outstandingPerClass[s.sizeClass] == 0 {
                Self.release(s.base, bytes: s.bytes, source: source)
                released += s.bytes
                slabs.swapAt(i, slabs.count - 1)
                slabs.removeLast()
            } else {
                i += 1
            }
        }
        if released > 0 {
            slabBytesTotal -= released
            for c in 0..<Self.sizeClassCount where outstandingPerClass[c] == 0 { freeHeads[c] = nil }
        }
        return released
    }

    // MARK: stats

    /// Chunks taken and not yet given back (all classes, oversize included).
    public var chunksOutstanding: Int {
        var n = oversizeOutstanding
        for c in 0..<Self.sizeClassCount { n += outstandingPerClass[c] }
        return n
    }

    /// Bytes of the chunks taken and not yet given back (by class size).
    public var bytesOutstanding: Int {
        var n = oversizeBytesOutstanding
        for c in 0..<Self.sizeClassCount { n += outstandingPerClass[c] * (Self.minChunkSize << c) }
        return n
    }

    /// Bytes the pool holds from the system: all slabs plus outstanding oversize chunks.
    public var bytesHeld: Int { slabBytesTotal + oversizeBytesOutstanding }

    /// Number of slabs allocated so far.
    public var slabCount: Int { slabs.count }

    /// Free chunks in class `sizeClass` (walks the list: for tests and stats, not hot paths).
    public func freeCount(sizeClass c: Int) -> Int {
        var n = 0
        var p = freeHeads[c]
        while let q = p {
            n += 1
            p = q.load(as: UnsafeMutableRawPointer?.self)
        }
        return n
    }

    // MARK: slow paths

    /// Carves a new slab for class `c`, links all but the first chunk into the free list and
    /// returns the first chunk (whose link is set to the old head, as a popped head would be).
    @usableFromInline
    func refill(_ c: Int) -> UnsafeMutableRawPointer {
        let size = Self.minChunkSize << c
        let count = max(1, slabBytes / size)
        let bytes = count * size
        let slab = Self.obtain(bytes: bytes, source: source)
        slabs.append((slab, bytes, c))
        slabBytesTotal += bytes
        // Link back to front so chunks are handed out in address order.
        var next = freeHeads[c]
        var i = count - 1
        while i >= 0 {
            let p = slab + i * size
            p.storeBytes(of: next, as: UnsafeMutableRawPointer?.self)
            next = p
            i -= 1
        }
        return slab
    }

    @usableFromInline
    func takeOversize(_ capacity: Int) -> PooledChunk {
        // Page-rounded so numa_alloc_onnode and munmap-backed frees agree on the size.
        let bytes = (capacity + 4095) & ~4095
        let p = Self.obtain(bytes: bytes, source: source)
        oversizeOutstanding += 1
        oversizeBytesOutstanding += bytes
        return PooledChunk(base: p, capacity: bytes, sizeClass: -1)
    }

    @usableFromInline
    func giveOversize(_ chunk: PooledChunk) {
        precondition(oversizeOutstanding > 0, "BufferPool.give: oversize chunk not from this pool")
        Self.release(chunk.base, bytes: chunk.capacity, source: source)
        oversizeOutstanding -= 1
        oversizeBytesOutstanding -= chunk.capacity
    }

    private static func obtain(bytes: Int, source: Source) -> UnsafeMutableRawPointer {
        switch source {
        case .numa(let node):
            if let p = cnuma_alloc_onnode(bytes, Int32(node)) { return p }
            fatalError("BufferPool: numa_alloc_onnode(\(bytes), \(node)) failed")
        case .malloc:
            return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 4096)
        }
    }

    private static func release(_ p: UnsafeMutableRawPointer, bytes: Int, source: Source) {
        switch source {
        case .numa: cnuma_free(p, bytes)
        case .malloc: p.deallocate()
        }
    }
}
