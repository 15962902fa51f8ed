import Optimizers

/// How a connection frames its messages, decided by its first bytes.
enum Framing: UInt8 {
    case undetermined
    case jsonLines
    case binary
    case http
}

/// One client connection, owned by exactly one reactor and touched only on its thread.
public final class Connection {
    let fd: Int32
    /// Index in the reactor's connection table.
    let slot: Int
    let reactorIndex: Int
    var framing: Framing = .undetermined

    // Session state, set by hello.
    public internal(set) var user: String?
    public internal(set) var session: String?
    public internal(set) var echo = false
    /// Per-plugin state hangs off the connection without the core knowing its type.
    public var rooms: [LocalRoom] = []

    /// Bytes of a frame that did not fit in one receive (empty and storage-free otherwise).
    var input = ByteBuffer()
    /// Output queued during this turn, in a chunk of the reactor's buffer pool (no chunk while
    /// nothing is queued and the connection has been quiet for a second).
    var out = PooledByteBuffer()
    /// Output the kernel is sending (io_uring backend only; stable while a send is in flight).
    var sending = PooledByteBuffer()

    var sendInFlight = false
    var recvArmed = false
    /// Set when the reactor decided to close: no more input is processed or output queued.
    var closing = false
    /// Close once `out` has drained (used after frame_too_large and HTTP replies).
    var closeAfterFlush = false
    /// A close waiting for its output to flush is forced at this time (the peer may never read).
    var forceCloseAt: UInt64 = 0
    /// Already in the reactor's list of connections with output to flush this turn.
    var inFlushList = false
    /// Backend has been told to close.
    var closeStarted = false
    /// The backend closed the fd (the number may already belong to someone else).
    var fdClosed = false

    /// IPv4 source address (host order), for loopback checks and per-address limits.
    let peerIP: UInt32
    /// Codec granted at hello for what the server sends (raw: none). Any codec other than raw
    /// switches the server's output to binary frames, whatever framing the client sends in.
    public internal(set) var outCodec: CompressionCodec = .raw
    var sendsBinary: Bool { framing == .binary || outCodec != .raw }

    /// Stable hash of the user name (feature rollout), set by hello.
    public internal(set) var userHash: UInt64 = 0

    // Latency: monotonic time the oldest unsent output was produced (0: none queued) and the
    // same for the batch in flight.
    var queuedSince: UInt64 = 0
    var sendStartedFor: UInt64 = 0
    /// Last time output was handed to the backend (idle buffers are freed a second later).
    var lastOutputAt: UInt64 = 0

    // Limits.
    let acceptedAt: UInt64
    var lastReceiveAt: UInt64
    var idlePingSent = false
    var tokens: Double
    var tokensRefilledAt: UInt64
    var rateStrikes = 0
    /// When output first went over the soft cap (0: under it).
    var overSoftSince: UInt64 = 0
    /// A plugin is finishing this connection's last message asynchronously: further input is
    /// held, unprocessed, until it calls `Reactor.releaseInput` (so replies stay in order).
    var inputHeld = false
    var heldInput = ByteBuffer()
    /// The ack owed for the message that caused the hold, sent on release.
    var heldAckID: [UInt8]?

    /// Set when the connection is to be cut as a slow consumer at the end of the turn.
    var cutReason: String?

    init(fd: Int32, slot: Int, reactorIndex: Int, peerIP: UInt32, now: UInt64, burst: Int) {
        self.fd = fd
        self.slot = slot
        self.reactorIndex = reactorIndex
        self.peerIP = peerIP
        acceptedAt = now
        lastReceiveAt = now
        tokens = Double(burst)
        tokensRefilledAt = now
    }

    var isLoopback: Bool { peerIP >> 24 == 127 }

    /// Output bytes queued or in flight.
    var pendingOutputBytes: Int { out.readableCount + sending.readableCount }

    /// True once the connection said hello.
    public var isAuthenticated: Bool { user != nil }
}
