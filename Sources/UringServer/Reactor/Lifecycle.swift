import Glibc
import Primitives

// Closing connections (after their output, or at once) and the graceful drain at shutdown.

extension Reactor {
    /// Graceful stop: no new connections, every client told, output flushed (bounded).
    func beginDrain() {
        draining = true
        drainDeadline = Clock.monoNanos() + UInt64(config.drainTimeoutMs) * 1_000_000
        // The listener stays open so load balancers can read /health (503 now); a new chat
        // connection is told to go away as soon as its first bytes show it is not HTTP (one
        // whose first line is still being sniffed may be HTTP: no JSON for it yet).
        for case let c? in connections where !c.closing && c.framing != .http && !c.isSniffingRequestLine {
            sendShutdownNotice(c)
        }
    }

    func sendShutdownNotice(_ c: Connection) {
        if c.framing == .jsonLines || c.framing == .binary || c.framing == .undetermined || c.framing == .webSocket {
            reply(to: c) { b in b.append("{\"type\":\"shutdown\"}") }
        }
        closeAfterFlush(c)
    }

    /// No more input is processed; the connection closes once its output is sent.
    func closeAfterFlush(_ c: Connection, grace: UInt64? = nil) {
        if c.closing { return }
        // A WebSocket peer is told with a close frame, written at the end of the turn behind
        // everything queued before it; 1001 unless a caller asked for a precise code.
        if c.framing == .webSocket { requestClose(c, WebSocketCloseCode.goingAway.rawValue, "") }
        c.lifecycle = .closing
        let drainNanos: UInt64 = UInt64(config.drainTimeoutMs) * 1_000_000
        let wait: UInt64 = grace ?? drainNanos
        c.extras.forceCloseAt = turnNanos &+ wait
        notifyClosed(c)
        markForFlush(c)
    }

    /// Every processor (and the core) learns the connection is going away, once.
    func notifyClosed(_ c: Connection) {
        for p in plugins { p.connectionClosed(c, self) }
        core.connectionClosed(c, self)
    }

    /// Closes without flushing (queued output is dropped).
    func closeNow(_ c: Connection) {
        if !c.closing {
            c.lifecycle = .closing
            notifyClosed(c)
        }
        c.dropQueuedOutput(pool: pool)
        startClose(c)
    }

    func startClose(_ c: Connection) {
        if c.closeStarted { return }
        c.dropInput()
        backend.close(c)
    }
}
