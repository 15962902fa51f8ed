import Primitives
import Synchronization

/// Counters a reactor updates on its own thread (plain integers: nothing shared on the hot
/// path). Once a second the reactor folds them into a `ReactorSnapshot` and publishes it under
/// a lock that only /stats readers and the monitor take.
struct ReactorCounters {
    var messagesIn = 0
    var deliveries = 0
    /// Error replies sent to clients (every code is about the client's input or behaviour).
    var errorsSent = 0
    /// Failures of the server's own doing: sends that failed other than by the peer going
    /// away (their queued deliveries are dropped). The monitor's error_rate counts these.
    var serverFailures = 0
    var bytesIn = 0
    var bytesOut = 0
    /// IORING_OP_SEND_ZC sends whose buffer came back, and how many of those the kernel copied.
    var zeroCopySends = 0
    var zeroCopyCopied = 0
    /// Room-batch deliveries that went by tee + splice (one per member per batch).
    var splicedBatches = 0
    var accepted = 0
    var closed = 0
    /// WebSocket connections open now (upgraded, not yet closed), and frames parsed / sent.
    var webSocketOpen = 0
    var webSocketFramesIn = 0
    var webSocketFramesOut = 0
    var limitHits: [String: Int] = [:]
    /// Room history (RoomOrder.swift): joins with `since` by outcome, lines replayed, entries
    /// evicted (early: by bytes before `history_size` or the TTL), bytes added minus freed here.
    var recoveriesOK = 0
    var recoveriesFailedEpoch = 0
    var recoveriesFailedEvicted = 0
    var messagesReplayed = 0
    var historyEvictions = 0
    var historyEarlyEvictions = 0
    var historyBytesDelta = 0
    var slowConsumerCuts = 0
    /// Latency of the current second (recv of a message → send completion of its delivery).
    var latency = LatencyHistogram()
    var latencyTotal = LatencyHistogram()
}

/// One reactor's figures as of its last one-second tick.
public struct ReactorSnapshot: Sendable {
    public var index = 0
    public var connections = 0
    public var messagesPerSec = 0
    public var deliveriesPerSec = 0
    public var errorsPerSec = 0
    /// Sums over the last 60 seconds.
    public var messagesLastMinute = 0
    public var errorsLastMinute = 0
    public var serverFailuresLastMinute = 0
    public var totalServerFailures = 0
    public var totalMessagesIn = 0
    public var totalDeliveries = 0
    public var totalErrors = 0
    public var totalAccepted = 0
    public var totalClosed = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public var zeroCopySends = 0
    public var zeroCopyCopied = 0
    public var splicedBatches = 0
    public var webSocketConnections = 0
    public var webSocketFramesIn = 0
    public var webSocketFramesOut = 0
    public var limitHits: [String: Int] = [:]
    public var recoveriesOK = 0
    public var recoveriesFailedEpoch = 0
    public var recoveriesFailedEvicted = 0
    public var messagesReplayed = 0
    public var historyEvictions = 0
    public var historyEarlyEvictions = 0
    public var slowConsumerCuts = 0
    /// Connections whose output waited over 50 ms at the last tick.
    public var backlogged = 0
    /// io_uring batched waiting was on at the last tick (see `wait_batch_auto`).
    public var batchedWait = false
    /// Splice pipes open at the last tick (source, pooled and held by members).
    public var openPipes = 0
    public var latencyLastSecond = LatencyHistogram()
    public var latencyTotal = LatencyHistogram()
}

/// The per-reactor publication point.
final class SnapshotBox: Sendable {
    private let value: Locked<ReactorSnapshot>

    init(index: Int) {
        var s = ReactorSnapshot()
        s.index = index
        value = Locked(s)
    }

    func publish(_ s: ReactorSnapshot) { value.withLock { $0 = s } }
    func read() -> ReactorSnapshot { value.withLock { $0 } }
}

/// Rolls counters into per-second rates and one-minute sums.
struct SecondWindow {
    private var lastMessages = 0, lastDeliveries = 0, lastErrors = 0, lastFailures = 0
    private var minuteMessages = [Int](repeating: 0, count: 60)
    private var minuteErrors = [Int](repeating: 0, count: 60)
    private var minuteFailures = [Int](repeating: 0, count: 60)
    private var slot = 0

    mutating func roll(_ c: inout ReactorCounters, index: Int, connections: Int) -> ReactorSnapshot {
        var s = ReactorSnapshot()
        s.index = index
        s.connections = connections
        s.messagesPerSec = c.messagesIn - lastMessages
        s.deliveriesPerSec = c.deliveries - lastDeliveries
        s.errorsPerSec = c.errorsSent - lastErrors
        lastMessages = c.messagesIn
        lastDeliveries = c.deliveries
        lastErrors = c.errorsSent
        minuteMessages[slot] = s.messagesPerSec
        minuteErrors[slot] = s.errorsPerSec
        minuteFailures[slot] = c.serverFailures - lastFailures
        lastFailures = c.serverFailures
        slot = (slot + 1) % 60
        s.messagesLastMinute = minuteMessages.reduce(0, +)
        s.errorsLastMinute = minuteErrors.reduce(0, +)
        s.serverFailuresLastMinute = minuteFailures.reduce(0, +)
        s.totalServerFailures = c.serverFailures
        s.totalMessagesIn = c.messagesIn
        s.totalDeliveries = c.deliveries
        s.totalErrors = c.errorsSent
        s.totalAccepted = c.accepted
        s.totalClosed = c.closed
        s.bytesIn = c.bytesIn
        s.bytesOut = c.bytesOut
        s.zeroCopySends = c.zeroCopySends
        s.zeroCopyCopied = c.zeroCopyCopied
        s.splicedBatches = c.splicedBatches
        s.webSocketConnections = c.webSocketOpen
        s.webSocketFramesIn = c.webSocketFramesIn
        s.webSocketFramesOut = c.webSocketFramesOut
        s.limitHits = c.limitHits
        s.recoveriesOK = c.recoveriesOK
        s.recoveriesFailedEpoch = c.recoveriesFailedEpoch
        s.recoveriesFailedEvicted = c.recoveriesFailedEvicted
        s.messagesReplayed = c.messagesReplayed
        s.historyEvictions = c.historyEvictions
        s.historyEarlyEvictions = c.historyEarlyEvictions
        s.slowConsumerCuts = c.slowConsumerCuts
        s.latencyLastSecond = c.latency
        s.latencyTotal = c.latencyTotal
        c.latency.reset()
        return s
    }
}
