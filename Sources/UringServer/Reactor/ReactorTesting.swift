import Primitives

// What UringServerTesting's ProtocolHarness may do with a reactor (package access): run it over
// a MemoryBackend, one turn at a time, with no thread and no sockets.

extension Reactor {
    package func attach(_ backend: MemoryBackend) {
        self.backend = backend
        backend.pool = pool
    }

    /// A new connection from a made-up fd (the memory backend never touches it); its slot.
    package func acceptForTesting(fd: Int32) -> Int {
        turnNanos = Clock.monoNanos()
        connectionAccepted(AcceptedSocket(fd: fd, peerIPv4: 0))
        return lastAcceptedSlot
    }

    package func connection(_ slot: Int) -> Connection? { slot < connections.count ? connections[slot] : nil }

    /// Ends the turn (queued output is "sent") and delivers what the backend released.
    package func stepForTesting() {
        endTurn()
        turnNanos = Clock.monoNanos()
        batchNanos = 0
        backend.poll(timeoutMillis: 0, gather: false, handler: self)
    }

    package var deliveriesForTesting: Int { counters.deliveries }
    package var errorsSentForTesting: Int { counters.errorsSent }
}
