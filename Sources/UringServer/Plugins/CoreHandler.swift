import Primitives

/// The fallback at the end of the chain: session start (`hello`) and `ping`.
final class CoreHandler: MessageProcessor {
    private var sessionCounter: UInt32 = 0
    private var rng = SystemRandomNumberGenerator()
    private let config: ServerConfig
    private let compressionFlag: FeatureFlag?

    private let cluster: ClusterNode?
    /// The last pong rendered and the millisecond it carries: every ping answered within the
    /// same millisecond (a turn reads the clock once) gets these bytes without re-rendering
    /// the 13-digit timestamp.
    private var pong = ByteBuffer()
    private var pongMillis = -1

    init(config: ServerConfig, flags: FeatureFlags, cluster: ClusterNode?) {
        self.config = config
        self.cluster = cluster
        compressionFlag = flags["enable_compression"]
    }

    func connectionClosed(_ c: Connection, _ ctx: PluginContext) {
        if let user = c.user { cluster?.userDisconnected(user) }
    }

    func canHandle(_ type: String) -> Bool { type == "hello" || type == "ping" }

    func process(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        let c = m.connection
        if m.type == "ping" {
            let now = ctx.wallMillis()
            if now != pongMillis {
                pongMillis = now
                pong.removeAll()
                pong.append("{\"type\":\"pong\",\"ts\":")
                pong.appendDecimal(now)
                pong.append("}")
            }
            ctx.reply(to: c) { b in b.append(pong.readable) }
            return
        }
        // hello
        if c.isAuthenticated { throw ProtocolError(.alreadyHello, "hello was already received on this connection") }
        if !config.authToken.isEmpty {
            guard let token = m.string("token"), constantTimeEquals(token, config.authToken) else {
                ctx.limitHit("unauthorized")
                ctx.close(c)
                throw ProtocolError(.unauthorized, "hello needs the right \"token\"")
            }
        }
        let user = try m.requireName("user", maxBytes: config.maxNameBytes)
        var requested: CompressionCodec?
        if let name = m.string("compress") {
            guard let codec = CompressionCodec(name: name) else {
                throw ProtocolError(.unsupportedCodec, "compress must be \"lz4\", \"zstd\" or \"none\"")
            }
            requested = codec
        }
        c.echo = m.bool("echo") ?? false
        var granted = CompressionCodec.raw
        // A WebSocket has its own framing (text frames): no codec is granted there.
        if let requested, requested != .raw, !c.isWebSocket {
            // Refused (granted "none") while the enable_compression flag is off for this user.
            if compressionFlag.map({ FeatureGate.isEnabled($0, for: c) }) ?? true {
                granted = requested
            }
        }
        sessionCounter &+= 1
        c.user = user
        c.setSession(reactor: ctx.reactorIndex, counter: sessionCounter, nonce: rng.next() as UInt32)
        let session = c.session ?? ""
        cluster?.userConnected(user)   // user → node registry (with TTL)
        ctx.reply(to: c) { b in
            b.append("{\"type\":\"welcome\",\"user\":")
            b.appendJSONString(user)
            b.append(",\"session\":")
            b.appendJSONString(session)
            if requested != nil {
                b.append(",\"compress\":\"")
                b.append(contentsOf: granted == .raw ? "none" : granted.name)
                b.append("\"")
            }
            b.append("}")
        }
        // The welcome itself still goes out in the client's framing; binary frames from here.
        c.outCodec = granted
    }
}
