import Glibc
import Synchronization

// Connection state of the link thread: connecting with backoff, going up (re-sending
// everything Redis must know about this node) and down (counting what was lost), and the
// shutdown that removes this node's keys.

extension RedisLink {
    func attemptConnect(_ now: Int) {
        let addr: RedisAddress
        switch RedisAddress.resolve(host: settings.redisHost, port: settings.redisPort) {
        case .success(let a): addr = a
        case .failure(let e):
            connectFailed(e.description)
            return
        }
        do throws(RedisLinkError) {
            try cmd.connect(addr)
            try sub.connect(addr)
        } catch {
            connectFailed(error.description)
            return
        }
        connectDeadline = now + settings.connectTimeoutMillis
        if cmd.state == .up && sub.state == .up { linkUp(now) }
    }

    func connectFailed(_ why: String) {
        cmd.close()
        sub.close()
        if !loggedDown {
            loggedDown = true
            logger.warning("redis unreachable, retrying", [
                "redis": "\(settings.redisHost):\(settings.redisPort)", "error": why,
            ])
        } else {
            logger.debug("redis connect failed", ["error": why, "retry_ms": String(backoffMillis)])
        }
        scheduleRetry()
    }

    private func scheduleRetry() {
        nextAttemptAt = Self.nowMillis() + backoffMillis
        backoffMillis = min(backoffMillis * 2, 2000)
    }

    func linkUp(_ now: Int) {
        up = true
        upSince = now
        loggedDown = false
        if everUp { reconnects.wrappingAdd(1, ordering: .relaxed) }
        everUp = true
        expect.removeAll(keepingCapacity: true)
        expectHead = 0
        subPings = 0
        forgetScripts()
        scriptsLoading = false
        loadScripts()
        heartbeat(now)  // node key first, then user keys and every tracked room's presence
        dirtyRooms.removeAll()
        if !activeRooms.isEmpty { sendSubscribe("SUBSCRIBE", Array(activeRooms)) }
        // What the rooms missed while the link was down comes from their streams.
        for room in activeRooms { roomResubscribed(room) }
        connected.store(true, ordering: .releasing)
        logger.info("redis link up", [
            "redis": "\(settings.redisHost):\(settings.redisPort)", "node": settings.nodeId,
            "rooms": String(activeRooms.count), "reconnects": String(reconnects.load(ordering: .relaxed)),
        ])
    }

    func linkDown(_ why: String) {
        connected.store(false, ordering: .releasing)
        forgetScripts()
        let wasUp = up
        up = false
        // Publishes written but not acknowledged, and those still queued, are lost.
        var lost = 0
        for e in expect[expectHead...] { if case .publishes(let n) = e { lost += n } }
        lost += inbox.withLock { box in
            let n = box.publishCount
            box.publishCount = 0
            box.publishes.removeAll(keepingCapacity: box.publishes.capacity <= 4 << 20)
            takeTickets(&box)
            return n
        }
        failTickets()
        countFailures(lost, reason: "redis connection lost")
        expect.removeAll(keepingCapacity: true)
        expectHead = 0
        subPings = 0
        subscribedRooms.store(0, ordering: .relaxed)
        clusterCounts.withLock { $0.removeAll() }
        remoteCounts.withLock { $0.removeAll() }
        cmd.close()
        sub.close()
        // The backoff starts over only after a link that held for a while, so a server that
        // accepts and then drops every connection is retried at most every 2 s.
        if wasUp && Self.nowMillis() - upSince >= 2000 { backoffMillis = 100 }
        if wasUp {
            loggedDown = true
            logger.warning("redis link down, reconnecting", ["error": why, "unacknowledged_publishes": String(lost)])
        }
        scheduleRetry()
    }

    func shutdown(cleanup: Bool, buffer: UnsafeMutableRawBufferPointer) {
        if up && cleanup {
            let p = settings.channelPrefix
            command(["DEL", nodeKey])
            for room in localCounts.keys { command(["HDEL", "\(p):members:\(room)", settings.nodeId]) }
            for user in users.keys { sendUserDelete(user) }
            let deadline = Self.nowMillis() + 500
            do throws(RedisLinkError) {
                while expectHead < expect.count {
                    try cmd.flush()
                    let left = deadline - Self.nowMillis()
                    if left <= 0 { break }
                    var pfd = pollfd(fd: cmd.fd, events: Int16(POLLIN) | (cmd.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
                    if poll(&pfd, 1, Int32(left)) > 0 && pfd.revents & ~Int16(POLLOUT) != 0 {
                        try cmd.read(buffer: buffer) { r throws(RedisLinkError) in try onCommandReply(r) }
                    }
                }
            } catch {
                logger.debug("redis cleanup incomplete", ["error": error.description])
            }
        }
        let wasUp = up
        connected.store(false, ordering: .releasing)
        up = false
        var lost = 0
        for e in expect[expectHead...] { if case .publishes(let n) = e { lost += n } }
        lost += inbox.withLock { box in
            let n = box.publishCount
            box.publishCount = 0
            box.publishes = []
            takeTickets(&box)
            return n
        }
        failTickets()
        countFailures(lost, reason: "redis link stopped")
        expect.removeAll()
        expectHead = 0
        cmd.close()
        sub.close()
        subscribedRooms.store(0, ordering: .relaxed)
        clusterCounts.withLock { $0.removeAll() }
        remoteCounts.withLock { $0.removeAll() }
        logger.info("redis link stopped", ["node": settings.nodeId, "was_connected": String(wasUp), "cleanup": String(cleanup)])
    }
}
