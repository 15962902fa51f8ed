import Glibc
import Primitives

/// What bounds a room's history (see `history_*` in docs/README config table).
struct HistoryLimits: Sendable {
    /// Entries kept once every reactor has read them (0: none, offsets still count).
    var size = 100
    var ttlSeconds = 300
    var maxBytesPerRoom = 1 << 20
}

/// One stored message: when the message that made it was received (monotonic ns, for
/// latency; its second is the entry's age for the TTL), where its bytes start in the byte
/// ring (an index into the ring, rewritten when the ring is resized) and how long they are.
/// 16 bytes: the header is most of what history costs beyond the line itself.
struct LogEntry {
    var origin: UInt64
    var start: UInt32
    var length: UInt32

    /// Monotonic seconds when it was appended (the TTL's clock).
    var second: UInt32 { UInt32(truncatingIfNeeded: origin / 1_000_000_000) }
}

/// Entries copied out of a log under its lock, delivered after it: their bytes back to back
/// and their headers (`start` rebased to the copy). Manual storage that keeps its capacity: a
/// Swift array and a ByteBuffer passed `inout` from reactor properties into the lock's closure
/// were regrown on every replay (measured: 15 mallocs per 100 lines replayed, now 0).
final class LogCopy {
    private(set) var count = 0
    private var capacity = 64
    /// Each entry with its sender tag (cluster mode, see RoomLog.senders; 0: nobody to
    /// exclude), in one buffer so growing it is one allocation.
    private var items = UnsafeMutablePointer<(entry: LogEntry, sender: UInt64)>.allocate(capacity: 64)
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
    func append(_ e: LogEntry, sender: UInt64 = 0) {
        if count == capacity {
            let bigger = UnsafeMutablePointer<(entry: LogEntry, sender: UInt64)>.allocate(capacity: capacity * 2)
            bigger.update(from: items, count: count)
            items.deallocate()
            items = bigger
            capacity *= 2
        }
        var e = e
        e.start = UInt32(byteCount)
        items[count] = (e, sender)
        count += 1
    }

    /// Entry `i`'s sender tag (ClusterSender), 0 when none.
    func sender(_ i: Int) -> UInt64 { items[i].sender }

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

    subscript(i: Int) -> LogEntry { items[i].entry }

    /// Entry `i`'s line.
    func line(_ i: Int) -> UnsafeRawBufferPointer {
        let e = items[i].entry
        return UnsafeRawBufferPointer(start: bytes + Int(e.start), count: Int(e.length))
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
/// pieces). The byte ring is sized for what the history holds, not a power of two (byte
/// position P is at P % capacity): a power of two can leave up to half the ring unused.
/// Reactor i's cursor (the last offset it delivered, -1 when it has no members) is
/// published here so eviction never drops an entry a reactor has yet to deliver.
final class RoomLog: @unchecked Sendable {
    /// Random, made with the log: a client's offsets are only comparable within one epoch.
    /// 12 hex digits (48 bits): a Swift small string, so reading it back from a join is no
    /// allocation.
    /// Changes only in cluster mode (the cluster's epoch for the room, under the lock; read it
    /// under the lock too).
    private(set) var epoch: String
    /// Bumped when the log restarts its offsets (an epoch change in cluster mode): a reactor
    /// whose LocalRoom saw another value delivers from `first` (its cursor is from before).
    private(set) var generation = 0
    /// After a restart: the offset a reactor of an older generation resumes after (the
    /// restart point, or `last` when the entries were history for the node, not news).
    private(set) var resumeAfter = 0
    /// Cluster mode only (nil otherwise, so a single node pays nothing): per entry, the
    /// ClusterSender tag of the connection that sent it, so its reactor can leave it out of
    /// the delivery when it did not ask for echo. Indexed like `headers`.
    private var senders: UnsafeMutablePointer<UInt64>?
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
    /// Bounds on the first growth's jump (a big `history_size` grows the rest of the way as
    /// the room fills: headers by doubling, bytes by half).
    private static let maxPresizedHeaders = 1024
    private static let maxPresizedBytes = 1 << 17

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
        senders?.deallocate()
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

    /// Appends `prefix` + `,"offset":N}` as offset N = last + 1; returns N. `origin`: when
    /// the message was received (monotonic ns, also the entry's age). `keep`: the history
    /// size (`HistoryLimits.size`), what the rings are sized for when they grow.
    func appendLocked(_ prefix: UnsafeRawBufferPointer, origin: UInt64, keep: Int) -> Int {
        let n = last + 1
        var digits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)   // ,"offset":<up to 20 digits>}
        let suffixCount = withUnsafeMutableBytes(of: &digits) { Self.renderSuffix(n, into: $0) }
        let total = prefix.count + suffixCount
        ensureRoom(bytes: total, keep: keep)
        let start = UInt32(byteTail % byteCapacity)
        write(prefix)
        withUnsafeBytes(of: &digits) { write(UnsafeRawBufferPointer(rebasing: $0[0..<suffixCount])) }
        headers[n & (headerCapacity - 1)] = LogEntry(origin: origin, start: start, length: UInt32(total))
        last = n
        return n
    }

    // MARK: cluster mode (the link thread appends; offsets come from Redis)

    /// What happened to a line offered at an explicit offset.
    enum ClusterAppend { case appended, duplicate, gap }

    /// Appends `prefix` + `,"offset":N}` at offset `n` of `epoch` (the cluster's numbering).
    /// Another epoch restarts the log in that epoch (everything stored is dropped: offsets of
    /// two epochs are not comparable); an offset at or below `last` is a duplicate (dropped);
    /// one past `last + 1` is a gap the caller fills from the stream first, unless `force`
    /// (what could not be fetched is lost: the log restarts at `n`, so a `since` before it
    /// is answered recovered:false).
    func appendClusterLocked(epoch e: String, offset n: Int, _ prefix: UnsafeRawBufferPointer,
                             sender: UInt64, origin: UInt64, keep: Int, force: Bool) -> ClusterAppend {
        if e != epoch {
            restartLocked(epoch: e, after: n - 1)
        } else if n <= last {
            return .duplicate
        } else if n > last + 1 {
            if !force { return .gap }
            restartLocked(epoch: e, after: n - 1)
        }
        if senders == nil {
            let s = UnsafeMutablePointer<UInt64>.allocate(capacity: headerCapacity)
            s.initialize(repeating: 0, count: headerCapacity)
            senders = s
        }
        let got = appendLocked(prefix, origin: origin, keep: keep)
        senders![got & (headerCapacity - 1)] = sender
        return .appended
    }

    /// Drops every stored entry and continues after offset `after` in `epoch` (a new epoch,
    /// or a hole: entries no node can fetch any more). Attached reactors resume at the new
    /// head; a change of epoch bumps `generation` so they drop their old cursors.
    func restartLocked(epoch e: String, after: Int) {
        if e != epoch {
            epoch = e
            generation &+= 1
        }
        resumeAfter = after
        first = after + 1
        last = after
        byteHead = byteTail
        for r in 0..<reactorCount where cursors[r] >= 0 { cursors[r] = after }
    }

    /// The entries stored are history the room's attached reactors must not deliver as news
    /// (a room primed from Redis while members were already attached, e.g. they joined while
    /// Redis was down): they resume after offset `n` (at most `last`).
    func markDeliveredLocked(through n: Int) {
        resumeAfter = max(first - 1, min(n, last))
        for r in 0..<reactorCount where cursors[r] >= 0 { cursors[r] = resumeAfter }
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
            byteHead += Int(e.length)   // entries lie back to back from byteHead
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
            out.append(e, sender: senders?[n & (headerCapacity - 1)] ?? 0)
            let off = Int(e.start), count = Int(e.length)
            let firstPart = min(count, byteCapacity - off)
            out.appendBytes(bytes + off, firstPart)
            if firstPart < count { out.appendBytes(bytes, count - firstPart) }
        }
        return start
    }

