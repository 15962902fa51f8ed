import Primitives

/// One client connection, owned by exactly one reactor and touched only on its thread.
///
/// Kept small on purpose (the target is ≤ 256 bytes per idle subscribed connection, all
/// included): fields are grouped by size so Swift's in-order layout wastes no padding, state
/// only a few connections ever need (a partial frame, held input, a pending cut) lives in
/// `ConnectionExtras`, allocated on first use, and one joined room is stored inline.
public final class Connection {
    /// The socket's fd; -1 for a socket accepted straight into the ring's fixed-file table
    /// until the backend installs one for a use that needs it (`fixedIndex`).
    var fd: Int32
    /// io_uring `accept` descriptors: the socket's slot in the ring's fixed-file table (-1: none).
    var fixedIndex: Int32 = -1
    /// Index in the reactor's connection table.
    let slot: Int32
    /// IPv4 source address (host order), for loopback checks and per-address limits.
    let peerIP: UInt32
    var rateStrikes: Int32 = 0
    /// Rate-limit bucket (a Float: kept with the other 4-byte fields, the record stays in a
    /// smaller malloc size class; it counts at most rate_limit_burst tokens).
    var tokens: Float
    /// The session id is kept as numbers and spelled out on demand (no string per connection).
    private var sessionCounter: UInt32 = 0
    private var sessionNonce: UInt32 = 0
    // Timestamps for limits and idle release, in wrapping milliseconds of the monotonic clock
    // (`Connection.ms`; differences hold for 49 days, timeouts are far shorter). Four of them
    // fit where two UInt64s would, which keeps the record in the 192-byte malloc class: at
    // 10,000 idle members the record is most of what a member costs.
    let acceptedMs: UInt32
    var lastReceiveMs: UInt32
    var tokensRefilledMs: UInt32
    /// Last time output was handed to the backend (idle buffers are freed a second later).
    var lastOutputMs: UInt32 = 0
    /// When the oldest unsent output was produced (0: none queued), and the same for the send
    /// in flight (`stampMs`, never 0): a send waiting over 50 ms makes the connection
    /// backlogged. (Latency is measured per turn, not from these.)
    var queuedMs: UInt32 = 0
    var sendStartedMs: UInt32 = 0
    /// The backend's generation for this connection's slot (`SlotTable`): part of every
    /// operation's tag. (Kept with the 4-byte fields: it takes padding the record had anyway.)
    var generation: UInt32 = 0

    // One byte each.
    var framing: Framing = .undetermined
    /// Codec granted at hello for what the server sends (raw: none). Any codec other than raw
    /// switches the server's output to binary frames, whatever framing the client sends in.
    public internal(set) var outCodec: CompressionCodec = .raw
    public internal(set) var echo = false
    /// Already in the reactor's list of connections with output to flush this turn.
    var inFlushList = false
    var idlePingSent = false
    /// A plugin is finishing this connection's last message asynchronously: further input is
    /// held, unprocessed, until it calls `releaseInput` (so replies stay in order).
    var inputHeld = false
    private var sessionReactor: UInt8 = 0
    /// Open → closing → closeStarted → fdClosed → released.
    var lifecycle = Lifecycle.open
    /// The kernel operations in flight for this connection (the backend's records).
    var ops = ConnectionOps()

    // Session state, set by hello.
    public internal(set) var user: String?
    /// Rooms this connection joined (chat plugin state; the first one is stored inline).
    public var rooms = RoomList()

    /// Output queued, in flight, and by reference (blocks, a spliced pipe): see `OutputQueue`.
    var output = OutputQueue()

    /// Stable hash of the user name (feature rollout; 0 before hello). Computed when asked:
    /// only a rollout under 100 % needs it (`FeatureGate.isEnabled(_:for:)`).
    public var userHash: UInt64 { user.map(FeatureGate.userHash) ?? 0 }

    private var _extras: ConnectionExtras?

