import Glibc
import Primitives
import Synchronization

// The link thread's side of cluster-wide offsets: chat lines from pub/sub appended to the
// room logs at their offsets, gaps filled from the room's stream (the sync script), rooms
// primed when their first local member joins and re-synced after a (re)subscribe. See
// RedisLinkChat.swift for the scripts and the publish side.

extension RedisLink {
    /// The room's subscription is (re)confirmed after being lost, or new: fetch what the
    /// node's log is missing (everything after its last offset; the tail when the room is
    /// new here or the epoch changed). Called when the room's subscription is confirmed (new,
    /// or again after it was lost: a shard down, a failover, a moved slot), before
    /// onRoomResubscribed.
    func roomResubscribed(_ room: String) {
        guard chatSink != nil, roomSync[room] != nil,
              let s = slotOwner[ClusterSlots.slot(ofRoom: room)], s.up else { return }
        if roomSync[room]!.fetching { return }
        roomSync[room]!.fetching = true
        sendSync(room)
    }

    private func sendSync(_ room: String) {
        guard let log = chatSink?.chatLog(room) else {
            roomSync[room]?.fetching = false
            return
        }
        guard let s = slotOwner[ClusterSlots.slot(ofRoom: room)], s.up else {
            // Its master is unreachable: fetched once the room is subscribed again.
            roomSync[room]?.fetching = false
            lostRooms.insert(room)
            return
        }
        _ = s
        let (epoch, last) = log.withLock { (log.epoch, log.last) }
        let known = syncedRooms.withLock { $0.contains(room) } ? last : -1
        streamFetches.wrappingAdd(1, ordering: .relaxed)
        var rng = SystemRandomNumberGenerator()
        roomScript(Self.syncScript, room: room, keys: [roomKey("meta", room), roomKey("log", room)],
                   args: [epoch, String(known), String(max(1, settings.historySize)), String(settings.historyTTLMillis),
                          RESP.hex12(rng.next())],
                   .roomSync(room))
    }

    /// `<epoch>\n<offset>\n<sender>\n<line>` from the chat script.
    func onChatMessage(room: String, _ p: UnsafeRawBufferPointer, own: Bool) {
        guard let e1 = p.firstIndex(of: 10), let e2 = p[(e1 + 1)...].firstIndex(of: 10),
              let e3 = p[(e2 + 1)...].firstIndex(of: 10),
              let n = Self.decimal(UnsafeRawBufferPointer(rebasing: p[(e1 + 1)..<e2])), n > 0,
              let tag = Self.decimal(UnsafeRawBufferPointer(rebasing: p[(e2 + 1)..<e3]))
        else {
            logger.debug("malformed cluster chat line dropped")
            return
        }
        let sender = own ? tag : 0
        let epoch = String(decoding: UnsafeRawBufferPointer(rebasing: p[0..<e1]), as: UTF8.self)
        let line = UnsafeRawBufferPointer(rebasing: p[(e3 + 1)...])
        guard roomSync[room] != nil else { return }
        if roomSync[room]!.fetching || !syncedRooms.withLock({ $0.contains(room) }) {
            roomSync[room]!.held.append(HeldChat(epoch: epoch, offset: n, sender: UInt64(bitPattern: Int64(sender)), line: [UInt8](line)))
            return
        }
        if append(room, epoch: epoch, offset: n, sender: UInt64(bitPattern: Int64(sender)), line, force: false) == .gap {
            // Missed lines (a reconnect, a failover): fetch them, hold this one and later ones.
            roomSync[room]!.held.append(HeldChat(epoch: epoch, offset: n, sender: UInt64(bitPattern: Int64(sender)), line: [UInt8](line)))
            roomSync[room]!.fetching = true
            sendSync(room)
        }
    }

    /// Appends one line to the room's log at its offset (`force`: a gap that could not be
    /// filled is counted as lost and skipped).
    @discardableResult
    private func append(_ room: String, epoch: String, offset n: Int, sender: UInt64,
                        _ line: UnsafeRawBufferPointer, force: Bool) -> RoomLog.ClusterAppend {
        guard let sink = chatSink, let log = sink.chatLog(room) else { return .duplicate }
        let limits = sink.chatHistory
        let now = Clock.monoNanos()
        let second = UInt32(truncatingIfNeeded: now / 1_000_000_000)
        let (result, lost, delta) = log.withLock { () -> (RoomLog.ClusterAppend, Int, Int) in
            let before = log.accountedBytes
            // Another epoch past its first line: fetch the new epoch's start first.
            if epoch != log.epoch && n > 1 && !force { return (.gap, 0, 0) }
            let lost = force && epoch == log.epoch && n > log.last + 1 ? n - log.last - 1 : 0
            let r = log.appendClusterLocked(epoch: epoch, offset: n, line, sender: sender, origin: now,
                                            keep: limits.size, force: force)
            if r == .appended { _ = log.evictLocked(limits, nowSecond: second, overBudget: false) }
            return (r, lost, log.accountedBytes - before)
        }
        if lost > 0 { lostMessages.wrappingAdd(lost, ordering: .relaxed) }
        if result == .appended { sink.chatAppended(room, bytesDelta: delta) }
        return result
    }

