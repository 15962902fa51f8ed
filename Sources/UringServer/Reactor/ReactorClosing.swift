import CURing
import Glibc
import Optimizers
import Synchronization

/// Draining, closing and slow-consumer cuts.
extension Reactor {
    // MARK: shutdown

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
        if c.framing == .jsonLines || c.framing == .binary || c.framing == .undetermined {
            reply(to: c) { b in b.append("{\"type\":\"shutdown\"}") }
        }
        closeAfterFlush(c)
    }

    // MARK: closing

    /// No more input is processed; the connection closes once its output is sent.
    func closeAfterFlush(_ c: Connection, grace: UInt64? = nil) {
        if c.closing { return }
        c.closing = true
        let drainNanos: UInt64 = UInt64(config.drainTimeoutMs) * 1_000_000
        let wait: UInt64 = grace ?? drainNanos
        c.extras.forceCloseAt = turnNanos &+ wait
        c.closeAfterFlush = true
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
            c.closing = true
            notifyClosed(c)
        }
        c.closeAfterFlush = true
        c.dropQueuedOutput(pool: pool)
        startClose(c)
    }

    func startClose(_ c: Connection) {
        if c.closeStarted { return }
        c.dropInput()
        backend.close(c)
    }

    /// Drops what a consumer has not read and closes it with slow_consumer. Found while a
    /// message is being fanned out, so the cut itself waits for the end of the turn (closing
    /// announces user_left, which must not re-enter the fan-out in progress).
    func cutSlowConsumer(_ c: Connection, _ why: String) {
        if c.cutReason != nil || c.closing { return }
        c.extras.cutReason = why
        pendingCuts.append(c)
    }

    func performCuts() {
        let cuts = pendingCuts
        pendingCuts.removeAll(keepingCapacity: true)
        for c in cuts where !c.closing {
            limitHit("slow_consumer")
            // Drop what the consumer has not read and queue the error. It is not reading, so
            // the flush gets a short grace period before the close is forced.
            c.dropQueuedOutput(pool: pool)
            c.overSoftSince = 0
            sendError(c, .slowConsumer, c.cutReason ?? "slow consumer", id: nil)
            closeAfterFlush(c, grace: 250_000_000)
        }
    }
}