    init(fd: Int32, fixedIndex: Int32 = -1, slot: Int, peerIP: UInt32, now: UInt64, burst: Int) {
        self.fd = fd
        self.fixedIndex = fixedIndex
        self.slot = Int32(slot)
        self.peerIP = peerIP
        acceptedMs = Self.ms(now)
        lastReceiveMs = acceptedMs
        tokens = Float(burst)
        tokensRefilledMs = acceptedMs
    }

    /// Monotonic nanoseconds as wrapping milliseconds (the timestamps above).
    @inline(__always)
    static func ms(_ nanos: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: nanos / 1_000_000) }

    /// `ms`, but never 0 (the "nothing queued" value): 0 becomes 1, once every 49 days.
    @inline(__always)
    static func stampMs(_ nanos: UInt64) -> UInt32 { let m = ms(nanos); return m == 0 ? 1 : m }

    /// Milliseconds from `since` (a `ms` stamp) to `now` (nanoseconds); 0 when `since` is
    /// later than `now` (a stamp taken after the caller read its clock), never a wrapped
    /// difference of 49 days.
    @inline(__always)
    static func elapsedMs(_ since: UInt32, _ now: UInt64) -> UInt64 {
        let d = Int32(bitPattern: ms(now) &- since)
        return d > 0 ? UInt64(d) : 0
    }

    /// The rarely needed state, created on first use.
    var extras: ConnectionExtras {
        if let e = _extras { return e }
        let e = ConnectionExtras()
        _extras = e
        return e
    }

    /// True when part of a frame is waiting for the rest (without creating `extras`).
    var hasPartialInput: Bool { _extras.map { !$0.input.isEmpty } ?? false }
    /// The rare-state record if it was ever needed (never creates it).
    var extrasIfPresent: ConnectionExtras? { _extras }
    /// Bytes held while `inputHeld` (0 without `extras`).
    var heldInputCount: Int { _extras?.heldInput.readableCount ?? 0 }
    var cutReason: String? { _extras?.cutReason }
    /// When output first went over the soft cap (0: under it). Kept in `extras`: only slow
    /// consumers ever set it.
    var overSoftSince: UInt64 {
        get { _extras?.overSoftSince ?? 0 }
        set { if newValue != 0 || _extras != nil { extras.overSoftSince = newValue } }
    }
    var forceCloseAt: UInt64 { _extras?.forceCloseAt ?? 0 }

    /// Frees input storage (the connection is closing).
    func dropInput() {
        _extras?.input.removeAll()
        _extras?.input.releaseIfEmpty()
    }

    /// The reactor decided to close (or the connection is already gone).
    @inline(__always) var closing: Bool { lifecycle >= .closing }
    /// The backend was told to close.
    @inline(__always) package var closeStarted: Bool { lifecycle >= .closeStarted }
    /// The fd is closed (the number may already belong to someone else).
    @inline(__always) var fdClosed: Bool { lifecycle >= .fdClosed }
    /// The kernel owns the output being sent (see `ConnectionOps.sendBusy`).
    @inline(__always) var sendInFlight: Bool { ops.sendBusy }

    var isLoopback: Bool { peerIP >> 24 == 127 }
    @inline(__always)
    var sendsBinary: Bool { framing == .binary || outCodec != .raw }
    /// Upgraded on /ws: messages go out as WebSocket text frames.
    public var isWebSocket: Bool { framing == .webSocket }

    // The output queue, by its old names (the reactor's fan-out reads these per message).
    @inline(__always) var pendingOutputBytes: Int { output.pendingBytes }
    @inline(__always) var hasQueuedOutput: Bool { output.hasQueued }
    @inline(__always) var queuedOutputBytes: Int { output.queuedBytes }
    @inline(__always) var sendingIsEmpty: Bool { output.sendingIsEmpty }
    func dropQueuedOutput(pool: BufferPool) { output.dropQueued(pool: pool) }
    func dropSending(pool: BufferPool) { output.dropSending(pool: pool) }
    func consumeSending(_ n: Int, pool: BufferPool) { output.consumeSending(n, pool: pool) }
    func consumeQueued(_ n: Int, pool: BufferPool) { output.consumeQueued(n, pool: pool) }
    func releaseOutput(pool: BufferPool, blocksPool: OutputBlocksPool) { output.release(pool: pool, blocksPool: blocksPool) }

    /// True once the connection said hello.
    public var isAuthenticated: Bool { user != nil }

    /// "reactor-counter-nonce", assigned at hello.
    public var session: String? {
        guard sessionCounter != 0 else { return nil }
        return "\(sessionReactor)-\(sessionCounter)-\(String(sessionNonce, radix: 16))"
    }

    func setSession(reactor: Int, counter: UInt32, nonce: UInt32) {
        sessionReactor = UInt8(truncatingIfNeeded: reactor)
        sessionCounter = counter == 0 ? 1 : counter
        sessionNonce = nonce
    }
}

