import Glibc
import Primitives
import Synchronization

// Cluster-wide chat offsets (docs/architecture.md, "Cluster offsets"): a chat line is given
// its offset by a Lua script in Redis (INCR the room's counter, XADD the line to the room's
// stream, PUBLISH it; one call for a batch of a room's lines, RedisLinkBatch.swift), and every
// node — the origin included — appends it to its room log at that offset when it comes back
// over pub/sub. A gap in the offsets (a subscriber that missed
// messages: reconnect, failover) is filled from the stream before later lines; what the
// stream no longer has is counted as lost and the log restarts after it, so a `since` before
// the hole is answered recovered:false instead of being silently skipped.

/// Who is owed the reply to one publish on a shard's command connection (one ticket per
/// publish, in that connection's pipeline order; RedisShard.tickets).
struct PublishTicket {
    /// ClusterSender tag of the connection that sent a chat line; 0: a plain publish, nobody
    /// waits for its reply.
    var sender: UInt64
    /// Nodes with members in the room when it was sent (the subscribers Redis should reach).
    var receivers: Int32
    /// The client's message id, in the shard's ticketIDs.
    var idStart: Int32
    var idCount: Int32
    /// How many lines the reply to this ticket answers: 1 for a single publish, K on the
    /// first ticket of a chat batch (its K-1 followers, 0, share that reply).
    var lines: Int32
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
    /// Inbox record kinds (Inbox.publishes).
    static let plainRecord: UInt8 = 0
    static let chatRecord: UInt8 = 1

    static let chatScript = 2
    static let syncScript = 3
    static let scripts: [String] = presenceScripts + [chatScriptSource, syncScriptSource]

