import Primitives

/// The example plugin from docs/architecture.md: `{"type":"whoami"}` answers with the
/// connection's user, session and rooms. Not registered by default; register it with
/// `server.register { WhoAmIPlugin($0) }`.
public final class WhoAmIPlugin: MessageProcessor {
    public init(_ env: PluginEnvironment) {}

    public func canHandle(_ type: String) -> Bool { type == "whoami" }

    public func process(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        let c = m.connection
        ctx.reply(to: c) { b in
            b.append("{\"type\":\"whoami\",\"user\":")
            b.appendJSONString(c.user ?? "")
            b.append(",\"session\":")
            b.appendJSONString(c.session ?? "")
            b.append(",\"rooms\":[")
            for (i, r) in c.rooms.enumerated() {
                if i > 0 { b.append(",") }
                b.appendJSONString(r.name)
            }
            b.append("]}")
        }
    }
}
