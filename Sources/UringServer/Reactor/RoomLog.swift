import Glibc
import Primitives

/// What bounds a room's history (see `history_*` in docs/README config table).
struct HistoryLimits: Sendable {
    /// Entries kept once every reactor has read them (0: none, offsets still count).
    var size = 100
    var ttlSeconds = 300
    var maxBytesPerRoom = 1 << 20
}

/// One stored message: where its bytes start in the byte ring (a monotonic position), how
/// long they are, when it was appended (monotonic seconds, for the TTL) and when the message
/// that made it was received (monotonic ns, for latency). 24 bytes.
struct LogEntry {
    var start: Int
    var origin: UInt64
    var length: UInt32
    var second: UInt32
}

/// Entries copied out of a log under its lock, delivered after it: their bytes back to back
/// and their headers (`start` rebased to the copy). Manual storage that keeps its capacity: a
/// Swift array and a ByteBuffer passed `inout` from reactor properties into the lock's closure
/// were regrown on every replay (measured: 15 mallocs per 100 lines replayed, now 0).
final class LogCopy {
    private(set) var count = 0
    private var capacity = 64
    private var items = UnsafeMutablePointer<LogEntry>.allocate(capacity: 64)
    private(set) var byteCount = 0
    private var byteCapacity = 4096
    private(set) var bytes = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 16)

    deinit {
        items.deallocate()
        bytes.deallocate()
    }

    var isEmpty: Bool { count == 0 }
    func removeAll() { count = 0; byteCount = 0 }

    /// Starts entry `e` (its bytes follow through `appendBytes`).
    func append(_ e: LogEntry) {
        if count == capacity {
            let bigger = UnsafeMutablePointer<LogEntry>.allocate(capacity: capacity * 2)
            bigger.update(from: items, count: count)
            items.deallocate()
            items = bigger
            capacity *= 2
        }
        var e = e
        e.start = byteCount
        items[count] = e
        count += 1
    }

    func appendBytes(_ p: UnsafeRawPointer, _ n: Int) {
        if byteCount + n > byteCapacity {
            var cap = byteCapacity * 2
            while cap < byteCount + n { cap *= 2 }
            let bigger = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 16)
            bigger.copyMemory(from: bytes, byteCount: byteCount)
            bytes.deallocate()
            bytes = bigger
            byteCapacity = cap
        }
        (bytes + byteCount).copyMemory(from: p, byteCount: n)
        byteCount += n
    }

    subscript(i: Int) -> LogEntry { items[i] }

    /// Entry `i`'s line.
    func line(_ i: Int) -> UnsafeRawBufferPointer {
        let e = items[i]
        return UnsafeRawBufferPointer(start: bytes + e.start, count: Int(e.length))
    }
}

/// A room's log: every chat line accepted into the room, in offset order, as the rendered
/// bytes members receive. It is what gives a room one order across reactors (every reactor
/// delivers from it in offset order, see FanOut.swift `publish`) and it is the room's history.
///
/// Shared by the reactors with members in the room, so it is guarded by a pthread mutex (TSan
/// sees it; see Runtime/Lock.swift). A room on one reactor takes it uncontended: one lock and
/// unlock per message (measured in docs/performance.md). Nothing here allocates in steady
/// state: the rings grow when a lagging reactor or a bigger history needs it, and shrink back
/// when the room is idle (`sweep`).
///
/// Layout: a ring of `LogEntry` headers (entry for offset N at N & headerMask) and a byte ring
/// holding the lines back to back (an entry may wrap around the end; it is copied out in two
/// pieces). Reactor i's cursor (the last offset it delivered, -1 when it has no members) is
/// published here so eviction never drops an entry a reactor has yet to deliver.
final class RoomLog: @unchecked Sendable {
    /// Random, made with the log: a client's offsets are only comparable within one epoch.
    /// 12 hex digits (48 bits): a Swift small string, so reading it back from a join is no
    /// allocation.
    let epoch: String
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var headers: UnsafeMutablePointer<LogEntry>
    private var headerCapacity: Int
    private var bytes: UnsafeMutableRawPointer
    private var byteCapacity: Int
    /// Offsets first...last are stored (first == last + 1: none).
    private(set) var first = 1
    private(set) var last = 0
    private var byteHead = 0
    private var byteTail = 0
    private let cursors: UnsafeMutablePointer<Int>
    private let reactorCount: Int
    static let entryOverhead = MemoryLayout<LogEntry>.stride
    private static let initialHeaders = 16
    private static let initialBytes = 2048

