#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The API shared by ``StripedMap`` and ``SingleLockMap`` (so benchmarks and tests can run the
/// same code over both).
public protocol ConcurrentMap<Key, Value>: AnyObject {
    associatedtype Key: Hashable & Sendable
    associatedtype Value

    /// Calls `body` with the current value for `key` (nil when absent) under the lock.
    func withValue<R, E: Error>(forKey key: Key, _ body: (Value?) throws(E) -> R) throws(E) -> R
    /// Calls `body` with the slot for `key` under the lock: set it to insert or replace,
    /// set it to nil to remove. One lock round trip for a read-modify-write.
    func update<R, E: Error>(key: Key, _ body: (inout Value?) throws(E) -> R) throws(E) -> R
    @discardableResult func removeValue(forKey key: Key) -> Value?
    /// Number of entries (summed stripe by stripe: not an atomic snapshot under writers).
    var count: Int { get }
}

extension ConcurrentMap {
    /// The value for `key`, or nil.
    @inlinable public func value(forKey key: Key) -> Value? {
        withValue(forKey: key) { $0 }
    }

    /// Sets the value for `key`, returning the old one.
    @inlinable @discardableResult
    public func updateValue(_ value: Value, forKey key: Key) -> Value? {
        update(key: key) { slot in
            let old = slot
            slot = value
            return old
        }
    }
}

/// The dictionary inside each stripe.
@usableFromInline
struct LockedDictionary<Key: Hashable, Value> {
    @usableFromInline var dict: [Key: Value] = [:]
    @usableFromInline init() {}
}

/// A hash map split into a power-of-two number of stripes, each a pthread mutex around its own
/// `Dictionary`, so threads touching different keys rarely contend on one lock.
///
/// The stripes sit in one allocation at a 128-byte stride (two 64-byte lines: x86's adjacent-
/// line prefetcher pairs lines), so two stripes' locks never share a cache line: the mutex at
/// the start of its slot, the dictionary 64 bytes in. A key's stripe comes from the top bits of
/// a Fibonacci-mixed `hashValue`; the dictionaries hash with their own seeds, so keys of one
/// stripe still spread over that dictionary's buckets.
///
/// pthread mutexes rather than `Synchronization.Mutex`: on Linux the latter locks with atomics
/// and futex calls ThreadSanitizer does not see, so every access under it is reported as a race
/// (the server's sanitizer runs would drown in them); TSan intercepts pthread mutexes.
///
/// Closures passed to `withValue`/`update` run while the stripe is locked: keep them short and
/// never touch the same map from inside them (the mutex is not recursive).
public final class StripedMap<Key: Hashable & Sendable, Value>: ConcurrentMap {
    @usableFromInline static var stride: Int { 128 }
    @usableFromInline static var dictOffset: Int { 64 }

    @usableFromInline let base: UnsafeMutableRawPointer
    public let stripeCount: Int
    @usableFromInline let shift: Int

    /// `stripes` is rounded up to a power of two (at least 1).
    public init(stripes: Int = 16) {
        precondition(MemoryLayout<pthread_mutex_t>.size <= Self.dictOffset
                     && MemoryLayout<LockedDictionary<Key, Value>>.size <= Self.stride - Self.dictOffset)
        var n = 1
        while n < stripes { n <<= 1 }
        stripeCount = n
        shift = UInt64.bitWidth - n.trailingZeroBitCount
        base = .allocate(byteCount: n * Self.stride, alignment: 128)
        for i in 0..<n {
            let m = (base + i * Self.stride).bindMemory(to: pthread_mutex_t.self, capacity: 1)
            m.initialize(to: pthread_mutex_t())
            pthread_mutex_init(m, nil)
            (base + i * Self.stride + Self.dictOffset).bindMemory(to: LockedDictionary<Key, Value>.self, capacity: 1)
                .initialize(to: LockedDictionary())
        }
    }

    deinit {
        for i in 0..<stripeCount {
            pthread_mutex_destroy(mutex(i))
            _ = dictionary(i).deinitialize(count: 1)
        }
        base.deallocate()
    }

