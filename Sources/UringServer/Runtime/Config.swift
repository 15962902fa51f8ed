import Glibc

public enum IOModeSetting: String, Sendable, CaseIterable {
    case auto, uring, epoll
}

/// An optional io_uring technique: `auto` uses it where the kernel has it and the measurements
/// kept it (docs/performance.md, "io_uring techniques"), `on` wherever the kernel has it,
/// `off` never (for A/B runs and to rule it out).
public enum UringFeatureSetting: String, Sendable, CaseIterable {
    case auto, on, off
}

/// How connections' sockets get into the ring's fixed-file table (docs/architecture.md,
/// "io_uring techniques"): `accept` accepts straight into it (IORING_FILE_INDEX_ALLOC, no fd
/// unless one is needed), `register` accepts a normal fd and registers it, `off` uses fds only,
/// `auto` the variant docs/performance.md kept. `on` is read as `register` (its earlier name).
public enum UringDescriptorSetting: String, Sendable, CaseIterable {
    case auto, accept, register, off
}

/// Everything the server can be told. Loaded from `.env` (or `--config FILE`), then environment
/// variables (upper-case key, e.g. TCP_PORT), then command-line flags; later sources win.
public struct ServerConfig: Sendable {
    public var host = "127.0.0.1"
    public var port = 4000
    public var io: IOModeSetting = .auto
    /// Reactor threads; 0 means one per online CPU.
    public var threads = 0
    public var maxFrameBytes = 65536
    public var maxConnections = 10000
    public var presence = true
    /// Rooms with more members than this get presence as one batched `presence` diff per
    /// `presenceIntervalMs` instead of a notice per join/leave (docs/protocol.md, "Presence").
    public var presenceMaxMembers = 200
    public var presenceIntervalMs = 1000
    /// Room history (docs/protocol.md, "Recovery"): the last `historySize` chat lines of a room
    /// (0: none, offsets still count), none older than `historyTTLSeconds`, at most
    /// `historyMaxBytesPerRoom` per room and `historyMaxBytes` in all (line bytes + 24 B each).
    public var historySize = 100
    public var historyTTLSeconds = 300
    public var historyMaxBytesPerRoom = 1 << 20
    public var historyMaxBytes = 256 << 20
    public var redisHost = "127.0.0.1"
    public var redisPort = 6379
    public var logLevel: LogLevel = .info
    /// Submission-queue entries per ring.
    public var ringEntries = 1024
    /// Provided buffers per reactor ring and their size: received bytes land here and are handed
    /// back at once, so idle connections hold no receive memory.
    public var recvBufferCount = 256
    public var recvBufferSize = 4096
    /// Pin reactor i to CPU i (mod the CPU count), so its buffer pool stays on its NUMA node.
    public var pinReactors = true
    /// io_uring mode: sends of at least this many bytes go out with IORING_OP_SEND_ZC (the kernel
    /// reads our pages instead of copying them; 0 disables). See docs/performance.md.
    public var sendZCThreshold = 16384
    /// Fan-out messages of at least this many bytes are rendered once into a shared block that
    /// every recipient's queue references (sendmsg with iovecs) instead of being copied into
    /// each recipient's buffer; 0 copies always. See docs/performance.md.
    public var sharedBlockThreshold = 1024
    /// Room batches of at least this many bytes reach members by tee + splice (0: never): no
    /// kernel copy per member, but below ~32 KB the two extra syscalls per member cost more
    /// than the copy they save (docs/performance.md, "Spliced batches").
    public var spliceThreshold = 32768
    /// io_uring mode (kernel 6.12+, IORING_FEAT_MIN_TIMEOUT): each wait returns once
    /// `waitBatch` completions are ready, or after `waitBatchMicros` if at least one is, so a
    /// busy reactor wakes once per batch instead of once per packet (0 or 1: never).
    public var waitBatch = 32
    public var waitBatchMicros = 50
    /// Batched waiting only while the reactor fans out (over the last 100 ms, at least 200
    /// room messages and 4 deliveries per message): it cuts fan-out p99 but costs
    /// request/response CPU (docs/performance.md, "Batched waiting"). false: whenever
    /// `waitBatch` > 1.
    public var waitBatchAuto = true
    /// io_uring techniques (docs/architecture.md, "io_uring techniques"): multishot receives
    /// that fill several provided buffers per completion (kernel 6.10+); provided buffers
    /// consumed incrementally, so a small message uses only its bytes of a buffer (6.12+).
    public var uringRecvBundle: UringFeatureSetting = .auto
    public var uringBufIncremental: UringFeatureSetting = .auto
    /// Each connection's socket in the ring's fixed-file table, so its operations skip the
    /// per-operation file lookup (IOSQE_FIXED_FILE); accepted into it or registered after the
    /// accept; `uringFixedFiles` slots per reactor (0: sized from RLIMIT_NOFILE and
    /// max_connections). A connection beyond the table uses its fd.
    public var uringDirectDescriptors: UringDescriptorSetting = .auto
    public var uringFixedFiles = 0

