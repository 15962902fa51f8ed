import Glibc
import Synchronization

// Connection state of the link thread, per shard: connecting with backoff, going up (asking
// a fresh link whether it talks to a cluster, else re-sending everything this server must know
// about this node) and down (counting what was lost, marking its rooms for re-subscription),
// and the shutdown that removes this node's keys.

extension RedisLink {
    func attemptConnect(_ s: RedisShard, _ now: Int) {
        let addr: RedisAddress
        switch RedisAddress.resolve(host: s.host, port: s.port) {
        case .success(let a): addr = a
        case .failure(let e):
            connectFailed(s, e.description)
            return
        }
        do throws(RedisLinkError) {
            try s.cmd.connect(addr)
            try s.sub.connect(addr)
        } catch {
            connectFailed(s, error.description)
            return
        }
        s.connectDeadline = now + settings.connectTimeoutMillis
        if s.cmd.state == .up && s.sub.state == .up { shardUp(s, now) }
    }

    func connectFailed(_ s: RedisShard, _ why: String) {
        s.cmd.close()
        s.sub.close()
        if !s.loggedDown {
            s.loggedDown = true
            logger.warning("redis unreachable, retrying", ["redis": s.address, "error": why])
        } else {
            logger.debug("redis connect failed", ["redis": s.address, "error": why, "retry_ms": String(s.backoffMillis)])
        }
        scheduleRetry(s)
    }

    private func scheduleRetry(_ s: RedisShard) {
        s.nextAttemptAt = Self.nowMillis() + s.backoffMillis
        s.backoffMillis = min(s.backoffMillis * 2, 2000)
    }

    func shardUp(_ s: RedisShard, _ now: Int) {
        s.up = true
        s.upSince = now
        s.loggedDown = false
        if s.everUp { reconnects.wrappingAdd(1, ordering: .relaxed) }
        s.everUp = true
        s.resetPipeline()
        s.subCount = 0
        if mode == .unknown {
            askTopology(s, now)   // plain Redis or cluster? (RedisLinkTopology)
        } else {
            shardReady(s, now)
            if needRefresh { refreshAt = now }
        }
    }

    /// The link knows the mode and `s` is up: load the scripts there, send this node's keys
    /// (the next heartbeat, right away) and subscribe the rooms its slots serve.
    func shardReady(_ s: RedisShard, _ now: Int) {
        guard s.up, !s.ready else { return }
        s.ready = true
        s.readyAt = now
        for (i, src) in Self.scripts.enumerated() { command(on: s, ["SCRIPT", "LOAD", src], .scriptLoad(i)) }
        nextHeartbeatAt = now
        placeNeeded = true
        placeRooms()
        let wasConnected = connected.exchange(true, ordering: .releasing)
        logger.info(wasConnected ? "redis shard up" : "redis link up", [
            "redis": s.address, "node": settings.nodeId, "mode": mode == .cluster ? "cluster" : "single",
            "masters": String(masters.load(ordering: .relaxed)), "rooms": String(activeRooms.count),
            "reconnects": String(reconnects.load(ordering: .relaxed)),
        ])
    }

    func shardDown(_ s: RedisShard, _ why: String) {
        let wasUp = s.up
        s.up = false
        s.ready = false
        // Publishes written but not acknowledged are lost (counted; chat senders answered).
        let lost = s.unacknowledgedPublishes
        failPipeline(s, reason: "redis connection lost")
        if topologyAsked === s { topologyAsked = nil }
        s.cmd.close()
        s.sub.close()
        dropRooms(of: s)
        if mode == .single || !shards.contains(where: { $0.up }) {
            // The only server is gone: queued publishes fail now rather than wait for it.
            connected.store(false, ordering: .releasing)
            failQueuedPublishes(reason: "redis unavailable")
            clusterCounts.withLock { $0.removeAll() }
            remoteCounts.withLock { $0.removeAll() }
            if mode == .single {
                mode = .unknown
                for i in 0..<ClusterSlots.count { slotOwner[i] = nil }
            }
        }
        if mode == .cluster {
            // Ask the other masters who serves these slots now, until a reachable one does.
            needRefresh = true
            refreshAt = Self.nowMillis()
            if !shards.contains(where: { $0.up }) { ensureSeedProbe() }
        }
        // The backoff starts over only after a link that held for a while, so a server that
        // accepts and then drops every connection is retried at most every 2 s.
        if wasUp && Self.nowMillis() - s.upSince >= 2000 { s.backoffMillis = 100 }
        if wasUp {
            s.loggedDown = true
            logger.warning("redis link down, reconnecting", [
                "redis": s.address, "error": why, "unacknowledged_publishes": String(lost),
            ])
        }
        scheduleRetry(s)
    }

