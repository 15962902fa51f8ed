import Primitives

/// What a reactor needs from its I/O backend. Two kernel implementations — `UringBackend`
/// (io_uring, completion based) and `EpollBackend` (readiness based) — and `MemoryBackend` for
/// tests. The reactor's protocol, rooms and plugins are the same over all of them; nothing of
/// a backend's machinery (rings, epoll sets, user_data) shows through this seam.
///
/// Ownership rule (TigerBeetle's): a backend may hold a connection's buffers in flight, so a
/// connection is only *released* (fd closed, record dropped) when the backend says so through
/// `IOEventHandler.connectionReleased`, after its last completion has been reaped.
protocol IOBackend: AnyObject {
    /// Arms accepting on a listening socket (non-blocking); the backend closes it at shutdown.
    func addListener(fd: Int32) throws(SyscallError)
    /// Arms `target`, which other threads use to wake this reactor (see `wake`).
    func addWakeup(_ target: WakeTarget) throws(SyscallError)
    /// Starts receiving on a freshly accepted connection.
    func startReceiving(_ c: Connection)
    /// Starts sending `c`'s queued output (called at the end of a turn when output is queued
    /// and no send is in flight). `c.sendInFlight` stays true while the kernel owns bytes.
    func send(_ c: Connection)
    /// Tears the connection down; `connectionReleased` follows once nothing is in flight.
    func close(_ c: Connection)
    /// Turns away an accepted socket that never became a connection: one best-effort write of
    /// `message` (never blocking), then close. `message` is static (it outlives the call).
    func refuse(_ socket: AcceptedSocket, _ message: UnsafeRawBufferPointer)
    /// `c` has no fd (accepted straight into io_uring's fixed-file table) and wants one, to
    /// take spliced room batches: the backend installs one in the background (`c.fd` is set
    /// once it is in; until then the caller uses the paths that need none).
    func needsRealFD(_ c: Connection)
    /// Wakes another reactor (at the latest with this turn's submit).
    func wake(_ peer: WakeTarget)
    /// Submits what the turn queued, waits for at least one event (or `timeoutMillis`, -1 for
    /// none), and dispatches every ready event to `handler`. `gather`: the reactor expects
    /// fan-out, so trading a little latency for more completions per wake-up pays; a backend
    /// that cannot gather ignores it. Returns whether this wait gathered.
    @discardableResult
    func poll(timeoutMillis: Int32, gather: Bool, handler: IOEventHandler) -> Bool
    /// Counters only the backend can keep (cumulative).
    var counters: KernelCounters { get }
    /// Called once a second: a backend that received nothing since the last call may give
    /// idle receive memory back to the system.
    func releaseIdleMemory()
    /// Closes the listener and every connection fd still open, then frees the backend's
    /// kernel resources; called on the reactor thread as it exits.
    func shutdown()
}

extension IOBackend {
    func needsRealFD(_ c: Connection) {}
}

/// Events a backend delivers to its reactor. All calls happen on the reactor thread.
protocol IOEventHandler: AnyObject {
    func connectionAccepted(_ socket: AcceptedSocket)
    /// `bytes` are valid only during the call (they live in a provided or scratch buffer).
    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer)
    /// The peer closed (`error == 0`) or the receive failed with `error`.
    func connectionReceiveEnded(_ c: Connection, error: Int32)
    /// All queued output was written (no more send in flight); `error != 0` when a send failed.
    func connectionSendCompleted(_ c: Connection, error: Int32)
    func connectionReleased(_ c: Connection)
    func wakeup()
}

/// The settings a backend is made from (a subset of `ServerConfig`).
struct BackendSettings {
    var ringEntries = 4096
    var recvBufferCount = 256
    var recvBufferSize = 4096
    var zeroCopyThreshold = 0
    var waitBatch = 0
    var waitBatchMicros = 0
    var techniques = UringTechniques(recvBundle: false, bufIncremental: false)
}

enum IOBackends {
    /// The backend for `mode`, created on the reactor thread (io_uring rings are bound to
    /// their issuer). `warn` receives set-up notes worth a log line.
    static func make(_ mode: IOMode, _ s: BackendSettings, pool: BufferPool, pipes: SplicePipes?,
                     warn: (String) -> Void) throws(SyscallError) -> IOBackend {
        switch mode {
        case .uring:
            let uring = try UringBackend(entries: s.ringEntries, recvBufferCount: s.recvBufferCount,
                                         recvBufferSize: s.recvBufferSize, zeroCopyThreshold: s.zeroCopyThreshold,
                                         waitBatch: s.waitBatch, waitBatchMicros: s.waitBatchMicros,
                                         techniques: s.techniques, pool: pool, pipes: pipes)
            if s.zeroCopyThreshold > 0 && uring.zeroCopyThreshold == 0 {
                warn("IORING_OP_SEND_ZC unsupported by this kernel: plain sends only")
            }
            return uring
        case .epoll:
            return try EpollBackend(recvBufferSize: s.recvBufferSize, pool: pool, pipes: pipes)
        }
    }
}
