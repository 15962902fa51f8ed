// This node's presence in Redis: the heartbeat (node key, user keys, room counts refreshed
// before their TTL runs out), the per-room member counts, the user → node registry, and the
// Lua scripts that keep those consistent.

extension RedisLink {
    func heartbeat(_ now: Int) {
        nextHeartbeatAt = now + max(10, settings.heartbeatMillis)
        let ttl = String(settings.nodeTTLMillis)
        keyCommand(nodeKey, ["SET", nodeKey, String(Clock.wallMillis()), "PX", ttl])
        for user in users.keys { sendUserKey(user) }
        for room in activeRooms { sendPresence(room) }
        for room in localCounts.keys where !activeRooms.contains(room) { sendPresence(room) }
        dirtyRooms.removeAll()
        for s in shards where s.up {
            RESP.appendCommand(&s.sub.out, ["PING"])
            if s.subPings == 0 { s.subWaitingSince = now }
            s.subPings += 1
        }
    }

    func sendDirtyRooms() {
        guard !dirtyRooms.isEmpty else { return }
        for room in dirtyRooms {
            if activeRooms.contains(room) || localCounts[room] != nil {
                sendPresence(room)
            } else {
                // Neither active nor counted any more: just take this node's field out.
                roomCommand(room, ["HDEL", roomKey("members", room), settings.nodeId], .ignore)
            }
        }
        dirtyRooms.removeAll()
    }

    /// Writes this node's count for `room` (HSET with an expiry, or HDEL at 0) and fetches the
    /// live total.
    private func sendPresence(_ room: String) {
        let mine = localCounts[room] ?? 0
        roomScript(0, room: room, keys: [roomKey("members", room)],
                   args: [settings.nodeId, String(mine), String(settings.nodeTTLMillis),
                          String(max(60_000, settings.nodeTTLMillis * 10))],
                   .roomCount(room, mine))
    }

    func sendUserKey(_ user: String) {
        let key = "\(settings.channelPrefix):user:\(user)"
        keyCommand(key, ["SET", key, settings.nodeId, "PX", String(settings.nodeTTLMillis)])
    }

    func sendUserDelete(_ user: String) {
        let key = "\(settings.channelPrefix):user:\(user)"
        keyCommand(key, scriptCall(1, keys: [key], args: [settings.nodeId]))
    }

    /// 0: presence. KEYS[1] = P:members:{room}; ARGV = nodeId, this node's count, node TTL
    /// (ms), hash TTL (ms). Writes "<count>:<expiry ms>" (expiry = Redis TIME + node TTL; HDEL
    /// at 0), drops the fields whose expiry has passed (nodes that stopped refreshing: crashed),
    /// and returns {sum of the others, how many they are}. Only the room's own key: one slot on a cluster.
    /// 1: user release. KEYS[1] = P:user:<user>; ARGV[1] = nodeId. Deletes the key only if it
    /// still points at this node (the user may have reconnected elsewhere).
    static let presenceScripts = [
        """
        local key = KEYS[1]
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        if (tonumber(ARGV[2]) or 0) > 0 then redis.call('HSET', key, ARGV[1], ARGV[2] .. ':' .. (now + tonumber(ARGV[3])))
        else redis.call('HDEL', key, ARGV[1]) end
        local h = redis.call('HGETALL', key)
        local sum, nodes = 0, 0
        for i = 1, #h, 2 do
          local v = h[i + 1]
          local c = string.find(v, ':', 1, true)
          local exp = c and tonumber(string.sub(v, c + 1)) or 0
          if exp > now then sum = sum + (tonumber(string.sub(v, 1, c - 1)) or 0); nodes = nodes + 1
          else redis.call('HDEL', key, h[i]) end
        end
        if #h > 0 then redis.call('PEXPIRE', key, ARGV[4]) end
        return {sum, nodes}
        """,
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """,
    ]
}