    // WebSocket on /ws (docs/protocol.md, "WebSocket")
    /// Origins allowed to open /ws: empty means the page's own host only (Origin's authority
    /// equal to Host); "*" any; else exact origins such as "https://chat.example.com". A
    /// handshake without Origin (not a browser) is always allowed.
    public var wsAllowedOrigins: [String] = []
    /// Test mode (Autobahn): every WebSocket text or binary message is echoed back as it came
    /// instead of being handled as the chat protocol.
    public var wsEcho = false

    // Operations (docs/deployment.md)
    /// Serve /stats and /metrics to non-loopback clients too.
    public var statsPublic = false
    /// Bearer token for /admin routes; empty means the admin routes answer 403.
    public var adminToken = ""
    /// Performance monitor thresholds (docs/deployment.md, "Monitor"). p99 latency: 10 ms: a
    /// reactor's turn includes handing its sends to the kernel (on loopback each send also runs
    /// the receiver's TCP path), so even a light load has a p99 of milliseconds on a small
    /// machine, while real overload shows tens to hundreds of ms as queues grow.
    public var maxLatencyMs = 10.0
    /// The memory breach scales with what the server holds: RSS over maxMemoryMB (the base:
    /// code and start-up state) plus memoryPerReactorMB for each reactor's working memory
    /// (receive ring, pool slabs, compression contexts) plus memoryPerConnectionKB per open
    /// connection (room for a busy one's queued output; an idle one holds far less).
    /// A server crossing it is leaking or queueing without bound (docs/deployment.md, "Monitor").
    public var maxMemoryMB = 15.0
    public var memoryPerReactorMB = 8.0
    public var memoryPerConnectionKB = 32
    public var minThroughput = 10000
    public var maxErrorRate = 0.01
    /// Figures must stay under the thresholds this long before shed flags come back.
    public var monitorHoldMs = 5000
    /// A threshold must be breached at this many consecutive evaluations (one a second) before
    /// features are shed: one noisy second on a shared machine is not an overload.
    public var monitorBreachSeconds = 3
    /// Feature flags (see FeatureFlags.swift).
    public var flagDeclarations: [FlagDeclaration] = [
        FlagDeclaration(name: "enable_chat_rooms", critical: true),
        FlagDeclaration(name: "enable_presence", critical: false),
        FlagDeclaration(name: "enable_compression", critical: false),
        // Critical: shedding it would let calls in progress die at their next token refresh,
        // and its messages are a few per call, nothing the monitor could win back.
        FlagDeclaration(name: "enable_voice", critical: true),
    ]
    /// Log file (empty: stderr only), rotated at `logMaxBytes`, keeping `logKeep` old files.
    public var logFile = "logs/tcpserver.log"
    public var logMaxBytes = 10 << 20
    public var logKeep = 5
    /// On SIGTERM/SIGINT: how long queued output may take to drain before connections close.
    public var drainTimeoutMs = 2000

