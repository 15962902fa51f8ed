import CLinux
import Glibc
import Primitives

// Hooks for ProtocolHarness (driving one reactor over MemoryBackend, no sockets).

extension Reactor {
    func attach(backend: IOBackend) { self.backend = backend }

    func acceptForTesting(fd: Int32) -> Int {
        turnNanos = Clock.monoNanos()
        connectionAccepted(AcceptedSocket(fd: fd, peerIPv4: 0))
        return lastAcceptedSlot
    }

    func connection(_ slot: Int) -> Connection? { slot < connections.count ? connections[slot] : nil }

    func endTurnForTesting() {
        endTurn()
        turnNanos = Clock.monoNanos()
        batchNanos = 0
    }
}