    init(reactorCount: Int) {
        var rng = SystemRandomNumberGenerator()
        let r = (rng.next() as UInt64) & 0xFFFF_FFFF_FFFF
        let hex = String(r, radix: 16)
        epoch = String(repeating: "0", count: 12 - hex.count) + hex
        self.reactorCount = reactorCount
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        headerCapacity = Self.initialHeaders
        headers = .allocate(capacity: headerCapacity)
        byteCapacity = Self.initialBytes
        bytes = .allocate(byteCount: byteCapacity, alignment: 16)
        cursors = .allocate(capacity: reactorCount)
        cursors.initialize(repeating: -1, count: reactorCount)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        headers.deallocate()
        bytes.deallocate()
        cursors.deallocate()
    }

    @inline(__always)
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    var storedCount: Int { last - first + 1 }
    private var storedBytes: Int { byteTail - byteHead }
    /// What history costs: line bytes plus one header per entry.
    var accountedBytes: Int { storedBytes + storedCount * Self.entryOverhead }

    // MARK: under the lock (callers hold it)

    /// Reactor `r` has members from now on: it delivers everything after the current tail.
    func attachLocked(_ r: Int) -> Int {
        if cursors[r] < 0 { cursors[r] = last }
        return cursors[r]
    }

    /// Reactor `r` has no members any more: its cursor no longer holds entries back.
    func detachLocked(_ r: Int) { cursors[r] = -1 }

    func setCursorLocked(_ r: Int, _ offset: Int) { cursors[r] = offset }

