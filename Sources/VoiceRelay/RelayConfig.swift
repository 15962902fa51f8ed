/// The relay's settings (`tcpserver-voice --help`).
public struct RelayConfig: Sendable {
    public enum IO: String, Sendable { case auto, uring, epoll }

    public var host = "127.0.0.1"
    /// UDP port; 0 picks a free one (tests).
    public var port = 4100
    public var io: IO = .auto
    /// Relay threads, each with its own SO_REUSEPORT socket; 0 = online CPUs.
    public var threads = 0
    /// Shared with the TCP server's voice_secret.
    public var secret = ""
    /// HTTP port for /stats and /metrics (127.0.0.1); 0 picks a free one, -1 disables.
    public var statsPort = 4101
    /// Larger datagrams are dropped (counted as oversized).
    public var maxPacket = 1200
    /// A member silent this long is unbound.
    public var idleMillis = 10_000
    /// Members of one channel.
    public var maxMembers = 64
    /// Provided receive buffers per thread (io_uring; a power of two).
    public var recvBuffers = 1024

    public init() {}

    public static let usage = """
        usage: tcpserver-voice [options]
          --host ADDR         IPv4 address to bind (default 127.0.0.1)
          --port N            UDP port (default 4100; 0 picks one)
          --io MODE           auto | uring | epoll (default auto)
          --threads N         relay threads, 0 = online CPUs (default 0)
          --secret S          the TCP server's voice_secret (required; or VOICE_SECRET)
          --stats-port N      HTTP /stats and /metrics on 127.0.0.1 (default 4101; -1 off)
          --max-packet N      largest datagram relayed, bytes (default 1200)
          --idle-ms N         unbind a member silent this long (default 10000)
          --max-members N     members per channel (default 64)
        """

    public struct Invalid: Error, CustomStringConvertible { public let description: String }

    /// Parses command-line arguments (without the program name).
    public static func parse(_ args: [String], environment secret: String?) throws(Invalid) -> RelayConfig {
        var c = RelayConfig()
        if let secret { c.secret = secret }
        var i = 0
        func value() throws(Invalid) -> String {
            i += 1
            guard i < args.count else { throw Invalid(description: "\(args[i - 1]) needs a value") }
            return args[i]
        }
        func int(_ range: ClosedRange<Int>) throws(Invalid) -> Int {
            let v = try value()
            guard let n = Int(v), range.contains(n) else {
                throw Invalid(description: "invalid value '\(v)' for \(args[i - 1]): expected \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        while i < args.count {
            switch args[i] {
            case "--host": c.host = try value()
            case "--port": c.port = try int(0...65535)
            case "--io":
                let v = try value()
                guard let m = IO(rawValue: v) else { throw Invalid(description: "invalid value '\(v)' for --io: auto, uring or epoll") }
                c.io = m
            case "--threads": c.threads = try int(0...256)
            case "--secret": c.secret = try value()
            case "--stats-port": c.statsPort = try int(-1...65535)
            case "--max-packet": c.maxPacket = try int(16...65000)
            case "--idle-ms": c.idleMillis = try int(10...86_400_000)
            case "--max-members": c.maxMembers = try int(2...1024)
            case "--help", "-h": throw Invalid(description: usage)
            default: throw Invalid(description: "unknown option '\(args[i])'\n\(usage)")
            }
            i += 1
        }
        guard !c.secret.isEmpty else { throw Invalid(description: "--secret (or VOICE_SECRET) is required: the TCP server's voice_secret") }
        return c
    }
}
