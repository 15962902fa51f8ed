import Synchronization

// Plain Redis or Redis Cluster, and who serves which slot: the first server that answers is
// asked CLUSTER SLOTS (a plain Redis answers "cluster support disabled"); on a cluster the
// answer is the slot map, with one shard per master. After a master fails the map is asked
// again (from any reachable master) every 300 ms until every slot has a reachable master; the
// rooms of moved slots are then subscribed where they live now.

extension RedisLink {
    static let refreshMillis = 300

    @discardableResult
    func addShard(host: String, port: Int) -> RedisShard {
        if let s = shards.first(where: { $0.host == host && $0.port == port }) { return s }
        let s = RedisShard(host: host, port: port)
        s.nextAttemptAt = Self.nowMillis()
        shards.append(s)
        return s
    }

    func askTopology(_ s: RedisShard, _ now: Int) {
        topologyAsked = s
        command(on: s, ["CLUSTER", "SLOTS"], .topology)
    }

    /// Asks an up shard for the slot map unless every slot already has a reachable master.
    func refreshTopology(_ now: Int) {
        refreshAt = now + Self.refreshMillis
        if !slotOwner.contains(where: { $0 == nil || !$0!.up }) {
            needRefresh = false
            return
        }
        if topologyAsked != nil { return }
        if let s = shards.first(where: { $0.up && $0.ready }) ?? shards.first(where: { $0.up }) {
            askTopology(s, now)
        } else {
            ensureSeedProbe()
        }
    }

    /// With no master reachable, the configured node is tried too (it may be a replica or a
    /// restarted node that knows the current map).
    func ensureSeedProbe() {
        if let s = seed, shards.contains(where: { $0 === s }) { return }
        seed = addShard(host: settings.redisHost, port: settings.redisPort)
    }

    func onTopology(_ s: RedisShard, _ r: RedisReply) {
        if topologyAsked === s { topologyAsked = nil }
        let now = Self.nowMillis()
        if r.isError {
            if mode == .unknown {
                // A plain Redis ("ERR This instance has cluster support disabled"): one shard
                // serves everything.
                mode = .single
                modeCode.store(RedisMode.single.rawValue, ordering: .relaxed)
                masters.store(1, ordering: .relaxed)
                for i in 0..<ClusterSlots.count { slotOwner[i] = s }
                for o in shards { o.slots = o === s ? ClusterSlots.count : 0 }
                logger.info("redis mode detected", ["redis": s.address, "mode": "single", "masters": "1"])
                shardReady(s, now)
            } else {
                logger.warning("redis CLUSTER SLOTS failed", ["redis": s.address, "error": r.string])
            }
            return
        }
        var owners = [RedisShard?](repeating: nil, count: ClusterSlots.count)
        for i in 0..<(r.isArray ? r.count : 0) {
            guard let e = r[i], e.isArray, e.count >= 3, let a = e[0], let b = e[1], let m = e[2],
                  let h = m[0], let p = m[1], a.isInteger, b.isInteger, p.isInteger else { continue }
            var host = h.string
            if host.isEmpty || host == "?" { host = s.host }
            let owner = addShard(host: host, port: p.integer)
            let lo = max(0, a.integer), hi = min(ClusterSlots.count - 1, b.integer)
            if lo <= hi { for slot in lo...hi { owners[slot] = owner } }
        }
        guard owners.contains(where: { $0 != nil }) else {
            logger.warning("redis cluster serves no slots yet", ["redis": s.address])
            needRefresh = true
            if mode == .unknown { shardDown(s, "redis cluster serves no slots") }
            return
        }
        applyTopology(owners, from: s, now)
    }

    private func applyTopology(_ owners: [RedisShard?], from s: RedisShard, _ now: Int) {
        let wasUnknown = mode == .unknown
        mode = .cluster
        modeCode.store(RedisMode.cluster.rawValue, ordering: .relaxed)
        var counts: [ObjectIdentifier: Int] = [:]
        for o in owners { if let o { counts[ObjectIdentifier(o), default: 0] += 1 } }
        for sh in shards where sh.slots > 0 && counts[ObjectIdentifier(sh)] == nil && !sh.up {
            // The master that served these slots is down and no longer listed: a replica took
            // over (or the slots went elsewhere).
            failovers.wrappingAdd(1, ordering: .relaxed)
            logger.warning("redis master replaced", ["old": sh.address])
        }
        for i in 0..<ClusterSlots.count { slotOwner[i] = owners[i] }
        for sh in shards { sh.slots = counts[ObjectIdentifier(sh)] ?? 0 }
        masters.store(counts.count, ordering: .relaxed)
        // A room subscribed on a server that no longer serves its slot: that server dropped
        // the subscription (or will); subscribe it where it lives now.
        var misplaced: [String] = []
        for (room, sh) in roomShard where slotOwner[ClusterSlots.slot(ofRoom: room)] !== sh { misplaced.append(room) }
        for room in misplaced { roomMoved(room) }
        if wasUnknown {
            logger.info("redis mode detected", ["redis": s.address, "mode": "cluster", "masters": String(counts.count)])
        }
        for sh in shards where sh.up && sh.slots > 0 { shardReady(sh, now) }
        needRefresh = slotOwner.contains { $0 == nil || !$0!.up }
        refreshAt = now + Self.refreshMillis
        placeNeeded = true
    }

    /// The room's subscription is gone from the shard that held it (its slot moved): mark it
    /// lost and place it again.
    func roomMoved(_ room: String) {
        guard let sh = roomShard.removeValue(forKey: room) else { return }
        sh.rooms.remove(room)
        if sh.up && mode == .cluster { sendSubscribe(sh, unsubscribe: true, room) }
        if activeRooms.contains(room) {
            unplacedRooms.insert(room)
            lostRooms.insert(room)
            placeNeeded = true
        }
    }

    /// Subscribes every active room not subscribed yet on the shard serving its slot (if that
    /// one is up).
    func placeRooms() {
        guard placeNeeded else { return }
        placeNeeded = false
        var placed: [String] = []
        for room in unplacedRooms {
            guard activeRooms.contains(room) else { placed.append(room); continue }
            guard let s = slotOwner[ClusterSlots.slot(ofRoom: room)], s.up, s.ready else { continue }
            s.rooms.insert(room)
            roomShard[room] = s
            sendSubscribe(s, unsubscribe: false, room)
            placed.append(room)
        }
        for room in placed { unplacedRooms.remove(room) }
    }

    /// Drops the shards that serve no slots once the cluster's map is known (the seed probe,
    /// a failed master that was replaced), counting their unacknowledged publishes as lost.
    func retireShards() {
        guard mode == .cluster, shards.contains(where: { $0.slots == 0 }),
              shards.contains(where: { $0.slots > 0 && $0.up }) else { return }
        var keep: [RedisShard] = []
        for s in shards {
            if s.slots > 0 || s === topologyAsked {
                keep.append(s)
                continue
            }
            if s.up { failPipeline(s, reason: "redis master no longer serves the slot") } else { s.resetPipeline() }
            s.up = false
            s.ready = false
            s.cmd.close()
            s.sub.close()
            for room in s.rooms { roomShard[room] = nil; unplacedRooms.insert(room); lostRooms.insert(room) }
            s.rooms.removeAll()
            placeNeeded = true
        }
        shards = keep
        updateSubscribedCount()
    }
}
