import Glibc
import Primitives

// The end of a room batch: every member takes the turn's messages of one room in one piece.

extension Reactor {
    /// Delivers the turn's batched messages of one room: every member that gets all of them as
    /// JSON lines takes the whole batch at once (its pipe when the batch reaches
    /// `splice_threshold`, else one reference to a shared block, or one copy when the batch is
    /// small) instead of one copy per message; members using binary
    /// frames or excluded from some message (their own, without echo) get them one by one.
    /// WebSocket members take the batch framed once for all of them (one text frame per
    /// message), by copy or shared block like JSON members (never spliced).
    /// Called before anything else is queued that could overtake the batch: another room's
    /// message, a reply, a membership change, a big message, the end of the turn.
    func flushBatch() {
        guard let room = batch.room else { return }
        batch.room = nil
        let all = batch.bytes.readable
        let count = batch.messages.count
        let threshold = config.sharedBlockThreshold
        // Members take the batch by tee + splice when it is big enough (loaded into the source
        // pipe on first use), else by a shared block (made on first use), else by a copy.
        var splicing = pipes != nil && all.count >= config.spliceThreshold
        var loaded = false
        var block: MessageBlock?
        var wsFramed = false
        var wsBlock: MessageBlock?
        let cap = min(config.outboundSoftBytes, config.outboundHardBytes)
        let origin = batch.messages[0].origin
        var delivered = 0
        batch.oneByOne.removeAll(keepingCapacity: true)
        for m in room.memberRefs {
            m._withUnsafeGuaranteedRef { c in
                if c.closeStarted { return }
                if c.framing == .webSocket && !c.sendsBinary && !batch.excludes(m.toOpaque())
                    && c.pendingOutputBytes &+ all.count &+ 10 &* count < cap {
                    if c.closing, c.extrasIfPresent?.webSocket?.closeSent ?? true { return }   // nothing after a close frame
                    if !wsFramed { frameBatchForWebSocket(all); wsFramed = true }
                    let framed = webSocketBatch.readable
                    delivered &+= count
                    counters.webSocketFramesOut &+= count
                    if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(origin == 0 ? Clock.monoNanos() : origin) }
                    if threshold > 0 && framed.count >= threshold {
                        if wsBlock == nil { wsBlock = MessageBlock.make(copying: framed, trailer: nil, pool: pool) }
                        queueBlock(wsBlock.unsafelyUnwrapped, length: framed.count, to: c)
                    } else {
                        c.output.out.reserve(framed.count, pool: pool)
                        c.output.out.appendReserved(framed)
                    }
                    markForFlush(c, origin: origin)
                    return
                }
                if c.sendsBinary || c.framing == .webSocket || batch.excludes(m.toOpaque())
                    || c.pendingOutputBytes &+ all.count >= cap {
                    batch.oneByOne.append(m)
                    return
                }
                delivered &+= count
                if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(origin == 0 ? Clock.monoNanos() : origin) }
                // Into a pipe only behind nothing but earlier spliced batches: spliced bytes
                // always go out first (see OutputBlocks.pipe). A send in flight with nothing
                // being sent is a wait for room for those.
                if splicing && c.fd < 0 {
                    // Accepted straight into io_uring's fixed-file table: splice needs an fd,
                    // installed for the next batches; this one goes as a shared block.
                    backend.needsRealFD(c)
                } else if splicing && c.output.canTakeSplicedBatch {
                    if !loaded {
                        loaded = pipes.unsafelyUnwrapped.load(all)
                        splicing = loaded
                    }
                    if loaded {
                        switch c.output.takeSplicedBatch(from: pipes.unsafelyUnwrapped, blocksPool: blocksPool, socket: c.fd) {
                        case .teed:
                            counters.splicedBatches &+= 1
                            counters.bytesOut &+= all.count   // (queuedOutputBytes leaves pipes out)
                            markForFlush(c, origin: origin)
                            return
                        case .noRoom:
                            break
                        case .broken:
                            shared.logger.error("splice pipe out of step: closing the connection", ["id": "\(c.slot)"])
                            cutSlowConsumer(c, "internal error: output stream broken")
                            return
                        }
                    }
                }
                if threshold > 0 && all.count >= threshold {
                    if block == nil { block = MessageBlock.make(copying: all, trailer: nil, pool: pool) }
                    queueBlock(block.unsafelyUnwrapped, length: all.count, to: c)
                } else {
                    c.output.out.reserve(all.count, pool: pool)
                    c.output.out.appendReserved(all)
                }
                markForFlush(c, origin: origin)
            }
        }
        counters.deliveries &+= delivered
        block?.release(to: pool)
        wsBlock?.release(to: pool)
        if loaded { pipes.unsafelyUnwrapped.finishBatch() }
        if !batch.oneByOne.isEmpty {
            // Message by message (the compression cache is per message), member by member;
            // a big one (batched only when splicing) through a shared block of its own.
            for msg in batch.messages {
                renderGeneration &+= 1
                originNanos = msg.origin
                let body = UnsafeRawBufferPointer(rebasing: all[msg.start..<(msg.start + msg.count)])
                let own = threshold > 0 && msg.count >= threshold
                    ? MessageBlock.make(copying: body, trailer: UInt8(ascii: "\n"), pool: pool) : nil
                for m in batch.oneByOne where m.toOpaque() != msg.excluded {
                    m._withUnsafeGuaranteedRef { enqueue(body, block: own, to: $0) }
                }
                own?.release(to: pool)
            }
            batch.oneByOne.removeAll(keepingCapacity: true)
        }
        batch.reset()
    }
}
