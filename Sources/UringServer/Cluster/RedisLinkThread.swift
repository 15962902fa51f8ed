import Glibc

// The link thread: its poll() loop over the wake eventfd and every shard's two connections,
// and how it takes the work the callers queued in the inbox.

extension RedisLink {
    func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        logger.info("redis link starting", [
            "redis": "\(settings.redisHost):\(settings.redisPort)", "node": settings.nodeId,
        ])
        let first = addShard(host: settings.redisHost, port: settings.redisPort)
        seed = first
        first.nextAttemptAt = Self.nowMillis()
        var fds: [pollfd] = []
        var owners: [(shard: RedisShard, pubsub: Bool)] = []
        while true {
            var now = Self.nowMillis()
            if let cleanup = takeInbox() {
                shutdown(cleanup: cleanup, buffer: buffer)
                return
            }
            for s in shards { drive(s, now) }
            if mode != .unknown {
                if now >= nextHeartbeatAt { heartbeat(now) }
                sendDirtyRooms()
                if mode == .cluster && needRefresh && now >= refreshAt { refreshTopology(now) }
                placeRooms()
            }
            flushAll()
            retireShards()

            // Poll.
            fds.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            var deadline = now + 1000
            for s in shards {
                if s.cmd.state != .closed {
                    fds.append(pollfd(fd: s.cmd.fd, events: Int16(POLLIN) | (s.cmd.wantsWrite ? Int16(POLLOUT) : 0), revents: 0))
                    owners.append((s, false))
                }
                if s.sub.state != .closed {
                    fds.append(pollfd(fd: s.sub.fd, events: Int16(POLLIN) | (s.sub.wantsWrite ? Int16(POLLOUT) : 0), revents: 0))
                    owners.append((s, true))
                }
                if s.up {
                    deadline = min(deadline, nextHeartbeatAt)
                } else if s.cmd.state == .closed && s.sub.state == .closed {
                    deadline = min(deadline, s.nextAttemptAt)
                } else {
                    deadline = min(deadline, s.connectDeadline)
                }
            }
            if needRefresh { deadline = min(deadline, refreshAt) }
            if wakeFD < 0 { deadline = min(deadline, now + 10) }
            let timeout = Int32(max(0, min(1000, deadline - now)))
            let rc = poll(&fds, nfds_t(fds.count), timeout)
            if rc < 0 {
                if Errno.current.rawValue != EINTR { usleep(1000) }
                continue
            }
            if rc == 0 { continue }
            now = Self.nowMillis()
            if fds[0].revents != 0 { wakeEvent?.drain() }
            let errMask = Int16(POLLERR) | Int16(POLLHUP) | Int16(POLLNVAL)
            for (i, o) in owners.enumerated() {
                let ev = fds[i + 1].revents
                let s = o.shard
                let conn = o.pubsub ? s.sub : s.cmd
                // An earlier event in this round may have closed (or reopened) the connection.
                if ev == 0 || conn.fd != fds[i + 1].fd { continue }
                do throws(RedisLinkError) {
                    if conn.state == .connecting {
                        try conn.finishConnect()
                        if s.cmd.state == .up && s.sub.state == .up { shardUp(s, now) }
                        continue
                    }
                    guard conn.state == .up else { continue }
                    if ev & (Int16(POLLIN) | errMask) != 0 {
                        if o.pubsub {
                            try conn.read(buffer: buffer) { r throws(RedisLinkError) in try onPubSubReply(s, r) }
                        } else {
                            try conn.read(buffer: buffer) { r throws(RedisLinkError) in try onCommandReply(s, r) }
                        }
                    }
                    if ev & Int16(POLLOUT) != 0 { try conn.flush() }
                } catch {
                    if s.up { shardDown(s, error.description) } else { connectFailed(s, error.description) }
                }
            }
        }
    }

    /// Connect attempts, connect timeouts and reply timeouts of one shard.
    private func drive(_ s: RedisShard, _ now: Int) {
        if !s.up {
            if s.cmd.state == .closed && s.sub.state == .closed {
                if now >= s.nextAttemptAt { attemptConnect(s, now) }
            } else if now >= s.connectDeadline {
                connectFailed(s, "connect timed out")
            }
        } else if s.waiting && now - s.cmdWaitingSince > settings.replyTimeoutMillis {
            shardDown(s, "redis command connection not responding")
        } else if s.subPings > 0 && now - s.subWaitingSince > settings.replyTimeoutMillis {
            shardDown(s, "redis pub/sub connection not responding")
        }
    }

    /// Applies queued operations and moves queued publishes into the shards' pipelines.
    /// Returns non-nil when stop() was called (the cleanup flag).
    private func takeInbox() -> Bool? {
        var backlog = 0
        for s in shards where s.up { backlog = max(backlog, s.cmd.unwritten) }
        let room = mode != .unknown && backlog < 256 << 10
        var ops: [Op] = []
        var pubCount = 0
        var stop: Bool?
        inbox.withLock { box in
            swap(&ops, &box.ops)
            stop = box.stop
            if box.publishCount > 0 && (room || mode == .unknown) {
                pubCount = box.publishCount
                box.publishCount = 0
                swap(&box.publishes, &spare)
            }
        }
        if pubCount > 0 {
            if mode != .unknown {
                routePublishes()
            } else {
                failRecords(spare, count: pubCount, reason: "redis unavailable")
            }
            spare.removeAll(keepingCapacity: spare.capacity <= 4 << 20)
        }
        for op in ops { apply(op) }
        return stop
    }

    /// Splits the publish records in `spare` by the shard serving each room's slot.
    private func routePublishes() {
        let now = Self.nowMillis()
        let sharded = mode == .cluster
        spare.withUnsafeBytes { buf in
            var offset = 0
            while offset < buf.count {
                let kind = buf[offset]
                offset += 1
                let room = RESP.readRecord(buf, &offset)
                var crc: UInt16 = 0
                ClusterSlots.forEachTagByte(room) { crc = ClusterSlots.crcStep(crc, $0) }
                let expected = roomNodes[Self.roomHash(room)] ?? 0
                let owner = slotOwner[Int(crc) & (ClusterSlots.count - 1)]
                if kind == Self.chatRecord {
                    writeChatBatch(buf, &offset, room: room, to: owner, receivers: expected)
                    continue
                }
                let body = RESP.readRecord(buf, &offset)
                guard let s = owner, s.up else {
                    countFailures(1, reason: "no reachable redis master for the room's slot")
                    continue
                }
                RESP.appendPublish(&s.cmd.out, sharded: sharded, channelPrefix: channelPrefix, room: room,
                                   origin: origin, body: body)
                s.expect(.publishes(1), args: nil, now: now)
                s.addTicket(sender: 0, receivers: expected, id: UnsafeRawBufferPointer(start: nil, count: 0))
            }
        }
    }

    private func apply(_ op: Op) {
        switch op {
        case .activate(let room):
            if activeRooms.insert(room).inserted {
                // Primed from the room's stream once its subscription is confirmed (PubSub).
                roomSync[room] = RoomSync()
                unplacedRooms.insert(room)
                placeNeeded = true
                dirtyRooms.insert(room)
            }
        case .deactivate(let room):
            if activeRooms.remove(room) != nil {
                unplacedRooms.remove(room)
                lostRooms.remove(room)
                roomSync[room] = nil
                _ = syncedRooms.withLock { $0.remove(room) }
                if let s = roomShard.removeValue(forKey: room) {
                    s.rooms.remove(room)
                    if s.up { sendSubscribe(s, unsubscribe: true, room) }
                }
                // The last local member left: this node's count is 0 (HDEL), whether or not
                // setLocalMemberCount(0) was called too.
                if localCounts.removeValue(forKey: room) != nil { dirtyRooms.insert(room) }
                roomNodes[Self.roomHash(room.utf8)] = nil
                _ = clusterCounts.withLock { $0.removeValue(forKey: room) }
                _ = remoteCounts.withLock { $0.removeValue(forKey: room) }
            }
        case .count(let room, let n):
            if localCounts[room] != n {
                localCounts[room] = n > 0 ? n : nil
                dirtyRooms.insert(room)
            }
        case .userOn(let user):
            users[user, default: 0] += 1
            if users[user] == 1 && mode != .unknown { sendUserKey(user) }
        case .userOff(let user):
            guard let c = users[user] else { return }
            if c > 1 {
                users[user] = c - 1
            } else {
                users[user] = nil
                if mode != .unknown { sendUserDelete(user) }
            }
        }
    }

    /// FNV-1a of a room's name: keys `roomNodes` without building a String per publish.
    static func roomHash<C: Sequence>(_ room: C) -> UInt64 where C.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in room { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    private func flushAll() {
        for s in shards {
            do throws(RedisLinkError) {
                try s.cmd.flush()
                try s.sub.flush()
            } catch {
                if s.up { shardDown(s, error.description) } else { connectFailed(s, error.description) }
            }
        }
    }
}
