import Glibc
import Synchronization

// The pub/sub connection: room subscriptions, and room messages from other nodes handed to
// `deliver` (own echoes dropped).

extension RedisLink {
    func sendSubscribe(_ verb: String, _ rooms: [String]) {
        let p = settings.channelPrefix
        var i = 0
        while i < rooms.count {
            let chunk = rooms[i..<min(rooms.count, i + 512)]
            RESP.appendCommand(&sub.out, [verb] + chunk.map { "\(p):room:{\($0)}" })
            i += chunk.count
        }
    }

    func onPubSubReply(_ r: RedisReply) throws(RedisLinkError) {
        subWaitingSince = Self.nowMillis()  // any traffic shows the connection is alive
        if r.isArray, let kind = r[0] {
            if kind.is("message"), r.count == 3, let ch = r[1], let payload = r[2] {
                onMessage(channel: ch.bytes, payload: payload.bytes)
            } else if kind.is("subscribe") || kind.is("unsubscribe"), let c = r[2], c.isInteger {
                subscribedRooms.store(c.integer, ordering: .relaxed)
            } else if kind.is("pong") {
                pong()
            }
            return
        }
        if r.is("PONG") {
            pong()
            return
        }
        if r.isError {
            logger.warning("redis pub/sub error", ["error": r.string])
        }
    }

    /// Whether the payload after the origin line starts with an epoch line (12 hex digits and
    /// a newline): a chat line from the chat script; anything else is a plain message.
    static func isChatPayload(_ p: UnsafeRawBufferPointer, afterOrigin i: Int) -> Bool {
        guard p.count > i + 12, p[i + 12] == 10 else { return false }
        for k in i..<(i + 12) {
            let c = p[k]
            if !((c >= 48 && c <= 57) || (c >= 97 && c <= 102)) { return false }
        }
        return true
    }

    private func pong() {
        if subPings > 0 { subPings -= 1 }
    }

    private func onMessage(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        guard channel.count > channelPrefix.count + 1, channel[channel.count - 1] == UInt8(ascii: "}"),
              channelPrefix.withUnsafeBytes({ memcmp($0.baseAddress!, channel.baseAddress!, $0.count) }) == 0,
              let nl = payload.firstIndex(of: 10)
        else {
            logger.debug("malformed cluster message dropped")
            return
        }
        let room = String(decoding: UnsafeRawBufferPointer(rebasing: channel[channelPrefix.count..<(channel.count - 1)]), as: UTF8.self)
        if Self.isChatPayload(payload, afterOrigin: nl + 1) {
            // A chat line from the chat script (every node delivers it, the origin too).
            guard activeRooms.contains(room) else { return }
            received.wrappingAdd(1, ordering: .relaxed)
            // The sender tag names a connection of the origin node only.
            let own = nl + 1 == origin.count
                && origin.withUnsafeBytes({ memcmp($0.baseAddress!, payload.baseAddress!, $0.count) }) == 0
            onChatMessage(room: room, UnsafeRawBufferPointer(rebasing: payload[(nl + 1)...]), own: own)
            return
        }
        // Own echo: the origin line equals "<nodeId>\n".
        if nl + 1 == origin.count,
           origin.withUnsafeBytes({ memcmp($0.baseAddress!, payload.baseAddress!, $0.count) }) == 0 {
            return
        }
        guard activeRooms.contains(room) else { return }
        let body = [UInt8](UnsafeRawBufferPointer(rebasing: payload[(nl + 1)...]))
        received.wrappingAdd(1, ordering: .relaxed)
        deliver(room, body)
    }
}
