import Glibc
import Synchronization

// The pub/sub connections: room subscriptions (SUBSCRIBE on a plain Redis, SSUBSCRIBE on the
// master serving the room's slot in a cluster), subscriptions the server drops when a slot
// moves, chat lines from the chat script (RedisLinkRoomSync: appended to the room's log at
// their offsets, on every node) and other room messages from other nodes handed to `deliver`
// (own echoes dropped).

extension RedisLink {
    func sendSubscribe(_ s: RedisShard, unsubscribe: Bool, _ room: String) {
        let verb = mode == .cluster ? (unsubscribe ? "SUNSUBSCRIBE" : "SSUBSCRIBE") : (unsubscribe ? "UNSUBSCRIBE" : "SUBSCRIBE")
        RESP.appendCommand(&s.sub.out, [verb, roomChannel(room)])
    }

    func onPubSubReply(_ s: RedisShard, _ r: RedisReply) throws(RedisLinkError) {
        s.subWaitingSince = Self.nowMillis()  // any traffic shows the connection is alive
        if r.isArray, let kind = r[0] {
            if kind.is("message") || kind.is("smessage") {
                if r.count == 3, let ch = r[1], let payload = r[2] { onMessage(channel: ch.bytes, payload: payload.bytes) }
            } else if kind.is("subscribe") || kind.is("ssubscribe") {
                if let c = r[2], c.isInteger { setSubCount(s, c.integer) }
                if let ch = r[1], let room = room(ofChannel: ch.bytes), activeRooms.contains(room) {
                    // New here or lost meanwhile: the room's log catches up from its stream
                    // (what it missed, or the tail when new) before later chat lines.
                    roomResubscribed(room)
                    if lostRooms.remove(room) != nil {
                        resubscribes.wrappingAdd(1, ordering: .relaxed)
                        onRoomResubscribed?(room)
                    }
                }
            } else if kind.is("unsubscribe") || kind.is("sunsubscribe") {
                if let c = r[2], c.isInteger { setSubCount(s, c.integer) }
                // Still wanted here: the server let go of the channel itself (its slot moved).
                if let ch = r[1], let room = room(ofChannel: ch.bytes), roomShard[room] === s, activeRooms.contains(room) {
                    logger.info("redis dropped a room subscription (slot moved)", ["redis": s.address, "room": room])
                    roomMoved(room)
                    if !needRefresh {
                        needRefresh = true
                        refreshAt = Self.nowMillis()
                    }
                }
            } else if kind.is("pong") {
                pong(s)
            }
            return
        }
        if r.is("PONG") {
            pong(s)
            return
        }
        if let d = Redirect(r) {
            // SSUBSCRIBE sent to a master that does not serve the slot (any more).
            let target = redirectTarget(d, from: s)
            for room in s.rooms where ClusterSlots.slot(ofRoom: room) == d.slot && target !== s {
                s.rooms.remove(room)
                roomShard[room] = nil
                unplacedRooms.insert(room)
                lostRooms.insert(room)
                placeNeeded = true
            }
            return
        }
        if r.isError {
            logger.warning("redis pub/sub error", ["redis": s.address, "error": r.string])
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

    private func setSubCount(_ s: RedisShard, _ n: Int) {
        s.subCount = n
        updateSubscribedCount()
    }

    private func pong(_ s: RedisShard) {
        if s.subPings > 0 { s.subPings -= 1 }
    }

    /// `P:room:{<tag>}` → the room (nil for another channel).
    private func room(ofChannel channel: UnsafeRawBufferPointer) -> String? {
        guard channel.count > channelPrefix.count, channel[channel.count - 1] == UInt8(ascii: "}"),
              channelPrefix.withUnsafeBytes({ memcmp($0.baseAddress!, channel.baseAddress!, $0.count) }) == 0
        else { return nil }
        return ClusterSlots.room(fromTag: UnsafeRawBufferPointer(rebasing: channel[channelPrefix.count..<(channel.count - 1)]))
    }

    private func onMessage(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        guard let room = room(ofChannel: channel), let nl = payload.firstIndex(of: 10) else {
            logger.debug("malformed cluster message dropped")
            return
        }
        let own = nl + 1 == origin.count
            && origin.withUnsafeBytes({ memcmp($0.baseAddress!, payload.baseAddress!, $0.count) }) == 0
        if Self.isChatPayload(payload, afterOrigin: nl + 1) {
            // A chat line from the chat script (every node delivers it, the origin too; the
            // sender tag names a connection of the origin node only).
            guard activeRooms.contains(room) else { return }
            received.wrappingAdd(1, ordering: .relaxed)
            onChatMessage(room: room, UnsafeRawBufferPointer(rebasing: payload[(nl + 1)...]), own: own)
            return
        }
        // Own echo: the origin line equals "<nodeId>\n".
        if own { return }
        guard activeRooms.contains(room) else { return }
        let body = [UInt8](UnsafeRawBufferPointer(rebasing: payload[(nl + 1)...]))
        received.wrappingAdd(1, ordering: .relaxed)
        deliver(room, body)
    }
}
