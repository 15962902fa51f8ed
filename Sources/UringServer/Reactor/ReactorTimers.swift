import CURing
import Glibc
import Optimizers
import Synchronization

/// The reactor's 100 ms tick and one-second housekeeping: timeouts, idle memory, stats
/// snapshots, the monitor, batched-wait adaptation.
extension Reactor {
    // MARK: timers

    func tick(_ now: UInt64) {
        nextTickNanos = now + 100_000_000
        adaptBatchedWait()
        checkTimeouts(now)
        if now >= nextSecondNanos {
            nextSecondNanos += 1_000_000_000
            wallOffsetMillis = Clock.wallOffsetMillis()
            if nextSecondNanos < now { nextSecondNanos = now + 1_000_000_000 }
            releaseIdleInput()
            pipes?.releaseIdle()
            var snap = window.roll(&counters, index: index, connections: liveConnections)
            snap.openPipes = pipes?.openPipes ?? 0
            snap.backlogged = backloggedConnections(now)
            snap.batchedWait = backend.batchedWait
            snapshots.publish(snap)
            if index == 0 { shared.monitor.evaluate(shared) }
            // Size classes nobody uses any more go back to the system (after a burst).
            let released = pool.trim() + blocksPool.releaseIfIdle()
            backend.releaseIdleMemory()
            releaseIdleHeap(afterFrees: released > 0)
        }
    }

    /// After a second without input, free heap memory goes back to the system: a burst
    /// (connections joining, presence fan-out) leaves freed blocks in the malloc arena that
    /// glibc keeps resident otherwise. On the first idle second, and again on an idle second
    /// in which the pools freed something; a busy reactor never pays for it.
    func releaseIdleHeap(afterFrees: Bool) {
        defer { bytesInAtLastSecond = counters.bytesIn }
        guard counters.bytesIn == bytesInAtLastSecond else { heapTrimmed = false; return }
        if heapTrimmed && !afterFrees { return }
        heapTrimmed = true
        // Per-turn work lists keep the capacity of the largest fan-out (a presence diff to
        // 5,000 members: 80 KB); an idle reactor starts small again.
        if flushList.capacity > 1024 {
            flushList = []
            flushOrigins = []
        }
        _ = curing_malloc_trim()
    }

    /// Partial-message buffers stay with a connection while lines keep arriving split across
    /// receives (with 4 KiB provided buffers every message over 4 KiB is: freeing the buffer
    /// after each one was a malloc per message); once a second the empty ones go back.
    func releaseIdleInput() {
        for case let c? in connections {
            c.extrasIfPresent?.input.releaseIfEmpty()
        }
    }

    /// `wait_batch_auto`: a minimum wait pays where each message fans out to many sends (the
    /// wait gathers several messages per wakeup for every recipient), and costs where each
    /// message gets one reply. Judged every tick (100 ms) on the tick before: at least 200
    /// room messages (2,000/s) and 4 deliveries per message.
    func adaptBatchedWait() {
        let messages = roomMessages &- lastRoomMessages
        let deliveries = counters.deliveries &- lastDeliveries
        lastRoomMessages = roomMessages
        lastDeliveries = counters.deliveries
        guard config.waitBatch > 1 else { return }
        backend.setBatchedWait(!config.waitBatchAuto || (messages >= 200 && deliveries >= 4 * messages))
    }

    /// Connections whose oldest queued output has waited over 50 ms: demand the server is not
    /// keeping up with (the monitor judges throughput only then).
    func backloggedConnections(_ now: UInt64) -> Int {
        var n = 0
        for case let c? in connections where c.sendInFlight && c.sendStartedMs != 0 && Connection.elapsedMs(c.sendStartedMs, now) > 50 {
            n += 1
        }
        return n
    }

    func checkTimeouts(_ now: UInt64) {
        let helloMs = UInt64(config.helloTimeoutMs)
        let idleMs = UInt64(config.idleTimeoutMs)
        let softNs = UInt64(config.outboundSoftSeconds) * 1_000_000_000
        for case let c? in connections where c.closing && !c.closeStarted && now > c.forceCloseAt {
            closeNow(c)   // its peer stopped reading what we still had to say
        }
        for case let c? in connections where !c.closing {
            // Idle connections hold no buffers: give back output memory a second after the
            // last send (busy ones keep theirs, so steady traffic does not allocate).
            if !c.sendInFlight && !c.hasQueuedOutput && c.sendingIsEmpty && Connection.elapsedMs(c.lastOutputMs, now) > 1000 {
                c.releaseOutput(pool: pool, blocksPool: blocksPool)
            }
            // An HTTP head (or a first line that may become one) has a deadline of its own and
            // never takes the JSON hello/idle path below: 408 for HTTP, a silent close while
            // undecided, so a slowloris client holds a connection for seconds, not minutes.
            if c.framing == .http || c.isSniffingRequestLine {
                if Connection.elapsedMs(c.acceptedMs, now) > UInt64(config.httpHeaderTimeoutMs) {
                    limitHit("http_header_timeout")
                    if c.framing == .http { sendHTTP(c, HTTPRouter.requestTimeout(), since: now) } else { closeNow(c) }
                }
                continue
            }
            if !c.isAuthenticated && c.framing != .http && Connection.elapsedMs(c.acceptedMs, now) > helloMs {
                limitHit("hello_timeout")
                sendError(c, .helloTimeout, "no hello within \(config.helloTimeoutMs) ms", id: nil)
                closeAfterFlush(c)
                continue
            }
            if c.overSoftSince != 0 && now &- c.overSoftSince > softNs {
                cutSlowConsumer(c, "output over outbound_soft_bytes for \(config.outboundSoftSeconds) s")
                continue
            }
            if idleMs > 0 && Connection.elapsedMs(c.lastReceiveMs, now) > idleMs {
                if Connection.elapsedMs(c.lastReceiveMs, now) > 2 * idleMs {
                    limitHit("idle_timeout")
                    sendError(c, .idleTimeout, "no traffic for \(2 * config.idleTimeoutMs) ms", id: nil)
                    closeAfterFlush(c)
                } else if !c.idlePingSent {
                    c.idlePingSent = true
                    reply(to: c) { b in
                        b.append("{\"type\":\"ping\",\"ts\":")
                        b.appendDecimal(wallMillis())
                        b.append("}")
                    }
                }
            }
        }
    }

    func limitHit(_ name: String) {
        counters.limitHits[name, default: 0] += 1
    }
}