    /// Appends `prefix` + `,"offset":N}` as offset N = last + 1; returns N.
    func appendLocked(_ prefix: UnsafeRawBufferPointer, origin: UInt64, second: UInt32) -> Int {
        let n = last + 1
        var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)   // ,"offset":<up to 20 digits>}
        let suffixCount = withUnsafeMutableBytes(of: &digits) { Self.renderSuffix(n, into: $0) }
        let total = prefix.count + suffixCount
        ensureRoom(bytes: total)
        let start = byteTail
        write(prefix)
        withUnsafeBytes(of: &digits) { write(UnsafeRawBufferPointer(rebasing: $0[0..<suffixCount])) }
        headers[n & (headerCapacity - 1)] = LogEntry(start: start, origin: origin, length: UInt32(total), second: second)
        last = n
        return n
    }

    /// `,"offset":N}` into `out` (32 bytes); returns its length.
    static func renderSuffix(_ n: Int, into out: UnsafeMutableRawBufferPointer) -> Int {
        let head: StaticString = ",\"offset\":"
        let h = head.utf8CodeUnitCount
        out.baseAddress!.copyMemory(from: head.utf8Start, byteCount: h)
        var v = UInt64(n), k = 0
        var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &tmp) { t in
            repeat { t[k] = UInt8(48 + v % 10); v /= 10; k += 1 } while v > 0
            for i in 0..<k { out[h + i] = t[k - 1 - i] }
        }
        out[h + k] = UInt8(ascii: "}")
        return h + k + 1
    }

    /// Drops the oldest entries past the limits that every attached reactor has delivered.
    /// Returns (entries evicted, of which early: by bytes while under `size` and `ttl`, bytes freed).
    func evictLocked(_ limits: HistoryLimits, nowSecond: UInt32, overBudget: Bool) -> (Int, Int, Int) {
        var keepFrom = Int.max   // the lowest offset some reactor still has to deliver
        for r in 0..<reactorCount where cursors[r] >= 0 { keepFrom = min(keepFrom, cursors[r] + 1) }
        let before = accountedBytes
        var evicted = 0, early = 0
        let ttl = UInt32(clamping: limits.ttlSeconds)
        while first <= last && first < keepFrom {
            let e = headers[first & (headerCapacity - 1)]
            let bySize = storedCount > limits.size
            // Another thread may have stamped a later second than this turn's clock read.
            let byAge = nowSecond > e.second && nowSecond - e.second >= ttl
            let byBytes = accountedBytes > limits.maxBytesPerRoom || overBudget
            if !(bySize || byAge || byBytes) { break }
            if !bySize && !byAge { early += 1 }
            byteHead = e.start + Int(e.length)
            first += 1
            evicted += 1
        }
        if first > last { byteHead = byteTail }
        return (evicted, early, before - accountedBytes)
    }

    /// Copies entries `from`...`through` (those still stored) into `out`. Returns the first
    /// offset copied.
    func copyLocked(from: Int, through: Int, into out: LogCopy) -> Int {
        let start = max(from, first)
        let end = min(through, last)
        if start > end { return start }
        for n in start...end {
            let e = headers[n & (headerCapacity - 1)]
            out.append(e)
            let off = e.start & (byteCapacity - 1), count = Int(e.length)
            let firstPart = min(count, byteCapacity - off)
            out.appendBytes(bytes + off, firstPart)
            if firstPart < count { out.appendBytes(bytes, count - firstPart) }
        }
        return start
    }

    // MARK: storage

    private func write(_ src: UnsafeRawBufferPointer) {
        guard src.count > 0 else { return }
        let off = byteTail & (byteCapacity - 1)
        let firstPart = min(src.count, byteCapacity - off)
        (bytes + off).copyMemory(from: src.baseAddress!, byteCount: firstPart)
        if firstPart < src.count {
            bytes.copyMemory(from: src.baseAddress! + firstPart, byteCount: src.count - firstPart)
        }
        byteTail += src.count
    }

    /// Grows the rings (power-of-two sizes) so one more entry of `bytes` fits: rare, when the
    /// history or a lagging reactor needs more than the room had.
    private func ensureRoom(bytes need: Int) {
        if storedCount + 1 > headerCapacity {
            var cap = headerCapacity * 2
            while cap < storedCount + 1 { cap *= 2 }
            let h = UnsafeMutablePointer<LogEntry>.allocate(capacity: cap)
            if first <= last { for n in first...last { h[n & (cap - 1)] = headers[n & (headerCapacity - 1)] } }
            headers.deallocate()
            headers = h
            headerCapacity = cap
        }
        if storedBytes + need > byteCapacity {
            var cap = byteCapacity * 2
            while cap < storedBytes + need { cap *= 2 }
            resizeBytes(cap)
        }
    }

    /// Moves the stored bytes into a ring of `cap` bytes (positions keep their values).
    private func resizeBytes(_ cap: Int) {
        let b = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 16)
        var pos = byteHead
        while pos < byteTail {
            let off = pos & (byteCapacity - 1)
            let run = min(byteTail - pos, byteCapacity - off, cap - (pos & (cap - 1)))
            (b + (pos & (cap - 1))).copyMemory(from: bytes + off, byteCount: run)
            pos += run
        }
        bytes.deallocate()
        bytes = b
        byteCapacity = cap
    }

    /// Idle: gives back ring space far beyond what is stored (the grown capacity of a burst or
    /// a lagging reactor).
    func shrinkLocked() {
        var cap = byteCapacity
        while cap > Self.initialBytes && storedBytes * 4 < cap { cap /= 2 }
        if cap < byteCapacity { resizeBytes(cap) }
        var hcap = headerCapacity
        while hcap > Self.initialHeaders && storedCount * 4 < hcap { hcap /= 2 }
        if hcap < headerCapacity {
            let h = UnsafeMutablePointer<LogEntry>.allocate(capacity: hcap)
            if first <= last { for n in first...last { h[n & (hcap - 1)] = headers[n & (headerCapacity - 1)] } }
            headers.deallocate()
            headers = h
            headerCapacity = hcap
        }
    }

    /// Ring capacity in bytes (headers and lines), for the memory bench row.
    var capacityBytes: Int { withLock { byteCapacity + headerCapacity * Self.entryOverhead } }
}