/// The frame splitter's state: `framing` and `hasPartialInput` above, the partial bytes in
/// `extras.input` (`extras` is created on first use: a connection whose frames all arrive
/// whole never needs it).
extension Connection: FrameInputOwner {
    /// `extras.input`, reached through `_extras` rather than `extras`: the splitter touches it
    /// several times per split frame, and `extras` costs a retain/release each time. Borrowing
    /// is safe: `_extras` is never cleared once set.
    var partialInput: ByteBuffer {
        _read {
            if _extras == nil { _extras = ConnectionExtras() }
            yield _extras.unsafelyUnwrapped.input
        }
        _modify {
            if _extras == nil { _extras = ConnectionExtras() }
            yield &_extras.unsafelyUnwrapped.input
        }
    }
}

/// Per-connection state that few connections need, kept off the `Connection` record.
final class ConnectionExtras {
    /// Bytes of a frame that did not fit in one receive (empty and storage-free otherwise).
    var input = ByteBuffer()
    /// Input that arrived while a plugin held the connection's input.
    var heldInput = ByteBuffer()
    /// The ack owed for the message that caused the hold, sent on release.
    var heldAckID: [UInt8]?
    /// Set when the connection is to be cut as a slow consumer at the end of the turn.
    var cutReason: String?
    /// A close waiting for its output to flush is forced at this time (the peer may never read).
    var forceCloseAt: UInt64 = 0
    /// See `Connection.overSoftSince`.
    var overSoftSince: UInt64 = 0
    /// WebSocket message state (set at the upgrade; nil for every other framing).
    var webSocket: WebSocketSession?
}

/// The rooms a connection joined: most connections join one, so the first is stored inline and
/// only further ones take an array.
public struct RoomList: Sequence {
    private var first: LocalRoom?
    private var more: [LocalRoom] = []

    public init() {}

    public var count: Int { first == nil ? 0 : 1 + more.count }
    public var isEmpty: Bool { first == nil }

    mutating func append(_ r: LocalRoom) {
        if first == nil { first = r } else { more.append(r) }
    }

    /// Removes and returns the first room matching `predicate`.
    mutating func remove(where predicate: (LocalRoom) -> Bool) -> LocalRoom? {
        guard let f = first else { return nil }
        if predicate(f) {
            first = more.isEmpty ? nil : more.removeFirst()
            return f
        }
        guard let i = more.firstIndex(where: predicate) else { return nil }
        return more.remove(at: i)
    }

    mutating func removeAll() {
        first = nil
        more = []
    }

    public struct Iterator: IteratorProtocol {
        fileprivate var list: RoomList
        fileprivate var index = 0
        public mutating func next() -> LocalRoom? {
            defer { index += 1 }
            if index == 0 { return list.first }
            let i = index - 1
            return i < list.more.count ? list.more[i] : nil
        }
    }

    public func makeIterator() -> Iterator { Iterator(list: self) }
}
