import Glibc
import Primitives

// Dispatch: one parsed message → rate limit → hello gate → the plugin chain → ack.

extension Reactor {
    func handleMessage(_ c: Connection, _ payload: UnsafeRawBufferPointer) {
        counters.messagesIn &+= 1
        ackOffset = 0
        ackDeferred = false
        do {
            try JSONReader.parse(payload, into: &fields.pointee)
        } catch {
            // The fields parsed before the error stay in the table: an id read in full is
            // echoed in the error and acknowledged like any other failed message.
            let id = Self.idBytes(fields, payload)
            // Malformed lines count against the rate limit like any other: a flood of them is
            // answered rate_limited (and closed after rate_limit_strikes), not bad_json forever.
            do throws(ProtocolError) {
                try admitByRate(c)
                sendError(c, .badJSON, Self.describe(error), id: id)
            } catch {
                sendError(c, error.code, error.message, id: id)
            }
            if let id, !c.closing { ack(c, id) }
            return
        }
        let id = Self.idBytes(fields, payload)
        do throws(ProtocolError) {
            guard let typeField = JSONFieldTable.find("type", in: payload, table: fields), typeField.kind == .string else {
                throw ProtocolError(.missingField, "field 'type' (a string) is required")
            }
            try admitByRate(c)
            let (type, route) = self.route(typeField, payload)
            try dispatch(c, type, route, payload)
        } catch {
            if error.code == .badName { limitHit("bad_name") }
            sendError(c, error.code, error.message, id: id)
            if c.closing { return }
        }
        // Every message with an id is acknowledged once handled, after its reply or error —
        // for a message a plugin finishes later, when it releases the input.
        if ackDeferred {
            ackDeferred = false   // the cluster link answers it (IOEvents answerClusterPublishes)
        } else if let id, c.inputHeld {
            c.extras.heldAckID = Array(id)
        } else if let id {
            ack(c, id)
        }
    }

    /// The `id` field's bytes as sent (strings keep their quotes, so the ack echoes the id
    /// exactly).
    static func idBytes(_ fields: UnsafePointer<JSONFieldTable>, _ payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let f = JSONFieldTable.find("id", in: payload, table: fields) else { return nil }
        let start = f.kind == .string ? f.valueStart - 1 : f.valueStart
        let end = f.kind == .string ? f.valueEnd + 1 : f.valueEnd
        return UnsafeRawBufferPointer(rebasing: payload[start..<end])
    }

    func ack(_ c: Connection, _ id: UnsafeRawBufferPointer) {
        reply(to: c) { b in
            b.append("{\"type\":\"ack\",\"id\":")
            b.append(id)
            if ackOffset > 0 {   // a send_chat's: the offset its message was given
                b.append(",\"offset\":")
                b.appendDecimal(ackOffset)
            }
            b.append("}")
        }
    }

    /// The message type as a String and the processor that takes it: the index in `plugins`
    /// of the first whose `canHandle` says yes, `Route.core`, or `Route.unsupported`. The last
    /// type seen is remembered (`RouteCache`): a run of messages of one type (pings, chat
    /// lines) builds no String and asks no plugin.
    func route(_ typeField: JSONField, _ payload: UnsafeRawBufferPointer) -> (String, Int) {
        let raw = UnsafeRawBufferPointer(rebasing: payload[typeField.valueStart..<typeField.valueEnd])
        let cacheable = !typeField.valueEscaped && raw.count <= RouteCache.maxBytes
        if cacheable, let hit = routes.lookup(raw) { return hit }
        let type = JSONReader.string(typeField, in: payload)
        var route = Route.unsupported
        if let i = plugins.firstIndex(where: { $0.canHandle(type) }) {
            route = i
        } else if core.canHandle(type) {
            route = Route.core
        }
        if cacheable { routes.store(raw, type, route) }
        return (type, route)
    }

    /// Hello gate, then the processor `route` names (see `route(_:_:)`).
    func dispatch(_ c: Connection, _ type: String, _ route: Int, _ payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        if !c.isAuthenticated && type != "hello" {
            throw ProtocolError(.helloRequired, "send hello first")
        }
        let processor: MessageProcessor
        switch route {
        case Route.core:
            processor = core
        case Route.unsupported:
            throw ProtocolError(.unsupportedType, "unsupported message type '\(type)'")
        default:
            if let flag = pluginFlags[route], !FeatureGate.isEnabled(flag, for: c) {
                throw ProtocolError(.featureDisabled, "'\(type)' is disabled (feature flag \(flag.name))")
            }
            processor = plugins[route]
        }
        try processor.process(IncomingMessage(connection: c, type: type, bytes: payload, fields: UnsafePointer(fields)), self)
    }

    static func describe(_ e: JSONError) -> String {
        switch e {
        case .syntax(let at): "malformed JSON at byte \(at)"
        case .invalidUTF8(let at): "invalid UTF-8 at byte \(at)"
        case .notAnObject: "a message must be a JSON object"
        case .tooDeep: "JSON nested too deeply"
        case .tooManyFields: "too many fields in one message"
        }
    }
}
