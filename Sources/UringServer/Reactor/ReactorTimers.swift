import CLinux
import Glibc
import Primitives

// The reactor's timers: the 100 ms tick (timeouts, batched-wait policy) and the once-a-second
// work (stats snapshot, monitor, idle memory going back).

extension Reactor {
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
            historySecond(now)
            counters.zeroCopySends = backend.counters.zeroCopySends
            counters.zeroCopyCopied = backend.counters.zeroCopyCopied
            var snap = window.roll(&counters, index: index, connections: liveConnections)
            snap.openPipes = pipes?.openPipes ?? 0
            snap.backlogged = backloggedConnections(now)
            snap.batchedWait = gatherWaits && backendGathers
            snapshots.publish(snap)
            if index == 0 { shared.monitor.evaluate(shared) }
            // Size classes nobody uses any more go back to the system (after a burst).
            let released = pool.trim() + blocksPool.releaseIfIdle()
            backend.releaseIdleMemory()
            releaseIdleHeap(afterFrees: released > 0)
        }
    }

    /// Once a second: reactor 0 expires history and forgets memberless rooms without any;
    /// every reactor publishes its history byte delta and learns whether the server is over
    /// `history_max_bytes`.
    func historySecond(_ now: UInt64) {
        if index == 0 {
            let (evicted, _, freed) = shared.rooms.sweep(historyLimits, nowSecond: UInt32(truncatingIfNeeded: now / 1_000_000_000))
            counters.historyEvictions &+= evicted
            counters.historyBytesDelta &-= freed
        }
        let delta = counters.historyBytesDelta - historyBytesPublished
        historyBytesPublished = counters.historyBytesDelta
        let total = delta == 0 ? shared.historyBytes.load(ordering: .relaxed)
            : shared.historyBytes.add(delta, ordering: .relaxed).newValue
        historyOverBudget = total > config.historyMaxBytes
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
        _ = clinux_malloc_trim()
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
        gatherWaits = !config.waitBatchAuto || (messages >= 200 && deliveries >= 4 * messages)
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
}
