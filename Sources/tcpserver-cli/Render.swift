// Server messages as readable lines, and the server's error codes as short hints.

enum Render {
    /// A line for a room event or reply, or nil for messages not worth showing.
    static func event(_ m: JSON) -> String? {
        let room = Terminal.sanitize(m["room"]?.string ?? "?")
        switch m["type"]?.string {
        case "chat":
            let from = Terminal.sanitize(m["from"]?.string ?? "?")
            return "[\(room)] \(from): \(Terminal.sanitize(m["text"]?.string ?? ""))"
        case "user_joined":
            return "[\(room)] * \(Terminal.sanitize(m["user"]?.string ?? "?")) joined"
        case "user_left":
            return "[\(room)] * \(Terminal.sanitize(m["user"]?.string ?? "?")) left"
        case "presence":
            return "[\(room)] * " + presence(m)
        case "joined":
            return "[\(room)] * you joined" + (m["members"]?.int.map { " (\(members($0)))" } ?? "")
        case "left":
            return "[\(room)] * you left"
        case "welcome", "ack", "pong":
            return nil
        default:
            return "< " + Terminal.sanitize(m.compact)
        }
    }

    /// `presence: 3 members (+bob -carol)` for the server's batched presence message
    /// `{"type":"presence","room":…,"joined":[…],"left":[…],"members":N}`.
    static func presence(_ m: JSON) -> String {
        var changes: [String] = []
        for u in m["joined"]?.array ?? [] { changes.append("+" + Terminal.sanitize(u.text)) }
        for u in m["left"]?.array ?? [] { changes.append("-" + Terminal.sanitize(u.text)) }
        var s = "presence:"
        if let n = m["members"]?.int { s += " " + members(n) }
        if !changes.isEmpty {
            let list = changes.joined(separator: " ")
            s += m["members"] == nil ? " " + list : " (\(list))"
        }
        return s
    }

    static func members(_ n: Int) -> String { n == 1 ? "1 member" : "\(n) members" }

    /// `code — hint`: a short explanation for the codes of docs/protocol.md, the server's
    /// own message for the rest.
    static func error(_ e: ServerError) -> String {
        let code = Terminal.sanitize(e.code)
        let hint = self.hint(e) ?? Terminal.sanitize(e.message)
        return hint.isEmpty ? code : "\(code) — \(hint)"
    }

    private static func hint(_ e: ServerError) -> String? {
        let room = e.request?.room.map { "'\(Terminal.sanitize($0))'" }
        switch e.code {
        case "not_in_room":
            guard let room else { return nil }
            return e.request?.type == "leave_room"
                ? "not a member of room \(room), nothing to leave"
                : "join room \(room) before sending to it"
        case "bad_json": return "the server could not parse the message (\(e.message))"
        case "bad_frame": return "the server did not recognise the framing"
        case "unsupported_type":
            return e.request.map { "the server does not handle '\($0.type)' messages" }
        case "missing_field": return "a required field is missing or empty (\(e.message))"
        case "hello_required": return "the session has not said hello yet"
        case "already_hello": return "this connection already said hello"
        case "unsupported_codec": return "compression must be lz4, zstd or none"
        case "feature_disabled": return "this feature is switched off on the server for this user"
        case "bad_name":
            return "names must be short, without control characters or surrounding spaces (\(e.message))"
        case "frame_too_large": return "the message is longer than the server's max_frame_bytes"
        case "rate_limited": return "sending too fast; the server dropped the message"
        case "too_many_rooms": return "leave a room before joining another (\(e.message))"
        case "room_full": return room.map { "room \($0) is full" } ?? "the room is full"
        case "unauthorized": return "the server needs the right token (--token T)"
        case "hello_timeout": return "the server waited too long for hello"
        case "idle_timeout": return "the connection was idle for too long"
        case "slow_consumer": return "this client read too slowly and was cut off"
        case "server_full": return "the server is at max_connections; try again later"
        case "too_many_connections": return "too many connections from this address"
        default: return nil
        }
    }
}
