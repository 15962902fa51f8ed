import Primitives
/// Why a datagram was dropped. Every bad input has a reason and a counter.
public enum DropReason: Int, CaseIterable, Sendable {
    case runt, malformed, oversized, unknownSender, badToken, wrongChannel, expired, revoked,
         channelFull, sendFailed, sendBacklog

    public var name: String {
        switch self {
        case .runt: "runt"
        case .malformed: "malformed"
        case .oversized: "oversized"
        case .unknownSender: "unknown_sender"
        case .badToken: "bad_token"
        case .wrongChannel: "wrong_channel"
        case .expired: "expired"
        case .revoked: "revoked"
        case .channelFull: "channel_full"
        case .sendFailed: "send_failed"
        case .sendBacklog: "send_backlog"
        }
    }
}

/// One thread's counters. The thread writes its own copy without synchronisation and
/// publishes it (element-wise, no allocation) under a lock every sweep (100 ms); /stats reads
/// the published copies.
struct RelayCounters {
    var packetsIn: UInt64 = 0
    var bytesIn: UInt64 = 0
    /// Copies sent (one per destination) and their bytes.
    var packetsOut: UInt64 = 0
    var bytesOut: UInt64 = 0
    var joins: UInt64 = 0
    var rebinds: UInt64 = 0
    var acks: UInt64 = 0
    var revocations: UInt64 = 0
    var idleUnbinds: UInt64 = 0
    var drops = [UInt64](repeating: 0, count: DropReason.allCases.count)
    /// Receive → send hand-off per forwarded packet, in `LatencyBuckets`.
    var latency = [UInt64](repeating: 0, count: LatencyBuckets.count)

    @inline(__always) mutating func drop(_ r: DropReason, _ n: UInt64 = 1) { drops[r.rawValue] &+= n }

    mutating func copy(from o: RelayCounters) {
        packetsIn = o.packetsIn; bytesIn = o.bytesIn; packetsOut = o.packetsOut; bytesOut = o.bytesOut
        joins = o.joins; rebinds = o.rebinds; acks = o.acks; revocations = o.revocations
        idleUnbinds = o.idleUnbinds
        for i in drops.indices { drops[i] = o.drops[i] }
        for i in latency.indices { latency[i] = o.latency[i] }
    }

    mutating func add(_ o: RelayCounters) {
        packetsIn &+= o.packetsIn; bytesIn &+= o.bytesIn; packetsOut &+= o.packetsOut; bytesOut &+= o.bytesOut
        joins &+= o.joins; rebinds &+= o.rebinds; acks &+= o.acks; revocations &+= o.revocations
        idleUnbinds &+= o.idleUnbinds
        for i in drops.indices { drops[i] &+= o.drops[i] }
        for i in latency.indices { latency[i] &+= o.latency[i] }
    }
}

/// Log-scale latency buckets: two per power of two of nanoseconds (±20 %), up to ~4 s.
enum LatencyBuckets {
    static let count = 64

    @inline(__always) static func index(_ ns: UInt64) -> Int {
        if ns < 2 { return 0 }
        let lg = 63 - ns.leadingZeroBitCount
        let half = Int((ns >> UInt64(lg - 1)) & 1)
        return min(count - 1, lg * 2 + half)
    }

    /// The bucket's lower bound in nanoseconds.
    static func lowerBound(_ i: Int) -> Double {
        let lg = i / 2
        return Double(UInt64(1) << UInt64(lg)) * (i % 2 == 1 ? 1.5 : 1.0)
    }

    /// The `q` quantile (0…1) in microseconds, from bucket counts.
    static func quantileMicros(_ b: [UInt64], _ q: Double) -> Double {
        let total = b.reduce(0, &+)
        guard total > 0 else { return 0 }
        let target = UInt64((Double(total) * q).rounded(.up))
        var seen: UInt64 = 0
        for i in b.indices {
            seen &+= b[i]
            if seen >= max(1, target) { return lowerBound(i) / 1000 }
        }
        return lowerBound(b.count - 1) / 1000
    }
}

/// The published counters of every thread.
final class RelayStatsBoard: @unchecked Sendable {
    private let slots: [Locked<RelayCounters>]

    init(threads: Int) { slots = (0..<threads).map { _ in Locked(RelayCounters()) } }

    func publish(_ thread: Int, _ c: RelayCounters) { slots[thread].withLock { $0.copy(from: c) } }

    func total() -> RelayCounters {
        var t = RelayCounters()
        for s in slots { s.withLock { t.add($0) } }
        return t
    }
}
