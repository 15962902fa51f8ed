import Glibc
import Primitives
import Synchronization

// Cluster-wide chat offsets (docs/architecture.md, "Cluster offsets"): a chat line is given
// its offset by one Lua script in Redis (INCR the room's counter, XADD the line to the room's
// stream, PUBLISH it), and every node — the origin included — appends it to its room log at
// that offset when it comes back over pub/sub. A gap in the offsets (a subscriber that missed
// messages: reconnect, failover) is filled from the stream before later lines; what the
// stream no longer has is counted as lost and the log restarts after it, so a `since` before
// the hole is answered recovered:false instead of being silently skipped.

/// Who is owed the reply to one publish on the command connection (one ticket per publish,
/// in pipeline order).
struct PublishTicket {
    /// -1: a plain publish (presence announcements); nobody waits for it.
    var reactor: Int32
    var slot: Int32
    var generation: UInt32
    var idStart: Int32
    var idCount: Int32
    static let plain = PublishTicket(reactor: -1, slot: 0, generation: 0, idStart: 0, idCount: 0)
}

/// What the link needs from the node for chat lines (ClusterNode; called on the link thread).
protocol ClusterChatSink: AnyObject, Sendable {
    /// The room's log on this node (nil: no such room here any more).
    func chatLog(_ room: String) -> RoomLog?
    /// Entries were appended to the room's log (or it restarted): the reactors deliver them.
    func chatAppended(_ room: String, bytesDelta: Int)
    /// The sender's publish got `offset` (0: failed): its reactor acks it (or sends the error).
    func chatAnswered(reactor: Int, slot: Int32, generation: UInt32, offset: Int, id: UnsafeRawBufferPointer)
    var chatHistory: HistoryLimits { get }
}

/// Per active room on the link thread.
struct RoomSync {
    /// A sync script is in flight: chat lines are held until it is applied.
    var fetching = false
    /// The lines held after the last fetch still had a gap once: the next fetch is conclusive.
    var retried = false
    var held: [HeldChat] = []
}

/// A chat line that arrived while its room was being fetched (copied: rare).
struct HeldChat {
    let epoch: String
    let offset: Int
    let sender: UInt64
    let line: [UInt8]
}

extension RedisLink {
    static let chatScript = 2
    static let syncScript = 3
    static let scripts: [String] = presenceScripts + [chatScriptSource, syncScriptSource]

    /// KEYS: meta hash, log stream, channel. ARGV: 1 publish verb, 2 nodeId, 3 the node's epoch
    /// for the room (the new epoch when the meta is gone: history lost), 4 floor (the node's
    /// highest offset in that epoch: a counter that went backwards after a failover never
    /// re-issues an offset members saw), 5 stream MAXLEN (~), 6 TTL ms, 7 sender tag, 8 line.
    /// Returns {epoch, offset}.
    public static let chatScriptSource = """
        local e = redis.call('HGET', KEYS[1], 'epoch')
        if not e then
          e = ARGV[3]
          redis.call('DEL', KEYS[2])
          redis.call('HSET', KEYS[1], 'epoch', e, 'seq', 0)
        end
        local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
        if e == ARGV[3] then
          local floor = tonumber(ARGV[4])
          if n <= floor then
            n = floor + 1
            redis.call('HSET', KEYS[1], 'seq', n)
          end
        end
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], string.format('%d-0', n), 'm', ARGV[8])
        local ttl = tonumber(ARGV[6])
        redis.call('PEXPIRE', KEYS[2], ttl)
        redis.call('PEXPIRE', KEYS[1], math.max(ttl, 86400000))
        redis.call(ARGV[1], KEYS[3], ARGV[2] .. '\\n' .. e .. '\\n' .. string.format('%d', n) .. '\\n' .. ARGV[7] .. '\\n' .. ARGV[8])
        return {e, n}
        """

    /// KEYS: meta hash, log stream. ARGV: 1 the node's epoch, 2 the last offset the node holds
    /// in it (-1: none, send the tail), 3 at most this many entries (the newest after ARGV[2]),
    /// 4 TTL ms, 5 a new epoch (taken when the meta is gone). Returns {epoch, seq, n1, line1, …}.
    static let syncScriptSource = """
        local e = redis.call('HGET', KEYS[1], 'epoch')
        if not e then
          e = ARGV[5]
          redis.call('DEL', KEYS[2])
          redis.call('HSET', KEYS[1], 'epoch', e, 'seq', 0)
          redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[4]), 86400000))
        end
        local seq = tonumber(redis.call('HGET', KEYS[1], 'seq')) or 0
        local known = tonumber(ARGV[2])
        local low = '-'
        if e == ARGV[1] and known >= 0 then low = string.format('%d-1', known) end
        local rev = redis.call('XREVRANGE', KEYS[2], '+', low, 'COUNT', ARGV[3])
        local out = {e, seq}
        for i = #rev, 1, -1 do
          out[#out + 1] = tonumber(string.match(rev[i][1], '^(%d+)'))
          out[#out + 1] = rev[i][2][2]
        end
        return out
        """

