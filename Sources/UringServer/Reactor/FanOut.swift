import Glibc
import Primitives

// Fan-out: a message is rendered once, then queued for each recipient with its framing — to
// this reactor's members (batched per room, see BatchFlush.swift) and, by hand-off, to the
// other reactors that have members in the room.

extension Reactor {
    /// Renders one message with `body` and queues it for `c`, framed for its connection.
    public func reply(to c: Connection, _ body: (inout ByteBuffer) -> Void) {
        // A batched room message `c` is to receive must not be overtaken by this reply.
        if batch.room != nil && !batch.onlyFrom(Unmanaged.passUnretained(c).toOpaque()) { flushBatch() }
        renderGeneration &+= 1
        render.removeAll()
        body(&render)
        enqueue(render.readable, to: c)
    }

    public func sendError(_ c: Connection, _ code: ErrorCode, _ message: String, id: UnsafeRawBufferPointer?) {
        counters.errorsSent &+= 1
        reply(to: c) { b in
            b.append("{\"type\":\"error\",\"code\":\"")
            b.append(contentsOf: code.rawValue)
            b.append("\",\"message\":")
            b.appendJSONString(message)
            if let id {
                b.append(",\"id\":")
                b.append(id)
            }
            b.append("}")
        }
    }

    /// Renders a room message once and delivers it to every member of the room on every
    /// reactor, except `excluded`.
    /// The bytes of the message `broadcast` or `reply` rendered last (valid until the next one).
    public var lastRendered: UnsafeRawBufferPointer { render.readable }

    public func renderOnly(_ body: (inout ByteBuffer) -> Void) -> UnsafeRawBufferPointer {
        render.removeAll()
        body(&render)
        return render.readable
    }

    public func deferAck() { ackDeferred = true }

    public func broadcast(_ room: LocalRoom, excluding excluded: Connection?, _ body: (inout ByteBuffer) -> Void) {
        renderGeneration &+= 1
        render.removeAll()
        body(&render)
        let bytes = render.readable
        deliverLocal(room, bytes, excluding: excluded)
        let others = room.shared.reactorMask.load(ordering: .acquiring) & ~(1 << UInt64(index))
        if others != 0 { handOff(room.shared, bytes, to: others) }
    }

    /// Delivers a message to every member of `room` on every reactor, also where this reactor
    /// has no members of its own (batched presence: the diff is sent by the reactor whose
    /// connections joined or left, after they are gone).
    public func broadcast(_ room: SharedRoom, _ body: (inout ByteBuffer) -> Void) {
        if let local = room.locals[index] { return broadcast(local, excluding: nil, body) }
        let others = room.reactorMask.load(ordering: .acquiring) & ~(1 << UInt64(index))
        guard others != 0 else { return }
        renderGeneration &+= 1
        render.removeAll()
        body(&render)
        handOff(room, render.readable, to: others)
    }

    /// One copy per target reactor into its handoff ring; the overflow inbox (one shared,
    /// allocated copy) when a ring is full or the message too big.
    func handOff(_ room: SharedRoom, _ bytes: UnsafeRawBufferPointer, to targets: UInt64) {
        // Chat lines appended this turn are poked first, so a sender's chat is not overtaken
        // on other reactors by a notice it caused afterwards (its user_left).
        if !roomsToPoke.isEmpty { pokeRooms() }
        var overflow: RenderedMessage?
        var mask = targets
        while mask != 0 {
            let r = mask.trailingZeroBitCount
            let bit = UInt64(1) << UInt64(r)
            mask &= mask - 1
            let target = shared.reactors[r]
            if overflowing & bit != 0 && target.inbox.isEmpty { overflowing &= ~bit }
            if overflowing & bit == 0,
               shared.handoff[index][r]!.tryWrite(room: room, origin: originNanos, body: bytes) {
                peersToWake |= bit
                continue
            }
            overflowing |= bit
            if overflow == nil {
                let m = RenderedMessage(originNanos: originNanos)
                m.body.append(bytes)
                overflow = m
            }
            target.inbox.post(RoomDelivery(room: room, message: overflow!))
        }
    }