    // MARK: storage

    private func write(_ src: UnsafeRawBufferPointer) {
        guard src.count > 0 else { return }
        let off = byteTail % byteCapacity
        let firstPart = min(src.count, byteCapacity - off)
        (bytes + off).copyMemory(from: src.baseAddress!, byteCount: firstPart)
        if firstPart < src.count {
            bytes.copyMemory(from: src.baseAddress! + firstPart, byteCount: src.count - firstPart)
        }
        byteTail += src.count
    }

    /// Grows the rings so one more entry of `bytes` fits: rare, when the history or a lagging
    /// reactor needs more than the room had. The first growth goes straight to what `keep`
    /// entries of the lines seen so far need (one over: an entry is appended before the oldest
    /// is evicted, plus 1/32 for longer lines later), so a room that fills its history grows
    /// once; past that (a lagging reactor, longer lines) by half.
    private func ensureRoom(bytes need: Int, keep: Int) {
        if storedCount + 1 > headerCapacity {
            var cap = headerCapacity * 2
            while cap < storedCount + 1 || cap < keep + 1 && cap < Self.maxPresizedHeaders { cap *= 2 }
            remapHeaders(cap)
        }
        if storedBytes + need > byteCapacity {
            let wanted = (storedBytes + need) * (keep + 1) / (storedCount + 1) * 33 / 32
            var cap = max(byteCapacity + byteCapacity / 2, min(wanted, Self.maxPresizedBytes))
            cap = max(cap, storedBytes + need)
            resizeBytes((cap + 63) & ~63)
        }
    }

    /// Moves the stored bytes into a ring of `cap` bytes (positions keep their values, the
    /// entries' ring indexes are rewritten).
    private func resizeBytes(_ cap: Int) {
        let b = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 16)
        var pos = byteHead
        while pos < byteTail {
            let off = pos % byteCapacity, to = pos % cap
            let run = min(byteTail - pos, byteCapacity - off, cap - to)
            (b + to).copyMemory(from: bytes + off, byteCount: run)
            pos += run
        }
        bytes.deallocate()
        bytes = b
        byteCapacity = cap
        pos = byteHead
        if first <= last {
            for n in first...last {
                headers[n & (headerCapacity - 1)].start = UInt32(pos % cap)
                pos += Int(headers[n & (headerCapacity - 1)].length)
            }
        }
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
            remapHeaders(hcap)
        }
    }

    /// Moves the headers (and senders) into rings of `cap` entries.
    private func remapHeaders(_ cap: Int) {
        let h = UnsafeMutablePointer<LogEntry>.allocate(capacity: cap)
        if first <= last { for n in first...last { h[n & (cap - 1)] = headers[n & (headerCapacity - 1)] } }
        headers.deallocate()
        headers = h
        if let old = senders {
            let s = UnsafeMutablePointer<UInt64>.allocate(capacity: cap)
            if first <= last { for n in first...last { s[n & (cap - 1)] = old[n & (headerCapacity - 1)] } }
            old.deallocate()
            senders = s
        }
        headerCapacity = cap
    }

    /// Ring capacity in bytes (headers and lines), for the memory bench row.
    var capacityBytes: Int { withLock { byteCapacity + headerCapacity * Self.entryOverhead } }
}
