import Optimizers

/// The fallback at the end of the chain: session start (`hello`) and `ping`.
final class CoreHandler: MessageProcessor {
    private var sessionCounter = 0
    private var rng = SystemRandomNumberGenerator()
    private let config: ServerConfig

    init(config: ServerConfig) { self.config = config }

    func canHandle(_ type: String) -> Bool { type == "hello" || type == "ping" }

    func process(_ m: IncomingMessage, _ reactor: Reactor) throws(ProtocolError) {
        let c = m.connection
        if m.type == "ping" {
            reactor.reply(to: c) { b in
                b.append("{\"type\":\"pong\",\"ts\":")
                b.appendDecimal(Clock.wallMillis())
                b.append("}")
            }
            return
        }
        // hello
        if c.isAuthenticated { throw ProtocolError(.alreadyHello, "hello was already received on this connection") }
        if !config.authToken.isEmpty {
            guard let token = m.string("token"), constantTimeEquals(token, config.authToken) else {
                reactor.limitHit("unauthorized")
                reactor.closeAfterFlush(c)
                throw ProtocolError(.unauthorized, "hello needs the right \"token\"")
            }
        }
        let user = try m.requireName("user", maxBytes: config.maxNameBytes)
        c.echo = m.bool("echo") ?? false
        c.userHash = FeatureGate.userHash(user)
        sessionCounter += 1
        let session = "\(reactor.index)-\(sessionCounter)-\(String(rng.next() as UInt32, radix: 16))"
        c.user = user
        c.session = session
        reactor.reply(to: c) { b in
            b.append("{\"type\":\"welcome\",\"user\":")
            b.appendJSONString(user)
            b.append(",\"session\":")
            b.appendJSONString(session)
            b.append("}")
        }
    }
}
