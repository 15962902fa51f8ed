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
    /// Output queued during this turn.
    var out = ByteBuffer()
    /// Output the kernel is sending (io_uring backend only; stable while a send is in flight).
    var sending = ByteBuffer()

    var sendInFlight = false
    var recvArmed = false
    /// Set when the reactor decided to close: no more input is processed or output queued.
    var closing = false
    /// Close once `out` has drained (used after frame_too_large and HTTP replies).
    var closeAfterFlush = false
    /// Already in the reactor's list of connections with output to flush this turn.
    var inFlushList = false
    /// Backend has been told to close.
    var closeStarted = false

    init(fd: Int32, slot: Int, reactorIndex: Int) {
        self.fd = fd
        self.slot = slot
        self.reactorIndex = reactorIndex
    }

    /// True once the connection said hello.
    public var isAuthenticated: Bool { user != nil }
}
