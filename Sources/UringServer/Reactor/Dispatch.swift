import Glibc
import Primitives

// Dispatch: one parsed message → rate limit → hello gate → the plugin chain → ack.

extension Reactor {
    func handleMessage(_ c: Connection, _ payload: UnsafeRawBufferPointer) {
        counters.messagesIn &+= 1
        ackOffset = 0
        ackDeferred = false
        do {
            try JSONReader.parse(payload, into: &fields)
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
            guard let typeField = fields.find("type", in: payload), typeField.kind == .string else {
                throw ProtocolError(.missingField, "field 'type' (a string) is required")
            }
            try admitByRate(c)
            try dispatch(c, JSONReader.string(typeField, in: payload), payload)
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
    static func idBytes(_ fields: JSONFieldTable, _ payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let f = fields.find("id", in: payload) else { return nil }
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

    /// Hello gate, then the plugin chain, then the core handler.
    func dispatch(_ c: Connection, _ type: String, _ payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        if !c.isAuthenticated && type != "hello" {
            throw ProtocolError(.helloRequired, "send hello first")
        }
        var processor: MessageProcessor = core
        var found = false
        for i in 0..<plugins.count where plugins[i].canHandle(type) {
            if let flag = pluginFlags[i], !FeatureGate.isEnabled(flag, for: c) {
                throw ProtocolError(.featureDisabled, "'\(type)' is disabled (feature flag \(flag.name))")
            }
            processor = plugins[i]
            found = true
            break
        }
        if !found && !core.canHandle(type) {
            throw ProtocolError(.unsupportedType, "unsupported message type '\(type)'")
        }
        try withUnsafePointer(to: &fields) { (fp) throws(ProtocolError) in
            try processor.process(IncomingMessage(connection: c, type: type, bytes: payload, fields: fp), self)
        }
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