    // MARK: callers' side (reactor threads)

    /// Queues a chat line for the chat script (`line` without its closing brace: the log adds
    /// `,"offset":N}`). The reply goes back to the sender's reactor (ack with the offset, or
    /// the error). Returns false when it was not queued (Redis down or too slow): the caller
    /// answers the sender at once.
    public func publishChat(room: String, line: UnsafeRawBufferPointer, epoch: String, floor: Int,
                            reactor: Int, slot: Int32, generation: UInt32, id: UnsafeRawBufferPointer?) -> Bool {
        guard connected.load(ordering: .acquiring) else {
            countFailures(1, reason: "redis unavailable")
            return false
        }
        let max = settings.maxPendingBytes
        let sender = ClusterSender.pack(reactor: reactor, slot: slot, generation: generation)
        let (accepted, wasEmpty) = inbox.withLock { box -> (Bool, Bool) in
            if box.publishes.count >= max { return (false, false) }
            let wasEmpty = box.isEmpty
            // EVALSHA once the link loaded the script on this connection, EVAL before.
            let sha = box.chatSHA
            RESP.appendChatScript(&box.publishes, script: sha ?? chatScriptBody, isSHA: sha != nil, keyPrefixes: chatKeys,
                                  room: room, nodeId: nodeIdBytes, epoch: epoch, floor: floor,
                                  maxLength: settings.historySize, ttlMillis: settings.historyTTLMillis,
                                  sender: sender, line: line, candidate: box.epochCandidate)
            box.epochCandidate &+= 1
            box.publishCount += 1
            box.tickets.append(PublishTicket(reactor: Int32(reactor), slot: slot, generation: generation,
                                             idStart: Int32(box.ticketIDs.count), idCount: Int32(id?.count ?? 0)))
            if let id { box.ticketIDs.append(contentsOf: id) }
            return (true, wasEmpty)
        }
        if !accepted {
            countFailures(1, reason: "redis too slow, publish queue full")
        } else if wasEmpty {
            wake()
        }
        return accepted
    }

    /// Whether the room's log follows the cluster's yet (primed from Redis after the first
    /// local member joined).
    public func roomSynced(_ room: String) -> Bool { syncedRooms.withLock { $0.contains(room) } }

    // MARK: link thread: publish replies

    /// Moves the inbox's tickets behind the link's (with the publishes they belong to).
    func takeTickets(_ box: inout Inbox) {
        if ticketHead == tickets.count {
            tickets.removeAll(keepingCapacity: true)
            ticketIDs.removeAll(keepingCapacity: true)
            ticketHead = 0
        }
        let base = Int32(ticketIDs.count)
        for var t in box.tickets {
            t.idStart += base
            tickets.append(t)
        }
        ticketIDs.append(contentsOf: box.ticketIDs)
        box.tickets.removeAll(keepingCapacity: true)
        box.ticketIDs.removeAll(keepingCapacity: true)
    }

    /// The reply to the oldest outstanding publish.
    func answerTicket(_ r: RedisReply) {
        guard ticketHead < tickets.count else { return }
        let t = tickets[ticketHead]
        ticketHead += 1
        guard t.reactor >= 0 else { return }
        var offset = 0
        if r.isArray, r.count == 2, let n = r[1], n.isInteger { offset = n.integer }
        if offset <= 0 && !r.isError { countFailures(1, reason: "unexpected chat script reply") }
        answer(t, offset: max(0, offset))
    }

    /// Every outstanding publish failed (the link went down or stopped): the senders get errors.
    func failTickets() {
        while ticketHead < tickets.count {
            let t = tickets[ticketHead]
            ticketHead += 1
            if t.reactor >= 0 { answer(t, offset: 0) }
        }
        tickets.removeAll(keepingCapacity: true)
        ticketIDs.removeAll(keepingCapacity: true)
        ticketHead = 0
        for room in roomSync.keys { roomSync[room]?.fetching = false }   // their replies are gone too
    }

    private func answer(_ t: PublishTicket, offset: Int) {
        guard let sink = chatSink else { return }
        ticketIDs.withUnsafeBytes { all in
            let id = UnsafeRawBufferPointer(rebasing: all[Int(t.idStart)..<Int(t.idStart + t.idCount)])
            sink.chatAnswered(reactor: Int(t.reactor), slot: t.slot, generation: t.generation, offset: offset, id: id)
        }
    }
}
