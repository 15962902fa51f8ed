/// What a reactor needs from its I/O backend. Two implementations: `UringBackend` (io_uring,
/// completion based) and `EpollBackend` (readiness based). The reactor's protocol, rooms and
/// plugins are the same over both; only this seam differs.
///
/// Ownership rule (TigerBeetle's): a backend may hold a connection's buffers in flight, so a
/// connection is only *released* (fd closed, record dropped) when the backend says so through
/// `IOEventHandler.connectionReleased`, after its last completion has been reaped.
protocol IOBackend: AnyObject {
    /// Arms accepting on a listening socket.
    func addListener(fd: Int32) throws(SyscallError)
    /// Arms the eventfd other threads write to wake this reactor.
    func addWakeup(fd: Int32) throws(SyscallError)
    /// Starts receiving on a freshly accepted connection.
    func startReceiving(_ c: Connection)
    /// Starts sending `c.out` (called at the end of a turn when output is queued and no send is
    /// in flight). The backend sets `c.sendInFlight` while it still owns bytes.
    func send(_ c: Connection)
    /// Tears the connection down; `connectionReleased` follows once nothing is in flight.
    func close(_ c: Connection)
    /// Submits what the turn queued, waits for at least one event (or `timeoutMillis`, -1 for
    /// none), and dispatches every ready event to `handler`.
    func poll(timeoutMillis: Int32, handler: IOEventHandler)
    /// Frees the backend's kernel resources; called on the reactor thread as it exits.
    func shutdown()
    /// Called once a second: a backend that received nothing since the last call may give
    /// idle receive memory back to the system.
    func releaseIdleMemory()
    /// Turns batched waiting (io_uring's minimum wait) on or off; a no-op where unsupported.
    func setBatchedWait(_ on: Bool)
    var batchedWait: Bool { get }
    /// This backend's io_uring fd, for other rings' MSG_RING wakeups (-1 for epoll).
    var ringFD: Int32 { get }
    /// Wakes another reactor: a MSG_RING to its ring when both sides are io_uring (an SQE in
    /// this turn's batch, no extra syscall), else a write to its eventfd.
    func wakePeer(ringFD: Int32, eventFD: Int32)
}

/// Events a backend delivers to its reactor. All calls happen on the reactor thread.
protocol IOEventHandler: AnyObject {
    func connectionAccepted(fd: Int32)
    /// `bytes` are valid only during the call (they live in a provided or scratch buffer).
    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer)
    /// The peer closed (`error == 0`) or the receive failed with `error`.
    func connectionReceiveEnded(_ c: Connection, error: Int32)
    /// All queued output was written (no more send in flight); `error != 0` when a send failed.
    func connectionSendCompleted(_ c: Connection, error: Int32)
    func connectionReleased(_ c: Connection)
    /// A zero-copy send's buffer came back; `copied` when the kernel copied the bytes anyway
    /// (it does for loopback peers, so SEND_ZC saves nothing there).
    func zeroCopySendFinished(copied: Bool)
    func wakeup()
}
