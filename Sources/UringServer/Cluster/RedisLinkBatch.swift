import Glibc

// Chat batching (docs/architecture.md, "Cluster offsets"): consecutive chat records of the
// same room in one drain of the inbox become one chat script call carrying up to
// `maxBatchLines` lines, because Redis running the script once per line bounds cluster
// throughput. The lines keep their inbox order and take consecutive offsets; the reply answers
// every sender of the batch (first + i), and a failed call fails all of them.

/// One line of the batch being formed: where its fields sit in the drained inbox buffer.
struct ChatBatchLine {
    var line: Range<Int>
    var id: Range<Int>
    var sender: UInt64
}

extension RedisLink {
    static let maxBatchLines = 64
    /// Line bytes per call: a big batch would hold the shard's Redis (single-threaded) for
    /// longer at once and make the command's reply wait for all of it.
    static let maxBatchBytes = 64 << 10

    /// Formats the chat record whose room was just read at `offset` in `buf`, and the chat
    /// records right after it for the same room and epoch, into one script call on shard `s`
    /// (one ticket per line; the first carries the count).
    func writeChatBatch(_ buf: UnsafeRawBufferPointer, _ offset: inout Int, room: UnsafeRawBufferPointer,
                        to s: RedisShard?, receivers: Int) {
        chatBatch.removeAll(keepingCapacity: true)
        var epoch = UnsafeRawBufferPointer(start: nil, count: 0)
        var floor = Int.min
        var candidate: UInt64 = 0
        var bytes = 0
        var next = offset  // just after the current record's room
        while true {
            let line = Self.range(buf, &next)
            let e = RESP.readRecord(buf, &next)
            let id = Self.range(buf, &next)
            let f = Int(Int64(bitPattern: RESP.readWord(buf, &next)))
            let sender = RESP.readWord(buf, &next)
            let c = RESP.readWord(buf, &next)
            if chatBatch.isEmpty {
                epoch = e
                candidate = c
            }
            floor = max(floor, f)
            bytes += line.count
            chatBatch.append(ChatBatchLine(line: line, id: id, sender: sender))
            offset = next
            // The next record joins if it is a chat line of the same room, in the same epoch,
            // and the batch has room for it.
            guard chatBatch.count < Self.maxBatchLines, next < buf.count, buf[next] == Self.chatRecord else { break }
            var peek = next + 1
            let r = RESP.readRecord(buf, &peek)
            guard Self.same(r, room) else { break }
            var lookahead = peek
            let l = RESP.readRecord(buf, &lookahead)
            let e2 = RESP.readRecord(buf, &lookahead)
            guard Self.same(e2, epoch), bytes + l.count <= Self.maxBatchBytes else { break }
            next = peek
        }
        let lines = chatBatch.count
        guard let s, s.up else {
            countFailures(lines, reason: "no reachable redis master for the room's slot")
            for b in chatBatch { answer(sender: b.sender, offset: 0, id: UnsafeRawBufferPointer(rebasing: buf[b.id])) }
            return
        }
        // The SHA is the same on every server (SHA1 of the body); EVALSHA is safe on this
        // connection once SCRIPT LOAD was written to it before (shardReady, or after NOSCRIPT).
        let loaded = s.ready && chatSHA != nil
        RESP.appendChatScriptHead(&s.cmd.out, script: loaded ? chatSHA! : chatScriptBody, isSHA: loaded,
                                  keyPrefixes: chatKeys, sharded: mode == .cluster, room: room, nodeId: nodeIdBytes,
                                  epoch: epoch, floor: floor, maxLength: settings.historySize,
                                  ttlMillis: settings.historyTTLMillis, lines: lines)
        for b in chatBatch { RESP.appendChatLine(&s.cmd.out, sender: b.sender, line: UnsafeRawBufferPointer(rebasing: buf[b.line])) }
        RESP.appendBulkHex12(&s.cmd.out, candidate)
        s.expect(.publishes(1), args: nil, now: Self.nowMillis())
        for (i, b) in chatBatch.enumerated() {
            s.addTicket(sender: b.sender, receivers: receivers, id: UnsafeRawBufferPointer(rebasing: buf[b.id]),
                        lines: i == 0 ? lines : 0)
        }
    }

    /// The byte range of the record at `offset` (RESP.readRecord), advancing past it.
    private static func range(_ buf: UnsafeRawBufferPointer, _ offset: inout Int) -> Range<Int> {
        let start = offset + 4
        let r = RESP.readRecord(buf, &offset)
        return start..<(start + r.count)
    }

    private static func same(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }
}
