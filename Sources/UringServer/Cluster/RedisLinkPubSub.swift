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
            RESP.appendCommand(&sub.out, [verb] + chunk.map { "\(p):room:\($0)" })
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

    private func pong() {
        if subPings > 0 { subPings -= 1 }
    }

    private func onMessage(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        guard channel.count > channelPrefix.count,
              channelPrefix.withUnsafeBytes({ memcmp($0.baseAddress!, channel.baseAddress!, $0.count) }) == 0,
              let nl = payload.firstIndex(of: 10)
        else {
            logger.debug("malformed cluster message dropped")
            return
        }
        // Own echo: the origin line equals "<nodeId>\n".
        if nl + 1 == origin.count,
           origin.withUnsafeBytes({ memcmp($0.baseAddress!, payload.baseAddress!, $0.count) }) == 0 {
            return
        }
        let room = String(decoding: UnsafeRawBufferPointer(rebasing: channel[channelPrefix.count...]), as: UTF8.self)
        guard activeRooms.contains(room) else { return }
        let body = [UInt8](UnsafeRawBufferPointer(rebasing: payload[(nl + 1)...]))
        received.wrappingAdd(1, ordering: .relaxed)
        deliver(room, body)
    }
}