    @inlinable
    func stripeIndex(_ key: Key) -> Int {
        guard stripeCount > 1 else { return 0 }
        let h = UInt64(UInt(bitPattern: key.hashValue)) &* 0x9E37_79B9_7F4A_7C15
        return Int(truncatingIfNeeded: h &>> UInt64(shift))
    }

    @inlinable
    func mutex(_ i: Int) -> UnsafeMutablePointer<pthread_mutex_t> {
        (base + i &* Self.stride).assumingMemoryBound(to: pthread_mutex_t.self)
    }

    @inlinable
    func dictionary(_ i: Int) -> UnsafeMutablePointer<LockedDictionary<Key, Value>> {
        (base + i &* Self.stride + Self.dictOffset).assumingMemoryBound(to: LockedDictionary<Key, Value>.self)
    }

    @inlinable
    public func withValue<R, E: Error>(forKey key: Key, _ body: (Value?) throws(E) -> R) throws(E) -> R {
        try locked(stripeIndex(key)) { (d: inout LockedDictionary<Key, Value>) throws(E) -> R in
            try body(d.dict[key])
        }
    }

    @inlinable
    public func update<R, E: Error>(key: Key, _ body: (inout Value?) throws(E) -> R) throws(E) -> R {
        try locked(stripeIndex(key)) { (d: inout LockedDictionary<Key, Value>) throws(E) -> R in
            try body(&d.dict[key])
        }
    }

    @inlinable @discardableResult
    public func removeValue(forKey key: Key) -> Value? {
        locked(stripeIndex(key)) { (d: inout LockedDictionary<Key, Value>) -> Value? in
            d.dict.removeValue(forKey: key)
        }
    }

    public var count: Int {
        var n = 0
        for i in 0..<stripeCount {
            n += locked(i) { (d: inout LockedDictionary<Key, Value>) -> Int in d.dict.count }
        }
        return n
    }

    /// Removes every entry, stripe by stripe.
    public func removeAll() {
        for i in 0..<stripeCount {
            locked(i) { (d: inout LockedDictionary<Key, Value>) in d.dict = [:] }
        }
    }

    /// Calls `body` with every entry, one stripe locked at a time (not an atomic snapshot).
    public func forEach(_ body: (Key, Value) -> Void) {
        for i in 0..<stripeCount {
            locked(i) { (d: inout LockedDictionary<Key, Value>) in
                for (k, v) in d.dict { body(k, v) }
            }
        }
    }

    /// Entries per stripe (for checking the spread).
    public var stripeCounts: [Int] {
        (0..<stripeCount).map { i in
            locked(i) { (d: inout LockedDictionary<Key, Value>) -> Int in d.dict.count }
        }
    }

    /// Runs `body` with stripe `i`'s dictionary under its lock.
    @inlinable
    func locked<R, E: Error>(_ i: Int, _ body: (inout LockedDictionary<Key, Value>) throws(E) -> R) throws(E) -> R {
        let m = mutex(i)
        pthread_mutex_lock(m)
        defer { pthread_mutex_unlock(m) }
        return try body(&dictionary(i).pointee)
    }
}

extension StripedMap: @unchecked Sendable where Value: Sendable {}

/// One lock around one `Dictionary`, with ``StripedMap``'s API: the baseline it is benchmarked
/// against (a one-stripe map, so the lock type is the same and only the striping differs).
public final class SingleLockMap<Key: Hashable & Sendable, Value>: ConcurrentMap {
    @usableFromInline let map = StripedMap<Key, Value>(stripes: 1)

    public init() {}

    @inlinable
    public func withValue<R, E: Error>(forKey key: Key, _ body: (Value?) throws(E) -> R) throws(E) -> R {
        try map.withValue(forKey: key, body)
    }

    @inlinable
    public func update<R, E: Error>(key: Key, _ body: (inout Value?) throws(E) -> R) throws(E) -> R {
        try map.update(key: key, body)
    }

    @inlinable @discardableResult
    public func removeValue(forKey key: Key) -> Value? { map.removeValue(forKey: key) }

    public var count: Int { map.count }

    public func removeAll() { map.removeAll() }
}

extension SingleLockMap: @unchecked Sendable where Value: Sendable {}