    /// KEYS: meta hash, log stream, channel. ARGV: 1 publish verb, 2 nodeId, 3 the node's epoch
    /// for the room (the new epoch when the meta is gone: history lost), 4 floor (the node's
    /// highest offset in that epoch: a counter that went backwards after a failover never
    /// re-issues an offset members saw), 5 stream MAXLEN (~), 6 TTL ms, then K pairs (sender
    /// tag, line), then the epoch candidate. K consecutive lines of one room (one drain of the
    /// inbox, RedisLinkBatch.swift) take K consecutive offsets in one call, because Redis
    /// running the script once per line was the bound on cluster throughput.
    /// Returns {epoch, first offset, subscribers reached summed over the K lines}. The channel
    /// is KEYS[3] so a cluster checks it belongs to this master like the other keys (SPUBLISH
    /// in a script).
    public static let chatScriptSource = """
        local e = redis.call('HGET', KEYS[1], 'epoch')
        if not e then
          e = ARGV[3]
          redis.call('DEL', KEYS[2])
          redis.call('HSET', KEYS[1], 'epoch', e, 'seq', 0)
        end
        local k = (#ARGV - 7) / 2
        local n = redis.call('HINCRBY', KEYS[1], 'seq', k)
        if e == ARGV[3] then
          local floor = tonumber(ARGV[4])
          if n - k < floor then
            n = floor + k
            redis.call('HSET', KEYS[1], 'seq', n)
          end
        end
        local first = n - k + 1
        local head = ARGV[2] .. '\\n' .. e .. '\\n'
        local r = 0
        for i = 0, k - 1 do
          local o = string.format('%d', first + i)
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], o .. '-0', 'm', ARGV[8 + 2 * i])
          r = r + redis.call(ARGV[1], KEYS[3], head .. o .. '\\n' .. ARGV[7 + 2 * i] .. '\\n' .. ARGV[8 + 2 * i])
        end
        local ttl = tonumber(ARGV[6])
        redis.call('PEXPIRE', KEYS[2], ttl)
        redis.call('PEXPIRE', KEYS[1], math.max(ttl, 86400000))
        return {e, first, r}
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
        let sender = ClusterSender.pack(reactor: reactor, slot: slot, generation: generation)
        return enqueuePublish { box in
            // A record; the link thread writes the script call into the room's shard pipeline
            // (EVALSHA once the script is loaded there, EVAL before).
            box.publishes.append(Self.chatRecord)
            RESP.appendRecord(&box.publishes, room.utf8)
            RESP.appendRecord(&box.publishes, line)
            RESP.appendRecord(&box.publishes, epoch.utf8)
            if let id { RESP.appendRecord(&box.publishes, id) } else { RESP.appendRecord(&box.publishes, EmptyCollection<UInt8>()) }
            RESP.appendWord(&box.publishes, UInt64(bitPattern: Int64(floor)))
            RESP.appendWord(&box.publishes, sender)
            RESP.appendWord(&box.publishes, box.epochCandidate)
            box.epochCandidate &+= 1
        }
    }

    /// Whether the room's log follows the cluster's yet (primed from Redis after the first
    /// local member joined).
    public func roomSynced(_ room: String) -> Bool { syncedRooms.withLock { $0.contains(room) } }

    // MARK: link thread: publish replies

    /// The reply to the oldest outstanding publish on `s`: a plain publish's receiver count,
    /// or the chat script's {epoch, first offset, receivers summed over its lines}; each sender
    /// of the batch gets its ack (first + i, in order) or the error. `failed`: the publish did
    /// not happen (an error, or a redirect it cannot follow); the caller counted it.
    func answerTicket(_ s: RedisShard, _ r: RedisReply, failed: Bool) {
        guard var t = s.popTicket() else { return }
        let lines = max(1, Int(t.lines))
        var reached = -1
        var first = 0
        if !failed {
            if t.sender == 0 {
                if r.isInteger { reached = r.integer }
            } else if r.isArray, r.count >= 2, let n = r[1], n.isInteger {
                first = n.integer
                if r.count >= 3, let k = r[2], k.isInteger { reached = k.integer }
            }
            // Redis answers how many subscribers got it: fewer than the nodes with members
            // means some node's subscription was missing (being re-made after a failover,
            // say). Counted, so no loss goes unseen (a node that missed a chat line fetches
            // it from the stream when it sees the offset gap).
            let expected = Int(t.receivers) * lines
            if reached >= 0 && reached < expected {
                undelivered.wrappingAdd(expected - reached, ordering: .relaxed)
            }
            if t.sender != 0 && first <= 0 { countFailures(lines, reason: "unexpected chat script reply") }
        }
        for i in 0..<lines {
            if i > 0 {
                guard let next = s.popTicket() else { return }
                t = next
            }
            guard t.sender != 0 else { continue }
            s.ticketIDs.withUnsafeBytes { all in
                answer(sender: t.sender, offset: first > 0 ? first + i : 0,
                       id: UnsafeRawBufferPointer(rebasing: all[Int(t.idStart)..<Int(t.idStart + t.idCount)]))
            }
        }
    }

    /// Every publish written to `s` and not answered failed (the shard went down, the link
    /// stopped, its slots went elsewhere): counted, the chat senders get errors, and the
    /// pipeline starts over.
    func failPipeline(_ s: RedisShard, reason: String) {
        countFailures(s.unacknowledgedPublishes, reason: reason)
        while let t = s.popTicket() {
            guard t.sender != 0 else { continue }
            s.ticketIDs.withUnsafeBytes { all in
                answer(sender: t.sender, offset: 0,
                       id: UnsafeRawBufferPointer(rebasing: all[Int(t.idStart)..<Int(t.idStart + t.idCount)]))
            }
        }
        // Sync replies owed by this server are gone too: those rooms fetch again once
        // re-subscribed.
        for p in s.pending[s.head...] {
            if case .roomSync(let room) = p.e, roomSync[room] != nil {
                roomSync[room]!.fetching = false
                lostRooms.insert(room)
            }
        }
        s.resetPipeline()
    }

    /// Publish records that will not be sent (a drained inbox): counted, chat senders
    /// answered with errors.
    func failRecords(_ buf: [UInt8], count: Int, reason: String) {
        countFailures(count, reason: reason)
        buf.withUnsafeBytes { b in
            var offset = 0
            while offset < b.count {
                let kind = b[offset]
                offset += 1
                _ = RESP.readRecord(b, &offset)
                _ = RESP.readRecord(b, &offset)
                if kind == Self.plainRecord { continue }
                _ = RESP.readRecord(b, &offset)
                let id = RESP.readRecord(b, &offset)
                _ = RESP.readWord(b, &offset)
                let sender = RESP.readWord(b, &offset)
                _ = RESP.readWord(b, &offset)
                answer(sender: sender, offset: 0, id: id)
            }
        }
    }

    func answer(sender: UInt64, offset: Int, id: UnsafeRawBufferPointer) {
        guard let sink = chatSink, let who = ClusterSender.unpack(sender) else { return }
        sink.chatAnswered(reactor: who.reactor, slot: Int32(truncatingIfNeeded: who.slot), generation: who.generation,
                          offset: offset, id: id)
    }
}