    // Limits (docs/protocol.md, "Limits")
    public var maxRoomsPerConnection = 100
    public var maxMembersPerRoom = 100_000
    public var maxConnectionsPerIP = 0
    /// Token bucket per connection: sustained messages per second and burst size.
    public var rateLimitPerSec = 1000
    public var rateLimitBurst = 2000
    /// A connection that keeps going over the rate this many times in a row is closed.
    public var rateLimitStrikes = 100
    public var helloTimeoutMs = 5000
    /// From connect until an HTTP request head is complete (or, for a connection whose first
    /// line may still be a request line, until it is decided): past it the connection is
    /// closed, with 408 when it is HTTP, silently when undecided (slowloris).
    public var httpHeaderTimeoutMs = 5000
    /// Idle connections get a ping after this long and are closed after twice it; 0 disables.
    public var idleTimeoutMs = 120_000
    /// Output queued for one connection: a hard cap, and a soft cap that may be exceeded for
    /// at most `outboundSoftSeconds` (Redis's client-output-buffer-limit pubsub 32mb 8mb 60).
    public var outboundHardBytes = 32 << 20
    public var outboundSoftBytes = 8 << 20
    public var outboundSoftSeconds = 10
    public var maxNameBytes = 64
    public var authToken = ""
    public var allowUnauthenticatedPublic = false

    // Compression (binary frames)
    public var compressionThreshold = 512
    public var zstdLevel = 3
    public var lz4Acceleration = 1

    // Voice (docs/deployment.md, "Voice"): the secret shared with the relays, the relays, and
    // how long a token is good for (join_voice refreshes it).
    public var voiceSecret = ""
    public var voiceRelays: [VoiceRelayAddress] = []
    public var voiceTokenTTLSeconds = 60

    // Cluster
    public var cluster = "off"
    public var nodeId = ""

    public init() {}

    /// One entry per config key: the name used in .env and flags, and how to apply a value.
    struct Key {
        let name: String
        let help: String
        let apply: (inout ServerConfig, String) throws(ConfigError) -> Void
    }

