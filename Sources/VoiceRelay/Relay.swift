import Primitives
import CLinux
import Glibc
import Synchronization

public struct RelayError: Error, CustomStringConvertible {
    public let description: String
}

/// The voice relay (`tcpserver-voice`): one thread per core, each with its own SO_REUSEPORT UDP
/// socket on the same port, io_uring or epoll (`--io`, probed as the TCP server does).
/// docs/protocol.md ("Voice") has the packet format, docs/deployment.md how to run it.
public final class VoiceRelay: @unchecked Sendable {
    public let config: RelayConfig
    public private(set) var port = 0
    public private(set) var statsPort = 0
    public private(set) var ioMode = "epoll"
    /// Why `--io auto` fell back to epoll, if it did.
    public private(set) var fallbackReason: String?
    public private(set) var threadCount = 0

    private let table: ChannelTable
    private var board = RelayStatsBoard(threads: 0)
    private let stopFlag = RelayFlag()
    private var fds: [Int32] = []
    private var threads: [pthread_t] = []
    private var stats: RelayStatsServer?

    public init(config: RelayConfig) {
        self.config = config
        table = ChannelTable(maxMembers: config.maxMembers)
    }

    /// Whether io_uring can run the relay here, and if not, why: the TCP server's probe (ring
    /// flags, provided-buffer rings) plus RECVMSG and SENDMSG; multishot recvmsg needs 6.0.
    public static func probeUring() -> String? {
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let nums = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        if nums.count == 2, nums[0] < 6 { return "kernel \(release) is older than 6.0 (multishot recvmsg)" }
        var why = [CChar](repeating: 0, count: 256)
        if clinux_probe(&why, UInt(why.count)) != 0 {
            return why.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
        var ring = io_uring()
        var flags: UInt32 = 0
        guard clinux_queue_init(&ring, 8, &flags) == 0 else { return "io_uring_setup failed" }
        defer { io_uring_queue_exit(&ring) }
        if clinux_opcode_supported(&ring, Int32(IORING_OP_RECVMSG.rawValue)) == 0 { return "io_uring opcode RECVMSG unsupported" }
        if clinux_opcode_supported(&ring, Int32(IORING_OP_SENDMSG.rawValue)) == 0 { return "io_uring opcode SENDMSG unsupported" }
        return nil
    }

    /// Binds every thread's socket and the stats port, starts the threads; returns once they run.
    public func start() throws(RelayError) {
        signal(SIGPIPE, SIG_IGN)
        switch config.io {
        case .epoll: ioMode = "epoll"
        case .uring:
            if let why = Self.probeUring() {
                throw RelayError(description: "io_uring is unusable here: \(why); run with --io epoll (or --io auto)")
            }
            ioMode = "uring"
        case .auto:
            fallbackReason = Self.probeUring()
            ioMode = fallbackReason == nil ? "uring" : "epoll"
        }
        threadCount = min(64, config.threads > 0 ? config.threads : Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        board = RelayStatsBoard(threads: threadCount)
        do {
            // As the TCP server: a plain bind first, so a second relay on the port fails
            // instead of silently taking part of the traffic through SO_REUSEPORT.
            if config.port != 0 { try UDPSocket.checkPortFree(host: config.host, port: config.port) }
            var p = config.port
            for _ in 0..<threadCount {
                let fd = try UDPSocket.bind(host: config.host, port: p)
                fds.append(fd)
                if p == 0 { p = UDPSocket.localPort(fd) }
            }
            port = p
        } catch {
            for fd in fds { close(fd) }
            fds = []
            throw RelayError(description: "cannot bind udp \(config.host):\(config.port): \(error)")
        }
        if config.statsPort >= 0 {
            do {
                let s = try RelayStatsServer(port: config.statsPort) { [unowned self] path in self.render(path) }
                statsPort = s.port
                stats = s
            } catch {
                stop()
                throw RelayError(description: "cannot listen for stats on 127.0.0.1:\(config.statsPort): \(error)")
            }
        }
        let failures = Locked<[String]>([])
        let started = RelayCount()
        for i in 0..<threadCount {
            let core = RelayCore(index: i, table: table, board: board, config: config)
            let fd = fds[i], mode = ioMode, buffers = config.recvBuffers, stop = stopFlag
            threads.append(startThread {
                if mode == "uring" {
                    do {
                        let loop = try UringRelayLoop(fd: fd, core: core, buffers: buffers, stop: stop)
                        started.increment()
                        loop.run()
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                        started.increment()
                    }
                } else {
                    do {
                        let loop = try EpollRelayLoop(fd: fd, core: core, stop: stop)
                        started.increment()
                        loop.run()
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                        started.increment()
                    }
                }
            })
        }
        while started.current < threadCount { usleep(1000) }
        if let f = failures.withLock({ $0.first }) {
            stop()
            throw RelayError(description: "relay thread set-up failed: \(f)")
        }
    }

    /// Stops the threads (each notices within 100 ms) and closes the sockets.
    public func stop() {
        stopFlag.set()
        for t in threads { pthread_join(t, nil) }
        threads = []
        stats?.stop()
        stats = nil
        for fd in fds { close(fd) }
        fds = []
    }

    /// The counters of every thread as last published (at most 100 ms old).
    public func snapshot() -> RelayStatsSnapshot {
        let t = board.total()
        let (channels, members) = table.census()
        var drops: [String: UInt64] = [:]
        for r in DropReason.allCases { drops[r.name] = t.drops[r.rawValue] }
        return RelayStatsSnapshot(channels: channels, members: members, packetsIn: t.packetsIn, packetsOut: t.packetsOut,
                                  bytesIn: t.bytesIn, bytesOut: t.bytesOut, joins: t.joins, rebinds: t.rebinds,
                                  acks: t.acks, revocations: t.revocations, idleUnbinds: t.idleUnbinds, drops: drops,
                                  latencyP50Micros: LatencyBuckets.quantileMicros(t.latency, 0.5),
                                  latencyP99Micros: LatencyBuckets.quantileMicros(t.latency, 0.99),
                                  cpuSeconds: RelayClock.processCPUSeconds(), kernel: KernelUDPCounters.read())
    }

    private func render(_ path: String) -> (status: Int, type: String, body: String)? {
        switch path {
        case "/stats": return (200, "application/json", snapshot().json(io: ioMode, threads: threadCount, port: port))
        case "/metrics": return (200, "text/plain; version=0.0.4", snapshot().prometheus())
        default: return nil
        }
    }
}