    func deliverLocal(_ room: LocalRoom, _ bytes: UnsafeRawBufferPointer, excluding excluded: Connection?) {
        roomMessages &+= 1
        let skip = excluded.map { Unmanaged.passUnretained($0).toOpaque() }
        let threshold = config.sharedBlockThreshold
        // With splicing on, big messages are batched too: the batch may reach the splice
        // threshold, and a spliced batch costs two calls per member however many it holds.
        let spliceable = pipes != nil && room.memberRefs.count >= RoomBatch.minMembers
            && bytes.count < SplicePipes.capacity
        if threshold > 0 && bytes.count >= threshold && !spliceable {
            // Large message: rendered once into a shared block that every member's queue
            // references (the kernel reads it once per socket; no copy per recipient here).
            flushBatch()
            let block = MessageBlock.make(copying: bytes, trailer: UInt8(ascii: "\n"), pool: pool)
            for m in room.memberRefs where m.toOpaque() != skip {
                m._withUnsafeGuaranteedRef { enqueue(bytes, block: block, to: $0) }
            }
            block.release(to: pool)
            return
        }
        // Batched per room for the rest of the turn (see `RoomBatch`). Rooms of a few members
        // take the copy straight away (the batch would cost more than it saves).
        if room.memberRefs.count < RoomBatch.minMembers {
            flushBatch()
            for m in room.memberRefs where m.toOpaque() != skip {
                m._withUnsafeGuaranteedRef { enqueue(bytes, to: $0) }
            }
            return
        }
        if batch.room !== room || (pipes != nil && batch.bytes.readableCount + bytes.count >= SplicePipes.capacity) {
            flushBatch()   // another room, or a batch that would not fit one pipe
            batch.begin(room)
        }
        batch.add(bytes, excluded: skip, origin: originNanos)
    }

    /// Appends one message to `c`'s output with its connection's framing (and codec). With
    /// `block` (holding `body` and a line end), the message is queued by reference.
    @inline(__always)
    func enqueue(_ body: UnsafeRawBufferPointer, block: MessageBlock? = nil, to c: Connection) {
        if c.closeStarted { return }
        counters.deliveries &+= 1
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(originNanos == 0 ? Clock.monoNanos() : originNanos) }
        if c.framing == .webSocket {
            // One text frame per message; a big one's body stays in the shared block (the
            // line end the block carries for JSON members is left out, as for binary frames).
            if c.closing, c.extrasIfPresent?.webSocket?.closeSent ?? true { return }   // nothing after a close frame
            if let block {
                appendWebSocketHeader(opcode: WebSocketOpcode.text, count: body.count, reserveBody: false, to: c)
                queueBlock(block, length: body.count, to: c)
            } else {
                appendWebSocketHeader(opcode: WebSocketOpcode.text, count: body.count, to: c)
                c.output.out.appendReserved(body)
            }
        } else if c.sendsBinary {
            if c.outCodec != .raw && body.count >= config.compressionThreshold {
                appendCompressedFrame(body, codec: c.outCodec, to: c)
            } else if let block {
                appendFrameHeader(count: body.count, codec: 0, reserveBody: false, to: c)
                queueBlock(block, length: body.count, to: c)   // the body without the line end
            } else {
                appendFrameHeader(count: body.count, codec: 0, to: c)
                c.output.out.appendReserved(body)
            }
        } else if let block {
            queueBlock(block, length: block.count, to: c)
        } else {
            c.output.out.reserve(body.count + 1, pool: pool)
            c.output.out.appendReserved(body)
            c.output.out.appendReserved(UInt8(ascii: "\n"))
        }
        markForFlush(c, origin: originNanos)
        let pending = c.pendingOutputBytes
        if pending > config.outboundHardBytes && !c.closing {
            cutSlowConsumer(c, "output over outbound_hard_bytes (\(config.outboundHardBytes))")
        } else if pending > config.outboundSoftBytes && c.overSoftSince == 0 {
            c.overSoftSince = turnNanos
        }
    }

    @inline(__always)
    func queueBlock(_ block: MessageBlock, length: Int, to c: Connection) {
        c.output.appendBlock(block, length: length, blocksPool: blocksPool)
    }

    @inline(__always)
    func appendFrameHeader(count: Int, codec: UInt8, reserveBody: Bool = true, to c: Connection) {
        let n = UInt32(count + 1)
        c.output.out.reserve(reserveBody ? 5 + count : 5, pool: pool)   // the header (and the body that follows it)
        c.output.out.appendReserved(UInt8(truncatingIfNeeded: n >> 24))
        c.output.out.appendReserved(UInt8(truncatingIfNeeded: n >> 16))
        c.output.out.appendReserved(UInt8(truncatingIfNeeded: n >> 8))
        c.output.out.appendReserved(UInt8(truncatingIfNeeded: n))
        c.output.out.appendReserved(codec)
    }
}
