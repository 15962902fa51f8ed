/// A backend with no kernel behind it: tests and the fuzzer hand bytes to the reactor as if
/// they had been received, and read back what it sent. Sends complete at once; closes release
/// at once. (TigerBeetle's approach: the same reactor code, driven one step at a time.)
import Glibc
import Primitives

final class MemoryBackend: IOBackend {
    /// What each connection was sent, by connection slot.
    var sent: [Int: [UInt8]] = [:]
    var closedSlots: Set<Int> = []
    private var released: [Connection] = []

    func addListener(fd: Int32) throws(SyscallError) {}
    func addWakeup(_ target: WakeTarget) throws(SyscallError) {}
    func wake(_ peer: WakeTarget) {}
    /// Accepts turned away (`refuse`), with the message each was sent.
    var refused: [[UInt8]] = []
    func refuse(fd: Int32, _ message: UnsafeRawBufferPointer) { refused.append(Array(message)) }
    let counters = KernelCounters()

    func startReceiving(_ c: Connection) {
        c.ops.recv = .inFlight
        closedSlots.remove(Int(c.slot))   // a reused slot is a new, open connection
        sent[Int(c.slot)] = nil
    }

    /// Drop output instead of collecting it (for allocation benchmarks of the message path).
    var discardOutput = false

    /// The reactor's pool, which shared message blocks go back to.
    var pool: BufferPool!

    func send(_ c: Connection) {
        if discardOutput {
            c.dropQueuedOutput(pool: pool)
            return
        }
        if let b = c.output.blocks, !b.pointee.out.isEmpty {
            // Gather own bytes and shared blocks in queue order, as sendmsg would.
            while c.hasQueuedOutput {
                let (n, total) = b.pointee.out.fill(b.pointee.iov, max: OutputBlocks.iovCapacity, own: c.output.out.readable)
                for i in 0..<n {
                    let v = b.pointee.iov[i]
                    sent[Int(c.slot), default: []].append(contentsOf: UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len))
                }
                c.consumeQueued(total, pool: pool)
            }
            return
        }
        sent[Int(c.slot), default: []].append(contentsOf: c.output.out.readable)
        c.output.out.removeAll()
    }

    func close(_ c: Connection) {
        c.ops.recv = .idle
        c.lifecycle = .released
        closedSlots.insert(Int(c.slot))
        released.append(c)
    }

    @discardableResult
    func poll(timeoutMillis: Int32, gather: Bool, handler: IOEventHandler) -> Bool {
        let r = released
        released.removeAll()
        for c in r { handler.connectionReleased(c) }
        return false
    }

    func releaseIdleMemory() {}   // one small scratch buffer: nothing worth giving back

    func shutdown() {}
}

/// Drives one reactor over a `MemoryBackend`: the protocol, the plugin chain and the rooms with
/// no sockets and no threads. Used by unit tests and by the libFuzzer target.
public final class ProtocolHarness {
    let shared: ServerShared
    let reactor: Reactor
    private let backend = MemoryBackend()
    private var nextFD: Int32 = 1_000_000

    public init(config: ServerConfig = ServerConfig(), plugins: [ProcessorFactory] = []) {
        var config = config
        config.threads = 1
        config.logFile = ""
        shared = ServerShared(config: config, ioMode: .epoll, reactorCount: 1,
                              factories: [{ ChatRoomPlugin($0) }] + plugins,
                              flags: FeatureFlags.from(config), logger: Logger(level: .error))
        reactor = try! Reactor(index: 0, shared: shared, listenFD: -1)
        shared.reactors = [reactor]
        reactor.attach(backend: backend)
        backend.pool = reactor.pool
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
    public var deliveries: Int { reactor.counters.deliveries }
    public var errorsSent: Int { reactor.counters.errorsSent }

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

    private func step() {
        reactor.endTurnForTesting()
        backend.poll(timeoutMillis: 0, gather: false, handler: reactor)
    }
}