    /// The sync script's reply: {epoch, seq, n1, line1, …} (newest entries after what the node
    /// held, or the tail).
    func onSyncReply(_ s: RedisShard, _ room: String, _ r: RedisReply) {
        guard roomSync[room] != nil else { return }
        roomSync[room]!.fetching = false
        let wasSynced = syncedRooms.withLock { $0.contains(room) }
        if let sink = chatSink, let log = sink.chatLog(room), r.isArray, r.count >= 2,
           let e = r[0], e.isString, let s = r[1], s.isInteger {
            let epoch = e.string, seq = s.integer
            let firstHeld = roomSync[room]!.held.first(where: { $0.epoch == epoch })?.offset
            let limits = sink.chatHistory
            let now = Clock.monoNanos()
            let second = UInt32(truncatingIfNeeded: now / 1_000_000_000)
            let (lost, delta) = log.withLock { () -> (Int, Int) in
                let before = log.accountedBytes
                let counting = wasSynced && epoch == log.epoch
                if !counting {
                    // New here (or a new epoch): the stream's tail is the history.
                    let firstN = r.count >= 4 ? (r[2]?.integer ?? seq + 1) : seq + 1
                    if log.last != firstN - 1 || epoch != log.epoch { log.restartLocked(epoch: epoch, after: max(0, firstN - 1)) }
                }
                var lost = 0
                var i = 2
                while i + 1 < r.count {
                    if let ni = r[i], ni.isInteger, let li = r[i + 1], li.isString {
                        let n = ni.integer
                        if n > log.last + 1 && counting { lost += n - log.last - 1 }
                        _ = log.appendClusterLocked(epoch: epoch, offset: n, li.bytes, sender: 0, origin: now,
                                                    keep: limits.size, force: true)
                    }
                    i += 2
                }
                if seq > log.last {
                    // Offsets Redis handed out that the stream no longer has.
                    if counting { lost += seq - log.last }
                    log.restartLocked(epoch: epoch, after: seq)
                }
                // Primed (the node did not follow the room): what the stream held is history,
                // not news, for members already attached here.
                // Lines that came over pub/sub meanwhile (held) are news all the same.
                if !wasSynced { log.markDeliveredLocked(through: (firstHeld ?? Int.max) - 1) }
                _ = log.evictLocked(limits, nowSecond: second, overBudget: false)
                return (lost, log.accountedBytes - before)
            }
            if lost > 0 { lostMessages.wrappingAdd(lost, ordering: .relaxed) }
            sink.chatAppended(room, bytesDelta: delta)
        } else if r.isError {
            logger.warning("redis room sync failed", ["room": room, "error": r.string])
            if r.hasPrefix("NOSCRIPT") { noteError(s, r, what: "room sync") }
        }
        if !wasSynced { syncedRooms.withLock { _ = $0.insert(room) } }
        replayHeld(room)
    }

    /// The lines that arrived during a fetch, in order; a gap left after a fetch sent once
    /// they were held is fetched once more (the fetch may have raced the subscription), then
    /// counted as lost.
    private func replayHeld(_ room: String) {
        guard var st = roomSync[room], !st.held.isEmpty else {
            roomSync[room]?.retried = false
            return
        }
        let held = st.held
        st.held.removeAll()
        for (i, h) in held.enumerated() {
            let r = h.line.withUnsafeBytes { append(room, epoch: h.epoch, offset: h.offset, sender: h.sender, $0, force: st.retried) }
            if r == .gap {
                st.retried = true
                st.fetching = true
                st.held = Array(held[i...])
                roomSync[room] = st
                sendSync(room)
                return
            }
        }
        st.retried = false
        roomSync[room] = st
    }

    static func decimal(_ b: UnsafeRawBufferPointer) -> Int? {
        guard !b.isEmpty, b.count <= 20 else { return nil }
        var v: UInt64 = 0
        for c in b {
            guard c >= 48 && c <= 57 else { return nil }
            v = v &* 10 &+ UInt64(c - 48)
        }
        return Int(bitPattern: UInt(v))
    }
}
