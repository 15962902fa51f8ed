import Glibc

public enum IOModeSetting: String, Sendable, CaseIterable {
    case auto, uring, epoll
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
    public var redisHost = "127.0.0.1"
    public var redisPort = 6379
    public var logLevel: LogLevel = .info
    /// Submission-queue entries per ring.
    public var ringEntries = 1024
    /// Provided buffers per reactor ring and their size: received bytes land here and are handed
    /// back at once, so idle connections hold no receive memory.
    public var recvBufferCount = 256
    public var recvBufferSize = 16384

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
        Key(name: "recv_buffer_size", help: "size of each receive buffer in bytes (default 16384)") { c, v throws(ConfigError) in
            c.recvBufferSize = try parseInt(v, key: "recv_buffer_size", range: 512...(1 << 20)) },
    ]

    /// Applies `value` to the key named `name` (dashes and underscores are the same).
    public mutating func set(_ name: String, _ value: String) throws(ConfigError) {
        let norm = String(name.lowercased().map { $0 == "-" ? "_" : $0 })
        guard let key = Self.keys.first(where: { $0.name == norm }) else {
            throw ConfigError("unknown config key '\(name)'")
        }
        try key.apply(&self, value.trimmingSpaces())
    }

    static func parseInt(_ v: String, key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let n = Int(v), range.contains(n) else {
            throw ConfigError("invalid value '\(v)' for \(key): expected an integer in \(range.lowerBound)...\(range.upperBound)")
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
