import Primitives
import CLinux
import Glibc
import Synchronization

public enum IOMode: String, Sendable {
    case uring, epoll
}

/// State every reactor can see. Everything mutable in here is atomic or behind its own lock.
package final class ServerShared: @unchecked Sendable {
    let config: ServerConfig
    let ioMode: IOMode
    let rooms: RoomDirectory
    let factories: [ProcessorFactory]
    let flags: FeatureFlags
    let monitor: PerformanceMonitor
    let metrics = MetricsExporter()
    let logger: Logger
    let startedAt = Clock.monoNanos()
    let stopping = Atomic<Bool>(false)
    /// Set on SIGTERM/SIGINT: reactors stop accepting, tell clients, flush and exit.
    let draining = Atomic<Bool>(false)
    /// Room history bytes across rooms: each reactor adds what it appended minus what it
    /// evicted once a second (never per message), so `history_max_bytes` is judged per second.
    let historyBytes = Atomic<Int>(0)
    /// Open connections across reactors; touched only on accept and release.
    let connectionCount = Atomic<Int>(0)
    /// Open connections per source address; touched only on accept and release.
    private let perAddress = Locked<[UInt32: Int]>([:])
    /// Filled before any reactor thread starts, read-only afterwards.
    package var reactors: [Reactor] = []
    /// Voice channels by room, for every reactor's VoiceCoordinator.
    let voice: VoiceChannels
    /// Cluster mode's link to the other nodes (nil when cluster=off).
    var cluster: ClusterNode?
    /// handoff[source][target]: the SPSC rings carrying room messages between reactors.
    var handoff: [[HandoffRing?]] = []

    package init(config: ServerConfig, ioMode: IOMode, reactorCount: Int, factories: [ProcessorFactory],
         flags: FeatureFlags, logger: Logger) {
        self.config = config
        self.ioMode = ioMode
        self.rooms = RoomDirectory(reactorCount: reactorCount)
        self.factories = factories
        self.flags = flags
        self.logger = logger
        voice = VoiceChannels(relays: config.voiceRelays)
        monitor = PerformanceMonitor(logger: logger)
        handoff = (0..<reactorCount).map { s in
            (0..<reactorCount).map { t in s == t ? nil : HandoffRing(capacity: 256 << 10) }
        }
    }

    enum Admission { case admitted, serverFull, tooManyFromAddress }

    /// Counts a new connection in, or says which limit refuses it.
    func admit(peerIP: UInt32) -> Admission {
        let n = connectionCount.add(1, ordering: .relaxed).newValue
        if n > config.maxConnections {
            connectionCount.subtract(1, ordering: .relaxed)
            return .serverFull
        }
        let ok = perAddress.withLock { m in
            let k = m[peerIP, default: 0]
            if config.maxConnectionsPerIP > 0 && k >= config.maxConnectionsPerIP { return false }
            m[peerIP] = k + 1
            return true
        }
        if !ok {
            connectionCount.subtract(1, ordering: .relaxed)
            return .tooManyFromAddress
        }
        return .admitted
    }

    func connectionClosed(peerIP: UInt32) {
        connectionCount.subtract(1, ordering: .relaxed)
        perAddress.withLock { m in
            if let k = m[peerIP] { m[peerIP] = k > 1 ? k - 1 : nil }
        }
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public let description: String
}

/// The server: resolves the io mode, binds one SO_REUSEPORT listener per reactor, and runs one
/// reactor thread per core.
public final class Server: @unchecked Sendable {
    public static let version = "0.1.0"

    public let config: ServerConfig
    public private(set) var port: Int = 0
    public private(set) var ioMode: IOMode = .epoll
    public private(set) var threadCount = 0
    /// Why `--io auto` fell back to epoll, if it did.
    public private(set) var fallbackReason: String?
    public let logger: Logger
    private var factories: [ProcessorFactory] = [{ ChatRoomPlugin($0) }, { VoiceCoordinator($0) }]
    private var shared: ServerShared?
    private var threads: [pthread_t] = []

    private let logSink: LogSink

    public init(config: ServerConfig) {
        self.config = config
        logSink = LogSink(file: config.logFile.isEmpty ? nil
            : LogSink.FileSettings(path: config.logFile, maxBytes: config.logMaxBytes, keep: config.logKeep))
        logger = Logger(level: config.logLevel, sink: logSink)
    }

    deinit { logSink.close() }

    /// Writes out queued log lines and stops the log writer (call before `exit`).
    public func closeLog() { logSink.close() }

    /// Appends a processor to the chain (after the built-in chat rooms plugin, before the
    /// core fallback). Call before `start`. The factory runs once per reactor.
    public func register(_ factory: @escaping ProcessorFactory) {
        factories.append(factory)
    }

    /// Whether io_uring can run the reactor here, and if not, why.
    public static func probeUring() -> String? {
        let (major, minor) = SystemInfo.kernelVersion
        if major < 5 || (major == 5 && minor < 19) {
            return "kernel \(SystemInfo.kernelRelease) is older than 5.19 (multishot accept/recv and buffer rings)"
        }
        var why = [CChar](repeating: 0, count: 256)
        if clinux_probe(&why, UInt(why.count)) != 0 {
            return why.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
        return nil
    }

    /// Binds and starts every reactor; returns once all of them are listening.
    public func start() throws(ServerError) {
        precondition(shared == nil, "start() called twice")
        signal(SIGPIPE, SIG_IGN)
        switch config.io {
        case .epoll:
            ioMode = .epoll
        case .uring:
            if let why = Self.probeUring() {
                throw ServerError(description: "io_uring is unusable here: \(why); run with --io epoll (or --io auto)")
            }
            ioMode = .uring
        case .auto:
            if let why = Self.probeUring() {
                fallbackReason = why
                logger.warning("io_uring unavailable, falling back to epoll", ["reason": why])
                ioMode = .epoll
            } else {
                ioMode = .uring
            }
        }
        threadCount = min(64, config.threads > 0 ? config.threads : SystemInfo.onlineCPUs)
        // Protected mode (as Redis): without auth_token, only loopback unless told otherwise.
        if config.authToken.isEmpty && !config.host.hasPrefix("127.") && !config.allowUnauthenticatedPublic {
            throw ServerError(description: "refusing to listen on \(config.host) without auth_token: set auth_token, bind 127.0.0.1, or set allow_unauthenticated_public=true")
        }

        // Listeners first (on this thread) so a bind error is reported before anything runs;
        // port 0 resolves on the first bind and the rest share it through SO_REUSEPORT.
        var fds: [Int32] = []
        do {
            // SO_REUSEPORT would let a second server (same user) join our port and silently
            // take half the connections. A plain bind first fails with EADDRINUSE if anyone
            // listens there already, as Redis or NATS would.
            if config.port != 0 { try Socket.checkPortFree(host: config.host, port: config.port) }
            var p = config.port
            for _ in 0..<threadCount {
                let fd = try Socket.listen(host: config.host, port: p)
                fds.append(fd)
                if p == 0 { p = Socket.localPort(fd) }
            }
            port = p
        } catch {
            for fd in fds { Glibc.close(fd) }
            throw ServerError(description: "cannot listen on \(config.host):\(config.port): \(error)")
        }

        let shared = ServerShared(config: config, ioMode: ioMode, reactorCount: threadCount, factories: factories,
                                  flags: FeatureFlags.from(config), logger: logger)
        // Before the reactors: their plugins take the cluster link when they are created.
        if config.cluster == "redis" {
            let node = ClusterNode(config: config, logger: logger, rooms: shared.rooms) { [weak shared] in
                shared?.reactors ?? []
            }
            shared.cluster = node
            node.start()
            logger.info("cluster mode", ["node_id": node.nodeId, "redis": "\(config.redisHost):\(config.redisPort)"])
        }
        do {
            for i in 0..<threadCount {
                shared.reactors.append(try Reactor(index: i, shared: shared, listenFD: fds[i]))
            }
        } catch {
            for fd in fds { Glibc.close(fd) }
            throw ServerError(description: "cannot create reactor: \(error)")
        }
        self.shared = shared

        let ready = Latch(count: threadCount)
        let setupErrors = Locked<[String]>([])
        for r in shared.reactors {
            let t = spawnThread(name: "reactor-\(r.index)") {
                do {
                    try r.setUp()
                } catch {
                    setupErrors.withLock { $0.append("reactor \(r.index): \(error)") }
                    ready.countDown()
                    return
                }
                ready.countDown()
                r.run()
            }
            threads.append(t)
        }
        ready.wait()
        let errors = setupErrors.withLock { $0 }
        if !errors.isEmpty {
            stop()
            throw ServerError(description: "reactor set-up failed: " + errors.joined(separator: "; "))
        }
        logger.info("tcpserver started", [
            "version": Self.version, "io": ioMode.rawValue, "threads": String(threadCount),
            "kernel": SystemInfo.kernelRelease, "address": "\(config.host):\(port)",
        ])
        if ioMode == .uring {
            let t = UringTechniques.describe(config)
            logger.info("io_uring techniques", ["uring_recv_bundle": t.recvBundle, "uring_buf_incremental": t.bufIncremental,
                                                "uring_direct_descriptors": t.directDescriptors,
                                                "fixed_file_slots": String(UringTechniques(config, reactors: threadCount).fixedFiles)])
        }
    }

    /// Graceful stop: stop accepting, send every client `{"type":"shutdown"}`, flush queued
    /// output for at most `drain_timeout_ms`, close, join the threads.
    public func drainAndStop() {
        guard let shared else { return }
        shared.draining.store(true, ordering: .releasing)
        for r in shared.reactors { r.inbox.wake() }
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
        stop()
    }

    /// Stops every reactor at once, closes every connection, and joins the threads.
    public func stop() {
        guard let shared else { return }
        shared.cluster?.stop()
        shared.stopping.store(true, ordering: .releasing)
        for r in shared.reactors { r.inbox.wake() }
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
        shared.reactors.removeAll()
        self.shared = nil
    }

    /// Open connections right now (all reactors).
    public var connectionCount: Int { shared?.connectionCount.load(ordering: .relaxed) ?? 0 }
}

/// Starts a pthread running `body` with SIGINT/SIGTERM blocked (the main thread takes signals).
func spawnThread(name: String, _ body: @escaping () -> Void) -> pthread_t {
    final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
    let arg = Unmanaged.passRetained(Box(body)).toOpaque()
    var tid = pthread_t()
    var set = sigset_t()
    var old = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    sigaddset(&set, SIGTERM)
    pthread_sigmask(SIG_BLOCK, &set, &old)
    let rc = pthread_create(&tid, nil, { p in
        let box = Unmanaged<Box>.fromOpaque(p!).takeRetainedValue()
        box.body()
        return nil
    }, arg)
    pthread_sigmask(SIG_SETMASK, &old, nil)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    _ = name
    return tid
}
