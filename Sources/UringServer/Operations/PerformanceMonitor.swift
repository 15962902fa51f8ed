import Primitives
import Glibc
import Synchronization

/// The server's figures as the monitor last computed them (merged over reactors).
public struct ServerFigures: Sendable {
    public var messagesPerSec = 0
    public var deliveriesPerSec = 0
    public var latencyP50Ms = 0.0
    public var latencyP99Ms = 0.0
    public var memoryMB = 0.0
    /// The memory threshold for what the server holds now: max_memory_mb plus
    /// memory_per_reactor_mb per reactor plus memory_per_connection_kb per open connection.
    public var memoryLimitMB = 0.0
    public var connections = 0
    /// Failures of the server's own doing / messages, last minute (send errors other than the
    /// peer going away, cluster publishes that failed): what the monitor judges.
    public var errorRate = 0.0
    /// Error replies to clients (bad_json, rate_limited, …) / messages, last minute: reported,
    /// never a reason to shed (one misbehaving client must not degrade everyone).
    public var clientErrorRate = 0.0
    public var serverFailures = 0
    public var backlogged = 0
}

/// Judges the figures against the thresholds once a second (on reactor 0's tick). A breach held
/// for `monitorBreachSeconds` consecutive evaluations logs an alert, raises `overloaded` and
/// sheds every non-critical feature flag; the flags come
/// back only after the figures have stayed under every threshold for `monitorHoldMs`
/// (hysteresis, so a figure hovering at a threshold does not flap).
final class PerformanceMonitor: Sendable {
    struct State {
        var figures = ServerFigures()
        var overloaded = false
        var breaches: [String] = []
        /// Monotonic ns since when every figure has been under its threshold (0: not under).
        var clearSince: UInt64 = 0
        /// Consecutive evaluations with a breach.
        var breachedRuns = 0
        var sheds = 0
        var restores = 0
    }

    private let state = Locked(State())
    let overloaded = Atomic<Bool>(false)
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    var current: State { state.withLock { $0 } }

    func evaluate(_ shared: ServerShared) {
        advanceClusterWindow(shared)
        let f = Self.figures(shared)
        let c = shared.config
        var breaches: [String] = []
        if f.latencyP99Ms > c.maxLatencyMs { breaches.append("latency_p99_ms \(f.latencyP99Ms) > \(c.maxLatencyMs)") }
        if f.memoryMB > f.memoryLimitMB {
            breaches.append("memory_mb \(f.memoryMB) > \(f.memoryLimitMB) (max_memory_mb \(c.maxMemoryMB) + memory_per_reactor_mb \(c.memoryPerReactorMB) × \(shared.reactors.count) reactors + memory_per_connection_kb \(c.memoryPerConnectionKB) × \(f.connections) connections)")
        }
        // Throughput is judged only while demand is not met on a share of the connections: one
        // client that stops reading is a slow consumer (cut by the outbound limits), not an
        // overloaded server.
        if f.backlogged >= 2 && f.backlogged * 20 >= f.connections && f.messagesPerSec < c.minThroughput {
            breaches.append("msg_per_sec \(f.messagesPerSec) < \(c.minThroughput) with \(f.backlogged) backlogged connections")
        }
        if f.errorRate > c.maxErrorRate { breaches.append("error_rate \(f.errorRate) > \(c.maxErrorRate)") }
        let now = Clock.monoNanos()
        let hold = UInt64(c.monitorHoldMs) * 1_000_000
        enum Action { case none, shed, restore }
        let action: Action = state.withLock { s in
            s.figures = f
            s.breaches = breaches
            if !breaches.isEmpty {
                s.clearSince = 0
                s.breachedRuns += 1
                if !s.overloaded && s.breachedRuns >= c.monitorBreachSeconds {
                    s.overloaded = true
                    s.sheds += 1
                    return .shed
                }
                return .none
            }
            s.breachedRuns = 0
            if s.clearSince == 0 { s.clearSince = now }
            if s.overloaded && now &- s.clearSince >= hold {
                s.overloaded = false
                s.restores += 1
                return .restore
            }
            return .none
        }
        switch action {
        case .shed:
            overloaded.store(true, ordering: .relaxed)
            let shed = shared.flags.all.filter { !$0.critical }
            for flag in shed { flag.shed.store(true, ordering: .relaxed) }
            logger.warning("overload: shedding non-critical features", [
                "breaches": breaches.joined(separator: "; "),
                "shed": shed.map(\.name).joined(separator: ","),
                "msg_per_sec": String(f.messagesPerSec), "latency_p99_ms": String(f.latencyP99Ms),
                "memory_mb": String(f.memoryMB), "error_rate": String(f.errorRate),
            ])
        case .restore:
            overloaded.store(false, ordering: .relaxed)
            for flag in shared.flags.all { flag.shed.store(false, ordering: .relaxed) }
            logger.info("overload cleared: features restored", [
                "held_ms": String(c.monitorHoldMs), "msg_per_sec": String(f.messagesPerSec),
                "latency_p99_ms": String(f.latencyP99Ms), "memory_mb": String(f.memoryMB),
                "error_rate": String(f.errorRate),
            ])
        case .none:
            break
        }
    }