    /// The rooms subscribed through `s` are no longer received: subscribe them again where
    /// their slot lives once known, and tell onRoomResubscribed when that is confirmed.
    func dropRooms(of s: RedisShard) {
        for room in s.rooms {
            roomShard[room] = nil
            if activeRooms.contains(room) {
                unplacedRooms.insert(room)
                lostRooms.insert(room)
            }
        }
        s.rooms.removeAll()
        s.subCount = 0
        placeNeeded = true
        updateSubscribedCount()
    }

    func updateSubscribedCount() {
        var n = 0
        for s in shards { n += s.subCount }
        subscribedRooms.store(n, ordering: .relaxed)
    }

    func shutdown(cleanup: Bool, buffer: UnsafeMutableRawBufferPointer) {
        let wasUp = shards.contains { $0.up }
        if wasUp && cleanup && mode != .unknown {
            keyCommand(nodeKey, ["DEL", nodeKey])
            for room in localCounts.keys { roomCommand(room, ["HDEL", roomKey("members", room), settings.nodeId], .ignore) }
            for user in users.keys { sendUserDelete(user) }
            let deadline = Self.nowMillis() + 500
            var fds: [pollfd] = []
            var live: [RedisShard] = []
            while true {
                live = shards.filter { $0.up && $0.waiting }
                let left = deadline - Self.nowMillis()
                if live.isEmpty || left <= 0 { break }
                fds = live.map { pollfd(fd: $0.cmd.fd, events: Int16(POLLIN) | ($0.cmd.wantsWrite ? Int16(POLLOUT) : 0), revents: 0) }
                for s in live { try? s.cmd.flush() }
                if poll(&fds, nfds_t(fds.count), Int32(left)) <= 0 { continue }
                for (i, s) in live.enumerated() where fds[i].revents & ~Int16(POLLOUT) != 0 {
                    do throws(RedisLinkError) {
                        try s.cmd.read(buffer: buffer) { r throws(RedisLinkError) in try onCommandReply(s, r) }
                    } catch {
                        logger.debug("redis cleanup incomplete", ["redis": s.address, "error": error.description])
                        s.up = false
                        s.cmd.close()
                    }
                }
            }
        }
        connected.store(false, ordering: .releasing)
        for s in shards {
            if s.up { failPipeline(s, reason: "redis link stopped") } else { s.resetPipeline() }
            s.up = false
            s.cmd.close()
            s.sub.close()
        }
        failQueuedPublishes(reason: "redis link stopped")
        subscribedRooms.store(0, ordering: .relaxed)
        clusterCounts.withLock { $0.removeAll() }
        remoteCounts.withLock { $0.removeAll() }
        logger.info("redis link stopped", ["node": settings.nodeId, "was_connected": String(wasUp), "cleanup": String(cleanup)])
    }
}

extension RedisLink {
    /// Takes every publish still queued in the inbox and fails it (each sender told, counted).
    func failQueuedPublishes(reason: String) {
        var queued: [UInt8] = []
        let n = inbox.withLock { box in
            let n = box.publishCount
            box.publishCount = 0
            swap(&queued, &box.publishes)
            return n
        }
        failRecords(queued, count: n, reason: reason)
    }
}