    nonisolated(unsafe) static let keys: [Key] = [
        Key(name: "tcp_host", help: "IPv4 address to listen on (default 127.0.0.1)") { c, v throws(ConfigError) in
            c.host = try parseIPv4(v, key: "tcp_host") },
        Key(name: "tcp_port", help: "TCP port, 0 picks a free one (default 4000)") { c, v throws(ConfigError) in
            c.port = try parseInt(v, key: "tcp_port", range: 0...65535) },
        Key(name: "io", help: "auto | uring | epoll (default auto)") { c, v throws(ConfigError) in
            guard let m = IOModeSetting(rawValue: v.lowercased()) else {
                throw ConfigError("invalid value '\(v)' for io: expected auto, uring or epoll")
            }
            c.io = m },
        Key(name: "threads", help: "reactor threads, 0 = online CPUs (default 0)") { c, v throws(ConfigError) in
            c.threads = try parseInt(v, key: "threads", range: 0...256) },
        Key(name: "max_frame_bytes", help: "largest line or frame accepted (default 65536)") { c, v throws(ConfigError) in
            c.maxFrameBytes = try parseInt(v, key: "max_frame_bytes", range: 64...(64 << 20)) },
        Key(name: "max_connections", help: "connections served at once (default 10000)") { c, v throws(ConfigError) in
            c.maxConnections = try parseInt(v, key: "max_connections", range: 1...10_000_000) },
        Key(name: "presence", help: "send user_joined/user_left (default true)") { c, v throws(ConfigError) in
            c.presence = try parseBool(v, key: "presence") },
        Key(name: "presence_max_members", help: "rooms larger than this get batched presence diffs instead of per-event notices (default 200)") { c, v throws(ConfigError) in
            c.presenceMaxMembers = try parseInt(v, key: "presence_max_members", range: 0...10_000_000) },
        Key(name: "presence_interval_ms", help: "how often a large room's presence diff is sent (default 1000)") { c, v throws(ConfigError) in
            c.presenceIntervalMs = try parseInt(v, key: "presence_interval_ms", range: 10...60_000) },
        Key(name: "history_size", help: "chat lines kept per room for recovery, 0 = none (offsets still count) (default 100)") { c, v throws(ConfigError) in
            c.historySize = try parseInt(v, key: "history_size", range: 0...1_000_000) },
        Key(name: "history_ttl_s", help: "seconds a chat line stays in a room's history (default 300)") { c, v throws(ConfigError) in
            c.historyTTLSeconds = try parseInt(v, key: "history_ttl_s", range: 1...86_400 * 30) },
        Key(name: "history_max_bytes_per_room", help: "bytes of history per room, evicted early past it (default 1048576)") { c, v throws(ConfigError) in
            c.historyMaxBytesPerRoom = try parseInt(v, key: "history_max_bytes_per_room", range: 0...(1 << 40)) },
        Key(name: "history_max_bytes", help: "bytes of history across rooms, judged once a second (default 268435456)") { c, v throws(ConfigError) in
            c.historyMaxBytes = try parseInt(v, key: "history_max_bytes", range: 0...(1 << 50)) },
        Key(name: "redis_host", help: "Redis host for cluster mode (default 127.0.0.1)") { c, v throws(ConfigError) in
            c.redisHost = v },
        Key(name: "redis_port", help: "Redis port for cluster mode (default 6379)") { c, v throws(ConfigError) in
            c.redisPort = try parseInt(v, key: "redis_port", range: 1...65535) },
        Key(name: "log_level", help: "trace | debug | info | warning | error (default info)") { c, v throws(ConfigError) in
            guard let l = LogLevel(name: v.lowercased()) else {
                throw ConfigError("invalid value '\(v)' for log_level: expected trace, debug, info, warning or error")
            }
            c.logLevel = l },
        Key(name: "ring_entries", help: "io_uring submission queue entries (default 1024)") { c, v throws(ConfigError) in
            c.ringEntries = try parseInt(v, key: "ring_entries", range: 64...32768) },
        Key(name: "recv_buffer_count", help: "provided receive buffers per reactor, a power of two (default 256)") { c, v throws(ConfigError) in
            let n = try parseInt(v, key: "recv_buffer_count", range: 8...32768)
            guard n & (n - 1) == 0 else { throw ConfigError("invalid value '\(v)' for recv_buffer_count: must be a power of two") }
            c.recvBufferCount = n },
        Key(name: "recv_buffer_size", help: "size of each receive buffer in bytes (default 4096)") { c, v throws(ConfigError) in
            c.recvBufferSize = try parseInt(v, key: "recv_buffer_size", range: 512...(1 << 20)) },
        Key(name: "pin_reactors", help: "pin reactor i to CPU i so its buffer pool is NUMA-local (default true)") { c, v throws(ConfigError) in
            c.pinReactors = try parseBool(v, key: "pin_reactors") },
        Key(name: "send_zc_threshold", help: "io_uring: sends of at least this many bytes use SEND_ZC; 0 disables (default 16384)") { c, v throws(ConfigError) in
            c.sendZCThreshold = try parseInt(v, key: "send_zc_threshold", range: 0...(1 << 30)) },
        Key(name: "shared_block_threshold", help: "fan-out messages (a turn's batch of small room messages, compressed payloads) of at least this many bytes are queued by reference, not copied per recipient; 0 disables (default 1024)") { c, v throws(ConfigError) in
            c.sharedBlockThreshold = try parseInt(v, key: "shared_block_threshold", range: 0...(1 << 30)) },
        Key(name: "splice_threshold", help: "a turn's room batch of at least this many bytes reaches each member by tee + splice through pipes (the kernel copies nothing per recipient); 0 disables (default 32768)") { c, v throws(ConfigError) in
            c.spliceThreshold = try parseInt(v, key: "splice_threshold", range: 0...SplicePipes.capacity) },
        Key(name: "wait_batch", help: "io_uring (kernel 6.12+): completions a reactor waits for before waking; 0 or 1 wakes on each (default 32)") { c, v throws(ConfigError) in
            c.waitBatch = try parseInt(v, key: "wait_batch", range: 0...4096) },
        Key(name: "wait_batch_auto", help: "io_uring: batched waiting only while a reactor fans out (>= 2,000 room messages/s, >= 4 deliveries each); false: always (default true)") { c, v throws(ConfigError) in
            c.waitBatchAuto = try parseBool(v, key: "wait_batch_auto") },
        Key(name: "wait_batch_us", help: "io_uring: longest a reactor holds a ready completion back while waiting for wait_batch (default 50)") { c, v throws(ConfigError) in
            c.waitBatchMicros = try parseInt(v, key: "wait_batch_us", range: 0...10_000) },
        Key(name: "uring_recv_bundle", help: "io_uring (kernel 6.10+): one receive completion may fill several buffers; auto | on | off (default auto)") { c, v throws(ConfigError) in
            c.uringRecvBundle = try parseFeature(v, key: "uring_recv_bundle") },
        Key(name: "uring_buf_incremental", help: "io_uring (kernel 6.12+): receive buffers consumed incrementally, a small message uses only its bytes; auto | on | off (default auto)") { c, v throws(ConfigError) in
            c.uringBufIncremental = try parseFeature(v, key: "uring_buf_incremental") },
        Key(name: "uring_direct_descriptors", help: "io_uring: connections' sockets in the ring's fixed-file table, operations without a file lookup; accept = accepted straight into it (kernel 6.8+), register = accepted as fds then registered (on = register); auto | accept | register | off (default auto)") { c, v throws(ConfigError) in
            c.uringDirectDescriptors = try parseDescriptors(v, key: "uring_direct_descriptors") },
        Key(name: "uring_fixed_files", help: "io_uring: fixed-file table slots per reactor, 0 = from RLIMIT_NOFILE and max_connections; connections beyond it use plain fds (default 0)") { c, v throws(ConfigError) in
            c.uringFixedFiles = try parseInt(v, key: "uring_fixed_files", range: 0...1_048_576) },
        Key(name: "ws_allowed_origins", help: "origins allowed to open /ws: empty = the server's own host (Origin matches Host), * = any, else a comma-separated list like https://chat.example.com (default empty)") { c, v throws(ConfigError) in
            c.wsAllowedOrigins = v.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty } },
        Key(name: "ws_echo", help: "test mode: echo every WebSocket text/binary message back instead of handling it (for Autobahn; default false)") { c, v throws(ConfigError) in
            c.wsEcho = try parseBool(v, key: "ws_echo") },
        Key(name: "stats_public", help: "serve /stats and /metrics to non-loopback clients (default false)") { c, v throws(ConfigError) in
            c.statsPublic = try parseBool(v, key: "stats_public") },
        Key(name: "admin_token", help: "bearer token for /admin routes; empty disables them (default empty)") { c, v throws(ConfigError) in
            c.adminToken = v },
        Key(name: "max_latency_ms", help: "monitor threshold: p99 latency, ms (default 10)") { c, v throws(ConfigError) in
            c.maxLatencyMs = try parseDouble(v, key: "max_latency_ms", range: 0...1_000_000) },
        Key(name: "max_memory_mb", help: "monitor threshold: RSS base, plus memory_per_reactor_mb per reactor and memory_per_connection_kb per connection (default 15)") { c, v throws(ConfigError) in
            c.maxMemoryMB = try parseDouble(v, key: "max_memory_mb", range: 0...1_000_000) },
        Key(name: "memory_per_reactor_mb", help: "monitor threshold: RSS allowance per reactor thread, MB (default 8)") { c, v throws(ConfigError) in
            c.memoryPerReactorMB = try parseDouble(v, key: "memory_per_reactor_mb", range: 0...1_000_000) },
        Key(name: "memory_per_connection_kb", help: "monitor threshold: RSS allowance per open connection, KiB (default 32)") { c, v throws(ConfigError) in
            c.memoryPerConnectionKB = try parseInt(v, key: "memory_per_connection_kb", range: 0...1_048_576) },
        Key(name: "min_throughput", help: "monitor threshold: messages/s while there is demand (default 10000)") { c, v throws(ConfigError) in
            c.minThroughput = try parseInt(v, key: "min_throughput", range: 0...1_000_000_000) },
        Key(name: "max_error_rate", help: "monitor threshold: server failures (not client errors) / messages, last minute (default 0.01)") { c, v throws(ConfigError) in
            c.maxErrorRate = try parseDouble(v, key: "max_error_rate", range: 0...1_000_000) },
        Key(name: "monitor_hold_ms", help: "time under thresholds before shed flags return (default 5000)") { c, v throws(ConfigError) in
            c.monitorHoldMs = try parseInt(v, key: "monitor_hold_ms", range: 0...3_600_000) },
        Key(name: "monitor_breach_s", help: "consecutive seconds in breach before features are shed (default 3)") { c, v throws(ConfigError) in
            c.monitorBreachSeconds = try parseInt(v, key: "monitor_breach_s", range: 1...3600) },
        Key(name: "flags", help: "feature flags: name[:critical],… (default enable_chat_rooms:critical,enable_presence,enable_compression,enable_voice:critical)") { c, v throws(ConfigError) in
            var decls: [FlagDeclaration] = []
            for item in v.split(separator: ",") {
                let parts = item.split(separator: ":").map { String($0).trimmingSpaces() }
                guard let name = parts.first, !name.isEmpty, parts.count <= 2, parts.count == 1 || parts[1] == "critical" else {
                    throw ConfigError("invalid flag declaration '\(item)' in flags: expected name or name:critical")
                }
                decls.append(FlagDeclaration(name: name.lowercased(), critical: parts.count == 2))
            }
            c.flagDeclarations = decls },
        Key(name: "log_file", help: "log file, rotated by size; empty for stderr only (default logs/tcpserver.log)") { c, v throws(ConfigError) in
            c.logFile = v },
        Key(name: "log_max_bytes", help: "rotate the log file past this size (default 10485760)") { c, v throws(ConfigError) in
            c.logMaxBytes = try parseInt(v, key: "log_max_bytes", range: 1024...(1 << 40)) },
        Key(name: "log_keep", help: "rotated log files kept (default 5)") { c, v throws(ConfigError) in
            c.logKeep = try parseInt(v, key: "log_keep", range: 0...1000) },
        Key(name: "drain_timeout_ms", help: "on shutdown, time allowed to flush queued output (default 2000)") { c, v throws(ConfigError) in
            c.drainTimeoutMs = try parseInt(v, key: "drain_timeout_ms", range: 0...600_000) },
        Key(name: "max_rooms_per_connection", help: "rooms one connection may join (default 100)") { c, v throws(ConfigError) in
            c.maxRoomsPerConnection = try parseInt(v, key: "max_rooms_per_connection", range: 1...1_000_000) },
        Key(name: "max_members_per_room", help: "members one room may have (default 100000)") { c, v throws(ConfigError) in
            c.maxMembersPerRoom = try parseInt(v, key: "max_members_per_room", range: 1...100_000_000) },
        Key(name: "max_connections_per_ip", help: "connections from one source address; 0 = no limit (default 0)") { c, v throws(ConfigError) in
            c.maxConnectionsPerIP = try parseInt(v, key: "max_connections_per_ip", range: 0...10_000_000) },
        Key(name: "rate_limit_per_sec", help: "messages per second per connection, sustained; 0 = unlimited (default 1000)") { c, v throws(ConfigError) in
            c.rateLimitPerSec = try parseInt(v, key: "rate_limit_per_sec", range: 0...100_000_000) },
        Key(name: "rate_limit_burst", help: "messages per connection in a burst (default 2000)") { c, v throws(ConfigError) in
            c.rateLimitBurst = try parseInt(v, key: "rate_limit_burst", range: 1...100_000_000) },
        Key(name: "rate_limit_strikes", help: "rate_limited errors in a row before the connection is closed (default 100)") { c, v throws(ConfigError) in
            c.rateLimitStrikes = try parseInt(v, key: "rate_limit_strikes", range: 1...100_000_000) },
        Key(name: "hello_timeout_ms", help: "time allowed between connect and hello (default 5000)") { c, v throws(ConfigError) in
            c.helloTimeoutMs = try parseInt(v, key: "hello_timeout_ms", range: 10...3_600_000) },
        Key(name: "http_header_timeout_ms", help: "time allowed between connect and a complete HTTP request head; 408 after it (default 5000)") { c, v throws(ConfigError) in
            c.httpHeaderTimeoutMs = try parseInt(v, key: "http_header_timeout_ms", range: 10...3_600_000) },
        Key(name: "idle_timeout_ms", help: "silence before a server ping; closed after twice it; 0 = off (default 120000)") { c, v throws(ConfigError) in
            c.idleTimeoutMs = try parseInt(v, key: "idle_timeout_ms", range: 0...86_400_000) },
        Key(name: "outbound_hard_bytes", help: "queued output that cuts a slow consumer at once (default 33554432)") { c, v throws(ConfigError) in
            c.outboundHardBytes = try parseInt(v, key: "outbound_hard_bytes", range: 1024...(1 << 40)) },
        Key(name: "outbound_soft_bytes", help: "queued output tolerated for outbound_soft_seconds (default 8388608)") { c, v throws(ConfigError) in
            c.outboundSoftBytes = try parseInt(v, key: "outbound_soft_bytes", range: 1024...(1 << 40)) },
        Key(name: "outbound_soft_seconds", help: "how long a consumer may stay over the soft cap (default 10)") { c, v throws(ConfigError) in
            c.outboundSoftSeconds = try parseInt(v, key: "outbound_soft_seconds", range: 0...86_400) },
        Key(name: "max_name_bytes", help: "longest user or room name (default 64)") { c, v throws(ConfigError) in
            c.maxNameBytes = try parseInt(v, key: "max_name_bytes", range: 1...4096) },
        Key(name: "auth_token", help: "if set, hello must carry this token (default empty)") { c, v throws(ConfigError) in
            c.authToken = v },
        Key(name: "allow_unauthenticated_public", help: "allow a non-loopback address without auth_token (default false)") { c, v throws(ConfigError) in
            c.allowUnauthenticatedPublic = try parseBool(v, key: "allow_unauthenticated_public") },
        Key(name: "compression_threshold", help: "frames at or above this size are compressed (default 512)") { c, v throws(ConfigError) in
            c.compressionThreshold = try parseInt(v, key: "compression_threshold", range: 0...(64 << 20)) },
        Key(name: "zstd_level", help: "Zstd compression level (default 3)") { c, v throws(ConfigError) in
            c.zstdLevel = try parseInt(v, key: "zstd_level", range: -7...22) },
        Key(name: "lz4_acceleration", help: "LZ4 acceleration, 1 = best ratio (default 1)") { c, v throws(ConfigError) in
            c.lz4Acceleration = try parseInt(v, key: "lz4_acceleration", range: 1...65537) },
        Key(name: "voice_secret", help: "secret shared with the tcpserver-voice relays (their --secret): signs voice tokens and revocations; empty disables voice (default empty)") { c, v throws(ConfigError) in
            c.voiceSecret = v },
        Key(name: "voice_relays", help: "voice relays as host:port,… (IPv4); a channel is assigned to one for its life; empty disables voice (default empty)") { c, v throws(ConfigError) in
            guard let r = VoiceChannels.parseRelays(v) else {
                throw ConfigError("invalid value '\(v)' for voice_relays: expected host:port,… with IPv4 hosts")
            }
            c.voiceRelays = r },
        Key(name: "voice_token_ttl_s", help: "lifetime of a voice token in seconds; join_voice refreshes (default 60)") { c, v throws(ConfigError) in
            c.voiceTokenTTLSeconds = try parseInt(v, key: "voice_token_ttl_s", range: 1...86_400) },
        Key(name: "cluster", help: "off | redis (default off)") { c, v throws(ConfigError) in
            guard v == "off" || v == "redis" else { throw ConfigError("invalid value '\(v)' for cluster: expected off or redis") }
            c.cluster = v },
        Key(name: "node_id", help: "this node's id in cluster mode, unique per node (default: host-pid-random)") { c, v throws(ConfigError) in
            guard !v.isEmpty, v.utf8.count <= 128, !v.utf8.contains(where: { $0 <= 32 || $0 == 127 }) else {
                throw ConfigError("invalid value '\(v)' for node_id: 1-128 characters, no spaces or control characters")
            }
            c.nodeId = v },
    ]

    /// Applies `value` to the key named `name` (dashes and underscores are the same).
    public mutating func set(_ name: String, _ value: String) throws(ConfigError) {
        let norm = Self.normalize(name)
        let value = value.trimmingSpaces()
        if let key = Self.keys.first(where: { $0.name == norm }) {
            try key.apply(&self, value)
            return
        }
        // flag_<name>=on|off|0…100 and beta_<name>=user,user for declared flags.
        for (prefix, isBeta) in [("flag_", false), ("beta_", true)] where norm.hasPrefix(prefix) {
            let flag = String(norm.dropFirst(prefix.count))
            guard let i = flagDeclarations.firstIndex(where: { $0.name == flag }) else {
                throw ConfigError("unknown feature flag '\(flag)' in '\(name)' (declared: \(flagDeclarations.map(\.name).joined(separator: ", ")))")
            }
            if isBeta {
                flagDeclarations[i].betaUsers = value.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
            } else {
                switch value.lowercased() {
                case "on", "true", "1", "yes": flagDeclarations[i].enabled = true; flagDeclarations[i].percent = 100
                case "off", "false", "0", "no": flagDeclarations[i].enabled = false
                default:
                    guard value.hasSuffix("%"), let p = Int(value.dropLast()), (0...100).contains(p) else {
                        throw ConfigError("invalid value '\(value)' for \(name): expected on, off or a rollout percentage like 25%")
                    }
                    flagDeclarations[i].enabled = true
                    flagDeclarations[i].percent = p
                }
            }
            return
        }
        throw ConfigError("unknown config key '\(name)'")
    }

    static func normalize(_ name: String) -> String {
        String(name.lowercased().map { $0 == "-" ? "_" : $0 })
    }

    /// Whether `name` is a key `set` accepts (used to skip foreign keys in shared .env files).
    static func isKnownKey(_ name: String) -> Bool {
        let n = normalize(name)
        return keys.contains { $0.name == n } || n.hasPrefix("flag_") || n.hasPrefix("beta_")
    }

    static func parseInt(_ v: String, key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let n = Int(v), range.contains(n) else {
            throw ConfigError("invalid value '\(v)' for \(key): expected an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    static func parseDouble(_ v: String, key: String, range: ClosedRange<Double>) throws(ConfigError) -> Double {
        guard let n = Double(v), range.contains(n) else {
            throw ConfigError("invalid value '\(v)' for \(key): expected a number in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    static func parseBool(_ v: String, key: String) throws(ConfigError) -> Bool {
        switch v.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw ConfigError("invalid value '\(v)' for \(key): expected true or false")
        }
    }

    static func parseFeature(_ v: String, key: String) throws(ConfigError) -> UringFeatureSetting {
        guard let f = UringFeatureSetting(rawValue: v.lowercased()) else {
            throw ConfigError("invalid value '\(v)' for \(key): expected auto, on or off")
        }
        return f
    }

    static func parseDescriptors(_ v: String, key: String) throws(ConfigError) -> UringDescriptorSetting {
        let lower = v.lowercased()
        guard let d = lower == "on" ? .register : UringDescriptorSetting(rawValue: lower) else {
            throw ConfigError("invalid value '\(v)' for \(key): expected auto, accept, register or off")
        }
        return d
    }

    static func parseIPv4(_ v: String, key: String) throws(ConfigError) -> String {
        let host = v == "localhost" ? "127.0.0.1" : v
        var a = in_addr()
        guard inet_pton(AF_INET, host, &a) == 1 else {
            throw ConfigError("invalid value '\(v)' for \(key): expected an IPv4 address")
        }
        return host
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    init(_ message: String) { description = message }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