    /// Cluster publish failures, one slot per evaluation (a second): their last-minute sum.
    private let clusterFailures = Locked(ClusterFailureWindow())

    /// Merges every reactor's last snapshot.
    static func figures(_ shared: ServerShared) -> ServerFigures {
        var f = ServerFigures()
        var latency = LatencyHistogram()
        var messagesMinute = 0
        var errorsMinute = 0
        var failuresMinute = shared.monitor.clusterFailuresLastMinute(shared)
        for r in shared.reactors {
            let s = r.snapshots.read()
            f.messagesPerSec += s.messagesPerSec
            f.deliveriesPerSec += s.deliveriesPerSec
            f.connections += s.connections
            f.backlogged += s.backlogged
            messagesMinute += s.messagesLastMinute
            errorsMinute += s.errorsLastMinute
            failuresMinute += s.serverFailuresLastMinute
            f.serverFailures += s.totalServerFailures
            latency.merge(s.latencyLastSecond)
        }
        f.latencyP50Ms = Double(latency.percentile(0.50)) / 1000
        f.latencyP99Ms = Double(latency.percentile(0.99)) / 1000
        if let cluster = shared.cluster { f.serverFailures += cluster.link.stats.publishFailures }
        f.errorRate = messagesMinute > 0 ? Double(failuresMinute) / Double(messagesMinute) : 0
        f.clientErrorRate = messagesMinute > 0 ? Double(errorsMinute) / Double(messagesMinute) : 0
        f.memoryMB = Double(residentBytes()) / 1_048_576
        f.memoryLimitMB = shared.config.maxMemoryMB + shared.config.memoryPerReactorMB * Double(shared.reactors.count)
            + Double(shared.config.memoryPerConnectionKB * f.connections) / 1024
        return f
    }

    /// Publish failures of the cluster link over the last minute (0 without a cluster). The
    /// link keeps a running total; the window is advanced once a second by `evaluate`.
    private func clusterFailuresLastMinute(_ shared: ServerShared) -> Int {
        guard let cluster = shared.cluster else { return 0 }
        let total = cluster.link.stats.publishFailures
        return clusterFailures.withLock { $0.sum(upTo: total) }
    }

    func advanceClusterWindow(_ shared: ServerShared) {
        guard let cluster = shared.cluster else { return }
        let total = cluster.link.stats.publishFailures
        clusterFailures.withLock { $0.advance(total) }
    }
}

/// Running total of cluster publish failures sampled once a second; the last minute's share is
/// the total now minus the sample a minute ago.
struct ClusterFailureWindow {
    private var samples = [Int](repeating: -1, count: 60)
    private var slot = 0

    mutating func advance(_ total: Int) {
        samples[slot] = total
        slot = (slot + 1) % 60
    }

    func sum(upTo total: Int) -> Int {
        // The oldest sample still in the window (the slot about to be overwritten), or the
        // first one taken when the window has not filled yet.
        var oldest = samples[slot]
        if oldest < 0 { oldest = samples.first(where: { $0 >= 0 }) ?? total }
        return max(0, total - oldest)
    }
}

/// Resident set size of this process, from /proc/self/statm (second field, in pages).
func residentBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY)
    if fd < 0 { return 0 }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 128)
    let n = read(fd, &buf, buf.count)
    if n <= 0 { return 0 }
    let fields = buf[0..<n].split(separator: UInt8(ascii: " "))
    guard fields.count > 1, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
