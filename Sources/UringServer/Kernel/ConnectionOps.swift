/// Where a connection is in its life. Only ever moves forward.
enum Lifecycle: UInt8, Comparable {
    /// Input is processed, output queued.
    case open
    /// The reactor decided to close: no more input is processed or output queued; the
    /// connection closes once its output is flushed (or the flush is given up).
    case closing
    /// The backend was told to close; it is tearing down what the kernel still holds.
    case closeStarted
    /// The fd is closed (its number may already belong to someone else); the record waits
    /// for the last completion that names it.
    case fdClosed
    /// Handed back to the reactor (`IOEventHandler.connectionReleased`).
    case released

    static func < (a: Lifecycle, b: Lifecycle) -> Bool { a.rawValue < b.rawValue }
}

/// The kernel operations one connection can have in flight: one small record per kind
/// (TigerBeetle's completion per operation). A backend's user_data names the connection's slot,
/// the slot's generation and the kind, never an address, so a completion for a record that is
/// gone is recognised and dropped; the connection is released only when every kind is idle.
struct ConnectionOps {
    enum State: UInt8 { case idle, inFlight }

    /// io_uring: the multishot receive is armed. epoll: the fd is registered for readiness.
    var recv = State.idle
    /// A send, sendmsg or SEND_ZC whose result is not in (epoll: waiting for EPOLLOUT).
    var send = State.idle
    /// A SEND_ZC whose result is in but whose pages the kernel still references.
    var zeroCopyNotification = State.idle
    /// POLLOUT on a socket that did not take all its spliced bytes.
    var poll = State.idle
    /// io_uring `accept` descriptors: an IORING_OP_FIXED_FD_INSTALL (a real fd for splice or
    /// SO_LINGER), then the IORING_OP_CLOSE of the fixed slot.
    var install = State.idle
    var closeDirect = State.idle
    /// The IORING_OP_SHUTDOWN of the fixed slot. The kernel runs it from a worker thread and
    /// looks the slot up only then, so the slot must not be closed (and handed to the next
    /// socket) before it completes, or it would shut the next connection down.
    var shutdown = State.idle
    /// The install failed: the connection goes on without a real fd (no splice).
    var installFailed = false
    /// The SEND_ZC awaiting its notification failed; reported when the notification arrives.
    var zeroCopyFailed = false
    /// The kernel copied a zero-copy send to this peer (loopback, or no scatter-gather): later
    /// sends to it are plain ones, which are cheaper then.
    var zeroCopyCopies = false

    /// The kernel owns the output being sent: a send, its notification, or a wait for room.
    @inline(__always)
    var sendBusy: Bool { send == .inFlight || zeroCopyNotification == .inFlight || poll == .inFlight }
    @inline(__always)
    var allIdle: Bool { recv == .idle && !sendBusy && install == .idle && closeDirect == .idle && shutdown == .idle }
}

/// A newly accepted socket, already configured (non-blocking, TCP_NODELAY) by the backend.
struct AcceptedSocket {
    /// -1 when accepted straight into the fixed-file table (`fixedIndex`).
    let fd: Int32
    var fixedIndex: Int32 = -1
    /// IPv4 source address in host order (0 when unknown).
    let peerIPv4: UInt32
}

/// Counters only the backend can keep; the reactor copies them into its stats once a second.
struct KernelCounters {
    var zeroCopySends = 0
    var zeroCopyCopied = 0
}
