/// A fixed-size log-linear histogram of microsecond latencies (HDR-style: 8 sub-buckets per
/// power of two, so any value is within 12.5 % of its bucket's bound). Recording is an index
/// computation and an increment: no allocation, no lock. Reactors record into their own and
/// merge copies when /stats is read.
public struct LatencyHistogram: Sendable {
    static let linear = 16
    static let subBits = 3
    static let bucketCount = linear + (40 - 4) * (1 << subBits)

    var counts: [UInt32]
    public private(set) var total: UInt64 = 0

    public init() { counts = Array(repeating: 0, count: Self.bucketCount) }

    @inline(__always)
    static func index(_ micros: UInt64) -> Int {
        if micros < UInt64(linear) { return Int(micros) }
        let e = 63 - micros.leadingZeroBitCount           // floor(log2), ≥ 4
        let sub = Int((micros >> UInt64(e - subBits)) & UInt64((1 << subBits) - 1))
        return min(bucketCount - 1, linear + (e - 4) * (1 << subBits) + sub)
    }

    /// Upper bound (µs) of bucket `i`.
    static func upperBound(_ i: Int) -> UInt64 {
        if i < linear { return UInt64(i) }
        let e = (i - linear) / (1 << subBits) + 4
        let sub = UInt64((i - linear) % (1 << subBits))
        return (UInt64(1) << UInt64(e)) + (sub + 1) * (UInt64(1) << UInt64(e - subBits)) - 1
    }

    @inline(__always)
    public mutating func record(micros: UInt64) {
        counts[Self.index(micros)] &+= 1
        total &+= 1
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for i in 0..<counts.count { counts[i] &+= other.counts[i] }
        total &+= other.total
    }

    public mutating func reset() {
        for i in 0..<counts.count { counts[i] = 0 }
        total = 0
    }

    /// The value (µs) at or below which `q` (0…1) of the samples fall; 0 with no samples.
    public func percentile(_ q: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let rank = max(1, UInt64((Double(total) * q).rounded(.up)))
        var seen: UInt64 = 0
        for i in 0..<counts.count {
            seen += UInt64(counts[i])
            if seen >= rank { return Self.upperBound(i) }
        }
        return Self.upperBound(counts.count - 1)
    }
}
