import Synchronization

// Where each command goes: by the slot of its key (a room's keys and channel share the room's
// slot), to the shard serving that slot; and how MOVED / ASK redirects are followed.

extension RedisLink {
    /// `P:<kind>:{<tag>}`: a key of `room` (the tag puts all of them in the room's slot).
    func roomKey(_ kind: String, _ room: String) -> String {
        "\(settings.channelPrefix):\(kind):{\(ClusterSlots.tag(room))}"
    }

    /// The room's pub/sub channel. A script that publishes to it should name it in KEYS: on a
    /// cluster Redis treats a shard channel like a key (a script that SPUBLISHes to a channel
    /// of a slot its node does not serve fails with "non local key"), and roomScript sends
    /// the script to the master of the room's slot, which is the channel's.
    func roomChannel(_ room: String) -> String { roomKey("room", room) }

    /// How a script publishes to a room's channel in the current mode: sharded pub/sub on a
    /// cluster (subscribers sit on the slot's master), plain pub/sub on a single Redis.
    var publishVerb: String { mode == .cluster ? "SPUBLISH" : "PUBLISH" }

    /// The one routing point of every room-keyed command: sent to the master serving the
    /// room's slot (every key of the room, and its channel, live there). While that master is
    /// unreachable the command is dropped: what it writes is re-sent by the next heartbeat.
    func roomCommand(_ room: String, _ args: [String], _ e: Expect) {
        send(args, slot: ClusterSlots.slot(ofRoom: room), e)
    }

    /// Script `i` of `scripts` on the room's master. `keys` must all be keys of the room
    /// (roomKey, roomChannel) so they share its slot.
    func roomScript(_ i: Int, room: String, keys: [String], args: [String], _ e: Expect) {
        roomCommand(room, scriptCall(i, keys: keys, args: args), e)
    }

    /// A command on a single key that is not a room's (node and user keys).
    func keyCommand(_ key: String, _ args: [String], _ e: Expect = .ignore) {
        send(args, slot: ClusterSlots.slot(ofKey: key), e)
    }

    func scriptCall(_ i: Int, keys: [String], args: [String]) -> [String] {
        if let sha = scriptSHA[i] { return ["EVALSHA", sha, String(keys.count)] + keys + args }
        return ["EVAL", Self.scripts[i], String(keys.count)] + keys + args
    }

    private func send(_ args: [String], slot: Int, _ e: Expect) {
        guard let s = slotOwner[slot], s.up else { return }
        command(on: s, args, e)
    }

    /// Appends a command to the shard's pipeline. `args` is kept until the reply so a
    /// redirected command can be sent again.
    func command(on s: RedisShard, _ args: [String], _ e: Expect) {
        RESP.appendCommand(&s.cmd.out, args)
        s.expect(e, args: args, now: Self.nowMillis())
    }

    struct Redirect {
        var ask: Bool
        var slot: Int
        var host: Substring
        var port: Int

        /// `MOVED <slot> <host>:<port>` or `ASK <slot> <host>:<port>` (an empty host means the
        /// server that answered).
        init?(_ r: RedisReply) {
            guard r.isError, r.hasPrefix("MOVED ") || r.hasPrefix("ASK ") else { return nil }
            let parts = r.string.split(separator: " ")
            guard parts.count == 3, let slot = Int(parts[1]), slot >= 0, slot < ClusterSlots.count,
                  let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...])
            else { return nil }
            ask = parts[0] == "ASK"
            self.slot = slot
            host = parts[2][..<colon]
            self.port = port
        }
    }

    /// The shard a redirect names; a MOVED also updates the slot map at once (the full map is
    /// fetched again soon after, since one moved slot rarely moves alone).
    func redirectTarget(_ d: Redirect, from s: RedisShard) -> RedisShard {
        let target = addShard(host: d.host.isEmpty ? s.host : String(d.host), port: d.port)
        if d.ask {
            asked.wrappingAdd(1, ordering: .relaxed)
            return target
        }
        moved.wrappingAdd(1, ordering: .relaxed)
        if let old = slotOwner[d.slot], old !== target {
            old.slots -= 1
            target.slots += 1
        } else if slotOwner[d.slot] == nil {
            target.slots += 1
        }
        slotOwner[d.slot] = target
        if !needRefresh {
            needRefresh = true
            refreshAt = Self.nowMillis()
        }
        return target
    }

    /// A command came back MOVED/ASK: send it again where the redirect points (with ASKING
    /// first for ASK). A publish cannot be sent again (its bytes are gone): it is counted as a
    /// failed publish, never dropped silently (a chat line's sender gets cluster_unavailable,
    /// see onCommandReply).
    func followRedirect(_ d: Redirect, from s: RedisShard, _ p: RedisShard.Pending) {
        let target = redirectTarget(d, from: s)
        guard let args = p.args else { return }  // a publish: counted and answered by the caller
        if target.up {
            if d.ask { command(on: target, ["ASKING"], .ignore) }
            command(on: target, args, p.e)
        } else if case .roomCount(let room, _) = p.e {
            dirtyRooms.insert(room)  // sent again once the target is up (or by the heartbeat)
        } else if case .roomSync(let room) = p.e, roomSync[room] != nil {
            roomSync[room]!.fetching = false  // fetched again once the room is re-subscribed there
            lostRooms.insert(room)
        }
    }
}
