import Synchronization

/// A single-producer, single-consumer byte ring carrying room messages from one reactor to
/// another: the producer copies a rendered message in once (once per target reactor, never per
/// recipient), the consumer delivers it to its local members straight out of the ring. No
/// allocation, no lock; two atomics per batch (the indices), not per message or recipient.
///
/// Record: [u32 size][u32 body length][u64 room (retained Unmanaged)][u64 origin ns][body][pad]
/// A size with the top bit set is padding to the end of the storage (the next record wraps).
final class HandoffRing: @unchecked Sendable {
    let capacity: Int
    private let mask: Int
    private let storage: UnsafeMutableRawPointer
    /// Consumer position (monotonic byte count), written by the consumer.
    private let head = Atomic<Int>(0)
    /// Producer position, written by the producer.
    private let tail = Atomic<Int>(0)
    // Each side caches the other's index to touch the shared cache line less.
    private var cachedHead = 0
    private static let headerSize = 24
    private static let padFlag: UInt32 = 1 << 31

    init(capacity: Int) {
        precondition(capacity & (capacity - 1) == 0 && capacity >= 4096)
        self.capacity = capacity
        mask = capacity - 1
        storage = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit {
        // Release rooms of records never consumed (the consumer stopped first).
        _ = drain { _, _, _ in }
        storage.deallocate()
    }

    /// Largest body a record can carry; bigger messages take the overflow path.
    var maxBody: Int { capacity / 4 }

    /// Producer: appends one message; false when there is no room (the caller falls back).
    func tryWrite(room: SharedRoom, origin: UInt64, body: UnsafeRawBufferPointer) -> Bool {
        if body.count > maxBody { return false }
        let size = (Self.headerSize + body.count + 7) & ~7
        let t = tail.load(ordering: .relaxed)
        let offset = t & mask
        let toEnd = capacity - offset
        let needed = size <= toEnd ? size : toEnd + size
        if t + needed - cachedHead > capacity {
            cachedHead = head.load(ordering: .acquiring)
            if t + needed - cachedHead > capacity { return false }
        }
        var at = t
        if size > toEnd {
            storage.storeBytes(of: UInt32(toEnd) | Self.padFlag, toByteOffset: offset, as: UInt32.self)
            at += toEnd
        }
        let p = storage + (at & mask)
        p.storeBytes(of: UInt32(size), as: UInt32.self)
        p.storeBytes(of: UInt32(body.count), toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: UInt64(UInt(bitPattern: Unmanaged.passRetained(room).toOpaque())), toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: origin, toByteOffset: 16, as: UInt64.self)
        if body.count > 0 { (p + Self.headerSize).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        tail.store(at + size, ordering: .releasing)
        return true
    }

    /// Consumer: hands every message written so far to `body`, then frees their space.
    @discardableResult
    func drain(_ deliver: (SharedRoom, UInt64, UnsafeRawBufferPointer) -> Void) -> Int {
        let t = tail.load(ordering: .acquiring)
        var h = head.load(ordering: .relaxed)
        var n = 0
        while h < t {
            let p = storage + (h & mask)
            let size = p.load(as: UInt32.self)
            if size & Self.padFlag != 0 {
                h += Int(size & ~Self.padFlag)
                continue
            }
            let len = Int(p.load(fromByteOffset: 4, as: UInt32.self))
            let roomBits = p.load(fromByteOffset: 8, as: UInt64.self)
            let origin = p.load(fromByteOffset: 16, as: UInt64.self)
            let room = Unmanaged<SharedRoom>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(roomBits))!).takeRetainedValue()
            deliver(room, origin, UnsafeRawBufferPointer(start: p + Self.headerSize, count: len))
            h += Int(size)
            n += 1
        }
        head.store(h, ordering: .releasing)
        return n
    }
}
