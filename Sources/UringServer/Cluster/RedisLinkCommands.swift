import Synchronization

// Each shard's command pipeline: every command records what its reply is for, in order, and
// replies are matched against that queue (publish acknowledgements, script SHAs, counts, the
// slot map); MOVED/ASK replies are followed (RedisLinkRouting).

extension RedisLink {
    func onCommandReply(_ s: RedisShard, _ r: RedisReply) throws(RedisLinkError) {
        guard s.head < s.pending.count else {
            throw RedisLinkError("unexpected reply from redis (\(r.string))")
        }
        s.cmdWaitingSince = Self.nowMillis()
        let p = s.pending[s.head]
        if let d = Redirect(r) {
            // A publish is not kept for resending: counted failed (every line of a chat
            // batch) and its senders get cluster_unavailable here.
            if case .publishes = p.e {
                countFailures(s.nextReplyLines, reason: "redis slot moved")
                answerTicket(s, r, failed: true)
            }
            followRedirect(d, from: s, p)
        } else {
            switch p.e {
            case .publishes:
                let lines = s.nextReplyLines
                if r.isError {
                    countFailures(lines, reason: "redis error: \(r.string)")
                    if r.hasPrefix("NOSCRIPT") { noteError(s, r, what: "chat script") }
                } else {
                    published.wrappingAdd(lines, ordering: .relaxed)
                }
                answerTicket(s, r, failed: r.isError)
            case .ignore:
                if r.isError { noteError(s, r, what: "command") }
            case .scriptLoad(let i):
                s.scriptsReloading = false
                if r.isString && r.bytes.count == 40 {
                    scriptSHA[i] = r.string
                    if i == Self.chatScript { chatSHA = [UInt8](r.bytes) }
                } else {
                    logger.warning("redis SCRIPT LOAD failed", ["redis": s.address, "reply": r.string])
                }
            case .roomCount(let room, let mine):
                // The presence script answers [members, nodes with members].
                let total = r.isArray && r.count == 2 ? r[0] : r
                if let total, total.isInteger {
                    if activeRooms.contains(room) || localCounts[room] != nil {
                        let n = total.integer
                        if r.isArray, let nodes = r[1], nodes.isInteger { noteRoomNodes(room, nodes.integer, from: s) }
                        clusterCounts.withLock { $0[room] = n }
                        remoteCounts.withLock { $0[room] = max(0, n - mine) }
                    }
                } else {
                    noteError(s, r, what: "presence")
                    if r.isError { dirtyRooms.insert(room) }
                }
            case .topology:
                onTopology(s, r)
            case .roomSync(let room):
                onSyncReply(s, room, r)
            }
        }
        // onTopology may have taken the shard down (a cluster with no slots).
        guard s.head < s.pending.count else { return }
        if case .publishes(let n) = s.pending[s.head].e, n > 1 {
            s.pending[s.head].e = .publishes(n - 1)
            return
        }
        s.head += 1
        if s.head == s.pending.count {
            s.pending.removeAll(keepingCapacity: true)
            s.head = 0
        }
    }

    /// Right after a shard (re)connects (a promoted replica, say) the other nodes have not
    /// rewritten their fields there yet, and theirs may have expired meanwhile: a lower figure
    /// is not believed for a few heartbeats, or publishes in that window would expect too few
    /// receivers and a missed node would go unseen.
    private func noteRoomNodes(_ room: String, _ n: Int, from s: RedisShard) {
        let key = Self.roomHash(room.utf8)
        let settle = 2 * settings.heartbeatMillis + 2 * Self.refreshMillis
        if let old = roomNodes[key], n < old, Self.nowMillis() - s.readyAt < settle { return }
        roomNodes[key] = n
    }

    func noteError(_ s: RedisShard, _ r: RedisReply, what: String) {
        if r.isError && r.hasPrefix("NOSCRIPT") {
            // This server lost its script cache (a restart or a promoted replica); a burst of
            // NOSCRIPT replies reloads once.
            guard !s.scriptsReloading else { return }
            s.scriptsReloading = true
            for (i, src) in Self.scripts.enumerated() { command(on: s, ["SCRIPT", "LOAD", src], .scriptLoad(i)) }
            return
        }
        logger.debug("unexpected redis reply", ["redis": s.address, "for": what, "reply": r.string])
    }
}
