import Glibc

// The link thread: its poll() loop over the wake eventfd and the two Redis connections, and
// how it takes the work the callers queued in the inbox.

extension RedisLink {
    func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        logger.info("redis link starting", [
            "redis": "\(settings.redisHost):\(settings.redisPort)", "node": settings.nodeId,
        ])
        nextAttemptAt = Self.nowMillis()
        var fds = [pollfd](repeating: pollfd(), count: 3)
        while true {
            var now = Self.nowMillis()
            if let cleanup = takeInbox() {
                shutdown(cleanup: cleanup, buffer: buffer)
                return
            }
            if !up {
                if cmd.state == .closed && sub.state == .closed {
                    if now >= nextAttemptAt { attemptConnect(now) }
                } else if now >= connectDeadline {
                    connectFailed("connect timed out")
                }
            }
            if up {
                if now >= nextHeartbeatAt { heartbeat(now) }
                sendDirtyRooms()
                if expectHead < expect.count && now - cmdWaitingSince > settings.replyTimeoutMillis {
                    linkDown("redis command connection not responding")
                } else if subPings > 0 && now - subWaitingSince > settings.replyTimeoutMillis {
                    linkDown("redis pub/sub connection not responding")
                }
            }
            flushBoth()

            // Poll.
            var n = 0
            fds[n] = pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)
            n += 1
            let cmdSlot = cmd.state == .closed ? -1 : n
            if cmdSlot >= 0 {
                fds[n] = pollfd(fd: cmd.fd, events: Int16(POLLIN) | (cmd.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
                n += 1
            }
            let subSlot = sub.state == .closed ? -1 : n
            if subSlot >= 0 {
                fds[n] = pollfd(fd: sub.fd, events: Int16(POLLIN) | (sub.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)
                n += 1
            }
            var deadline: Int
            if up {
                deadline = nextHeartbeatAt
            } else if cmd.state == .closed && sub.state == .closed {
                deadline = nextAttemptAt
            } else {
                deadline = connectDeadline
            }
            if wakeFD < 0 { deadline = min(deadline, now + 10) }
            let timeout = Int32(max(0, min(1000, deadline - now)))
            let rc = poll(&fds, nfds_t(n), timeout)
            if rc < 0 {
                if Errno.current.rawValue != EINTR { usleep(1000) }
                continue
            }
            if rc == 0 { continue }
            now = Self.nowMillis()
            if fds[0].revents != 0 { wakeEvent?.drain() }
            let errMask = Int16(POLLERR) | Int16(POLLHUP) | Int16(POLLNVAL)
            for (conn, slot) in [(cmd, cmdSlot), (sub, subSlot)] where slot >= 0 {
                let ev = fds[slot].revents
                if ev == 0 { continue }
                do throws(RedisLinkError) {
                    if conn.state == .connecting {
                        try conn.finishConnect()
                        if cmd.state == .up && sub.state == .up { linkUp(now) }
                        continue
                    }
                    guard conn.state == .up else { continue }
                    if ev & (Int16(POLLIN) | errMask) != 0 {
                        if conn === cmd {
                            try conn.read(buffer: buffer) { r throws(RedisLinkError) in try onCommandReply(r) }
                        } else {
                            try conn.read(buffer: buffer) { r throws(RedisLinkError) in try onPubSubReply(r) }
                        }
                    }
                    if ev & Int16(POLLOUT) != 0 { try conn.flush() }
                } catch {
                    if up { linkDown(error.description) } else { connectFailed(error.description) }
                    break
                }
            }
        }
    }

    /// Applies queued operations and moves queued publishes into the command pipeline.
    /// Returns non-nil when stop() was called (the cleanup flag).
    private func takeInbox() -> Bool? {
        let room = up && cmd.unwritten < 256 << 10
        var ops: [Op] = []
        var pubCount = 0
        var stop: Bool?
        inbox.withLock { box in
            swap(&ops, &box.ops)
            stop = box.stop
            if box.publishCount > 0 && (room || !up) {
                pubCount = box.publishCount
                box.publishCount = 0
                swap(&box.publishes, &spare)
                takeTickets(&box)
            }
        }
        if pubCount > 0 {
            if up {
                if cmd.out.isEmpty {
                    swap(&cmd.out, &spare)
                } else {
                    cmd.out.append(contentsOf: spare)
                }
                expectReply(.publishes(pubCount))
            } else {
                countFailures(pubCount, reason: "redis unavailable")
                failTickets()
            }
            spare.removeAll(keepingCapacity: spare.capacity <= 4 << 20)
        }
        for op in ops { apply(op) }
        return stop
    }

    private func apply(_ op: Op) {
        switch op {
        case .activate(let room):
            if activeRooms.insert(room).inserted {
                roomSync[room] = RoomSync()
                if up {
                    sendSubscribe("SUBSCRIBE", [room])
                    roomResubscribed(room)
                }
                dirtyRooms.insert(room)
            }
        case .deactivate(let room):
            if activeRooms.remove(room) != nil {
                roomSync[room] = nil
                _ = syncedRooms.withLock { $0.remove(room) }
                if up { sendSubscribe("UNSUBSCRIBE", [room]) }
                // The last local member left: this node's count is 0 (HDEL), whether or not
                // setLocalMemberCount(0) was called too.
                if localCounts.removeValue(forKey: room) != nil { dirtyRooms.insert(room) }
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
            if users[user] == 1 && up { sendUserKey(user) }
        case .userOff(let user):
            guard let c = users[user] else { return }
            if c > 1 {
                users[user] = c - 1
            } else {
                users[user] = nil
                if up { sendUserDelete(user) }
            }
        }
    }

    private func flushBoth() {
        do throws(RedisLinkError) {
            try cmd.flush()
            try sub.flush()
        } catch {
            if up { linkDown(error.description) } else { connectFailed(error.description) }
        }
    }
}
