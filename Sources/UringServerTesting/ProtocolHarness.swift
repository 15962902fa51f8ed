import Primitives
import UringServer

/// Drives one reactor over a `MemoryBackend`: the protocol, the plugin chain and the rooms with
/// no sockets and no threads. Used by unit tests and by the libFuzzer target.
public final class ProtocolHarness {
    private let shared: ServerShared
    private let reactor: Reactor
    private let backend = MemoryBackend()
    private var nextFD: Int32 = 1000

    public init(config: ServerConfig = ServerConfig(), plugins: [ProcessorFactory] = []) {
        var config = config
        config.threads = 1
        config.logFile = ""
        shared = ServerShared(config: config, ioMode: .epoll, reactorCount: 1,
                              factories: [{ ChatRoomPlugin($0) }] + plugins,
                              flags: FeatureFlags.from(config), logger: Logger(level: .error))
        reactor = try! Reactor(index: 0, shared: shared, listenFD: -1)
        shared.reactors = [reactor]
        reactor.attach(backend)
    }

    /// ServerShared and the reactor point at each other; the server breaks that at stop(),
    /// the harness when it goes away.
    deinit { shared.reactors.removeAll() }

    /// A new client connection; returns its id.
    public func connect() -> Int {
        nextFD += 1
        return reactor.acceptForTesting(fd: nextFD)
    }

    /// Hands `bytes` to connection `id` as one receive, then runs the end of the turn.
    public func feed(_ id: Int, _ bytes: [UInt8]) {
        guard let c = reactor.connection(id), !c.closeStarted else { return }
        bytes.withUnsafeBytes { reactor.connectionReceived(c, $0) }
        step()
    }

    /// The peer closed connection `id`.
    public func disconnect(_ id: Int) {
        guard let c = reactor.connection(id), !c.closeStarted else { return }
        reactor.connectionReceiveEnded(c, error: 0)
        step()
    }

    /// Everything connection `id` has been sent since the last call.
    public func takeOutput(_ id: Int) -> [UInt8] {
        defer { backend.sent[id] = nil }
        return backend.sent[id] ?? []
    }

    public func isClosed(_ id: Int) -> Bool { backend.closedSlots.contains(id) }

    public var openConnections: Int { reactor.liveConnections }

    /// Messages queued to connections so far, and error replies among everything sent.
    public var deliveries: Int { reactor.deliveriesForTesting }
    public var errorsSent: Int { reactor.errorsSentForTesting }

    /// When true, output is counted as sent and dropped, not collected per connection (so a
    /// benchmark sees only the server's own allocations).
    public var discardsOutput: Bool {
        get { backend.discardOutput }
        set { backend.discardOutput = newValue }
    }

    /// Feeds `bytes` to connection `id` as one receive and runs the end of the turn, without
    /// creating an array.
    public func feed(_ id: Int, _ bytes: UnsafeRawBufferPointer) {
        guard let c = reactor.connection(id), !c.closeStarted else { return }
        reactor.connectionReceived(c, bytes)
        step()
    }

    /// Hands `bytes` to connection `id` as one receive without ending the turn: several
    /// receives from different connections can then share one turn (`endTurn()`).
    public func receive(_ id: Int, _ bytes: [UInt8]) {
        guard let c = reactor.connection(id), !c.closeStarted else { return }
        bytes.withUnsafeBytes { reactor.connectionReceived(c, $0) }
    }

    /// Ends the turn: queued output is "sent".
    public func endTurn() { step() }

    private func step() { reactor.stepForTesting() }
}
