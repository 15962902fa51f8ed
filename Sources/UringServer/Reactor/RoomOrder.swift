import Primitives

// Room order: chat lines go through the room's log (RoomLog.swift), which gives each one its
// offset; every reactor delivers the log to its members in offset order, so all members of a
// room see one order however many reactors they are spread over. Other reactors learn of new
// entries by a poke (an empty hand-off record) at the end of the sender's turn and copy them
// out themselves.

/// What `joined` says about a room (and, with `since`, about the recovery).
public struct RoomPosition {
    public var epoch: String
    /// The last offset this member is not sent: it receives every message after it.
    public var offset: Int
    /// Set when the join carried `since`.
    public var recovered: Bool?
    public var missed = 0
}

extension Reactor {
    /// Appends a chat line to `room`'s log and delivers it to this reactor's members (except
    /// `excluded`), after any entries other reactors appended before it. `body` renders the
    /// line without its closing brace: the log adds `,"offset":N}`. Returns N (the ack's offset).
    public func publish(_ room: LocalRoom, excluding excluded: Connection?, _ body: (inout ByteBuffer) -> Void) -> Int {
        render.removeAll()
        body(&render)
        let log = room.shared.log
        let second = UInt32(truncatingIfNeeded: turnNanos / 1_000_000_000)
        let origin = originNanos
        // The entry's age (TTL) is counted from it: a line made without a received message
        // (a plugin's) is stamped with this turn.
        let stamp = origin != 0 ? origin : turnNanos != 0 ? turnNanos : Clock.monoNanos()
        logEntries.removeAll()
        let from = room.cursor + 1
        let limits = historyLimits, over = historyOverBudget, me = index
        let (n, evicted, early, delta) = log.withLock { () -> (Int, Int, Int, Int) in
            let before = log.accountedBytes
            let n = log.appendLocked(render.readable, origin: stamp, keep: limits.size)
            // Entries other reactors appended since this reactor last delivered go first.
            if from < n { _ = log.copyLocked(from: from, through: n - 1, into: logEntries) }
            log.setCursorLocked(me, n)
            let (ev, early, _) = log.evictLocked(limits, nowSecond: second, overBudget: over)
            return (n, ev, early, log.accountedBytes - before)
        }
        room.cursor = n
        counters.historyEvictions &+= evicted
        counters.historyEarlyEvictions &+= early
        counters.historyBytesDelta &+= delta
        if !logEntries.isEmpty { deliverCopied(room) }
        originNanos = origin
        var suffix: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        let count = withUnsafeMutableBytes(of: &suffix) { RoomLog.renderSuffix(n, into: $0) }
        withUnsafeBytes(of: &suffix) { render.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        renderGeneration &+= 1
        deliverLocal(room, render.readable, excluding: excluded)
        if !room.pokePending && room.shared.reactorMask.load(ordering: .acquiring) & ~(UInt64(1) << UInt64(index)) != 0 {
            room.pokePending = true
            roomsToPoke.append(room)
        }
        ackOffset = n
        return n
    }

    /// Delivers to this reactor's members what the room's log holds after its cursor (a poke
    /// from another reactor, or a join that must not let a new member see older entries).
    func catchUp(_ local: LocalRoom) {
        let log = local.shared.log
        var from = local.cursor + 1
        let me = index
        logEntries.removeAll()
        let upTo = log.withLock { () -> Int in
            if log.generation != local.logGeneration {   // the log restarted (cluster epoch change)
                local.logGeneration = log.generation
                local.cursor = max(log.first - 1, min(log.resumeAfter, log.last))
                from = local.cursor + 1
                log.setCursorLocked(me, local.cursor)
            }
            let last = log.last
            if last < from { return -1 }
            _ = log.copyLocked(from: from, through: last, into: logEntries)
            log.setCursorLocked(me, last)
            return last
        }
        guard upTo >= 0 else { return }
        local.cursor = upTo
        deliverCopied(local)
    }

    /// Delivers the entries copied into `logEntries` to the room's members, in order.
    private func deliverCopied(_ local: LocalRoom) {
        for i in 0..<logEntries.count {
            let e = logEntries[i]
            originNanos = e.origin
            renderGeneration &+= 1
            let s = logEntries.sender(i)
            deliverLocal(local, logEntries.line(i), excluding: s == 0 ? nil : excludedSender(s))
        }
    }

    /// Cluster mode: the connection of this reactor that sent a line (tag from ClusterSender)
    /// when it did not ask for its own lines back.
    private func excludedSender(_ tag: UInt64) -> Connection? {
        guard let (r, slot, gen) = ClusterSender.unpack(tag), r == index,
              let c = connection(slot: slot, generation: gen), !c.echo else { return nil }
        return c
    }

    /// The connection in `slot` if it is still the one of `generation` (a name that is safe to
    /// pass across threads: a stale one resolves to nil).
    func connection(slot: Int, generation: UInt32) -> Connection? {
        guard slot >= 0, slot < connections.count, let c = connections[slot], c.generation == generation,
              !c.closing else { return nil }
        return c
    }

    /// End of turn: one poke per room with new entries, to every other reactor in its mask.
    func pokeRooms() {
        for local in roomsToPoke {
            local.pokePending = false
            let room = local.shared
            var mask = room.reactorMask.load(ordering: .acquiring) & ~(UInt64(1) << UInt64(index))
            while mask != 0 {
                let r = mask.trailingZeroBitCount
                let bit = UInt64(1) << UInt64(r)
                mask &= mask - 1
                peersToWake |= bit
                if !shared.handoff[index][r]!.tryWrite(room: room, origin: 0, body: UnsafeRawBufferPointer(start: nil, count: 0)) {
                    shared.reactors[r].inbox.post(RoomDelivery(room: room, message: pokeMessage))
                }
            }
        }
        roomsToPoke.removeAll(keepingCapacity: true)
    }

    /// `joined` for `c` (already admitted to `local`), then, when the join carried `since`, the
    /// entries it missed (or whatever history remains) as ordinary chat lines, before anything
    /// newer. `since` is (epoch, offset) with offset ≤ the room's latest (checked by the caller).
    public func replyJoined(_ c: Connection, _ local: LocalRoom, since: (epoch: String, offset: Int)?,
                            rejoin: Bool, _ render: (inout ByteBuffer, RoomPosition) -> Void) {
        // A member re-joining gets what this reactor has not delivered yet first (as live lines).
        if rejoin { catchUp(local) }
        let log = local.shared.log
        var pos = RoomPosition(epoch: log.withLock { log.epoch }, offset: local.cursor)
        logEntries.removeAll()
        if let since {
            let cursor = local.cursor
            let limits = historyLimits, second = UInt32(truncatingIfNeeded: batchNow() / 1_000_000_000)
            let sameEpoch = since.epoch == pos.epoch
            let from = sameEpoch ? since.offset + 1 : 1
            let (held, evicted, freed) = log.withLock { () -> (Bool, Int, Int) in
                let (ev, _, freed) = log.evictLocked(limits, nowSecond: second, overBudget: false)   // expired ones first
                let held = from > cursor || from >= log.first
                if from <= cursor { _ = log.copyLocked(from: from, through: cursor, into: logEntries) }
                return (held, ev, freed)
            }
            counters.historyEvictions &+= evicted
            counters.historyBytesDelta &-= freed
            pos.recovered = sameEpoch && held
            pos.missed = sameEpoch ? max(0, cursor - since.offset) : cursor
            if !sameEpoch { counters.recoveriesFailedEpoch &+= 1 } else if !held { counters.recoveriesFailedEvicted &+= 1 } else { counters.recoveriesOK &+= 1 }
        }
        reply(to: c) { b in render(&b, pos) }
        guard !logEntries.isEmpty else { return }
        let origin = originNanos
        // The entry's age (TTL) is counted from it: a line made without a received message
        // (a plugin's) is stamped with this turn.
        let stamp = origin != 0 ? origin : turnNanos != 0 ? turnNanos : Clock.monoNanos()
        originNanos = 0   // replayed lines are not a latency sample
        for i in 0..<logEntries.count {
            renderGeneration &+= 1
            enqueue(logEntries.line(i), to: c)
        }
        counters.messagesReplayed &+= logEntries.count
        originNanos = origin
    }

    /// The room's epoch and latest offset (nil: no such room here), for checking `since`.
    public func roomLatest(_ name: String) -> (epoch: String, latest: Int)? {
        guard let room = shared.rooms.lookup(name) else { return nil }
        return room.log.withLock { (room.log.epoch, room.log.last) }
    }
}
