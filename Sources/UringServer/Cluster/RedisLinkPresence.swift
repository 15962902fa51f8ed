// This node's presence in Redis: the heartbeat (node key, user keys, room counts refreshed
// before their TTL runs out), the per-room member counts, the user → node registry, and the
// Lua scripts that keep those consistent.

extension RedisLink {
    func heartbeat(_ now: Int) {
        nextHeartbeatAt = now + max(10, settings.heartbeatMillis)
        let ttl = String(settings.nodeTTLMillis)
        command(["SET", nodeKey, String(Clock.wallMillis()), "PX", ttl])
        for user in users.keys { sendUserKey(user) }
        for room in activeRooms { sendPresence(room) }
        for room in localCounts.keys where !activeRooms.contains(room) { sendPresence(room) }
        dirtyRooms.removeAll()
        RESP.appendCommand(&sub.out, ["PING"])
        if subPings == 0 { subWaitingSince = now }
        subPings += 1
    }

    func sendDirtyRooms() {
        guard !dirtyRooms.isEmpty else { return }
        for room in dirtyRooms {
            if activeRooms.contains(room) || localCounts[room] != nil {
                sendPresence(room)
            } else {
                // Neither active nor counted any more: just take this node's field out.
                command(["HDEL", "\(settings.channelPrefix):members:\(room)", settings.nodeId])
            }
        }
        dirtyRooms.removeAll()
    }

    /// Writes this node's count for `room` (HSET, or HDEL at 0) and fetches the live total.
    private func sendPresence(_ room: String) {
        let p = settings.channelPrefix
        let mine = localCounts[room] ?? 0
        evalScript(0, keys: ["\(p):members:\(room)"],
                   args: [nodeKeyPrefix, settings.nodeId, String(mine),
                          String(max(60_000, settings.nodeTTLMillis * 10))],
                   .roomCount(room, mine))
    }

    func sendUserKey(_ user: String) {
        command(["SET", "\(settings.channelPrefix):user:\(user)", settings.nodeId, "PX", String(settings.nodeTTLMillis)])
    }

    func sendUserDelete(_ user: String) {
        evalScript(1, keys: ["\(settings.channelPrefix):user:\(user)"], args: [settings.nodeId], .ignore)
    }

    /// 0: presence. KEYS[1] = P:members:<room>; ARGV = node key prefix, nodeId, this node's
    /// count, hash TTL (ms). Writes the count (HSET, HDEL at 0), drops fields of nodes whose
    /// heartbeat key is gone, and returns the sum over live nodes.
    /// 1: user release. KEYS[1] = P:user:<user>; ARGV[1] = nodeId. Deletes the key only if it
    /// still points at this node (the user may have reconnected elsewhere).
    static let presenceScripts = [
        """
        local key = KEYS[1]
        if (tonumber(ARGV[3]) or 0) > 0 then redis.call('HSET', key, ARGV[2], ARGV[3]) else redis.call('HDEL', key, ARGV[2]) end
        local h = redis.call('HGETALL', key)
        local sum = 0
        for i = 1, #h, 2 do
          if redis.call('EXISTS', ARGV[1] .. h[i]) == 1 then sum = sum + (tonumber(h[i + 1]) or 0)
          else redis.call('HDEL', key, h[i]) end
        end
        if #h > 0 then redis.call('PEXPIRE', key, ARGV[4]) end
        return sum
        """,
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """,
    ]
}
