import CURing
import Glibc
import Optimizers
import Synchronization

/// Input: accepted connections, received bytes → framing → messages → the plugin chain, held
/// input, the HTTP glue, and the backend's other events.
extension Reactor {
    // MARK: IOEventHandler

    func connectionAccepted(fd: Int32) {
        counters.accepted += 1
        let peer = Socket.peerIPv4(fd)
        switch shared.admit(peerIP: peer) {
        case .admitted: break
        case .serverFull:
            limitHit("max_connections")
            rejectAtAccept(fd, "{\"type\":\"error\",\"code\":\"server_full\",\"message\":\"server is at max_connections\"}\n")
            return
        case .tooManyFromAddress:
            limitHit("max_connections_per_ip")
            rejectAtAccept(fd, "{\"type\":\"error\",\"code\":\"too_many_connections\",\"message\":\"too many connections from this address (max_connections_per_ip)\"}\n")
            return
        }
        if fd < 1_000_000 { Socket.configureAccepted(fd) }   // (harness fds are not sockets)
        let slot = freeSlots.popLast() ?? {
            connections.append(nil)
            return connections.count - 1
        }()
        let c = Connection(fd: fd, slot: slot, peerIP: peer,
                           now: turnNanos == 0 ? Clock.monoNanos() : turnNanos, burst: config.rateLimitBurst)
        connections[slot] = c
        lastAcceptedSlot = slot
        liveConnections += 1
        backend.startReceiving(c)

    }

    func rejectAtAccept(_ fd: Int32, _ msg: StaticString) {
        Socket.writeOnce(fd, UnsafeRawBufferPointer(start: msg.utf8Start, count: msg.utf8CodeUnitCount))
        Glibc.close(fd)
        counters.closed += 1
    }

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if c.closing { return }
        if c.inputHeld {
            holdBytes(c, bytes)
            return
        }
        counters.bytesIn &+= bytes.count
        // The clock read after this turn's wait returned: a message's latency starts when its
        // receive completion is seen, not when the reactor went to sleep before it arrived.
        let now = batchNow()
        c.lastReceiveMs = Connection.ms(now)
        c.idlePingSent = false
        originNanos = now
        var rest = bytes
        if c.framing == .undetermined {
            let (ok, used) = FrameSplitter.detect(c, rest)
            if !ok {
                sendError(c, .badFrame, "unrecognized framing: start with '{' (JSON lines), a 0 byte (binary frames) or an HTTP request", id: nil)
                closeAfterFlush(c)
                return
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            if c.framing == .undetermined { return }
            if draining && c.framing != .http {
                sendShutdownNotice(c)
                return
            }
        }
        if c.framing == .http {
            handleHTTP(c, rest)
            return
        }
        let maxFrame = config.maxFrameBytes
        let unread = FrameSplitter.feed(c, rest, maxFrame: maxFrame) { event in
            switch event {
            case .frame(let body):
                if c.framing == .binary {
                    let payload = UnsafeRawBufferPointer(rebasing: body[1...])
                    switch CompressionCodec(rawValue: body[0]) {
                    case .raw?:
                        handleMessage(c, payload)
                    case let codec?:
                        inflated.removeAll()
                        handleCompressed(c, codec, payload, maxFrame: maxFrame)
                    case nil:
                        sendError(c, .badFrame, "codec \(body[0]) is not supported (0 raw, 1 lz4, 2 zstd)", id: nil)
                    }
                } else {
                    handleMessage(c, body)
                }
            case .tooLarge:
                limitHit("max_frame_bytes")
                sendError(c, .frameTooLarge, "frame exceeds max_frame_bytes (\(maxFrame))", id: nil)
                closeAfterFlush(c)
            case .badFrame(let why):
                sendError(c, .badFrame, why, id: nil)
            }
            return !c.closing && !c.inputHeld
        }
        if c.inputHeld && !c.closing && unread.count > 0 { holdBytes(c, unread) }
    }

    // MARK: held input (a plugin finishing a message later)

    /// Stops processing `c`'s input after the current message; what arrives meanwhile is kept
    /// (bounded) and processed, in order, by `releaseInput`.
    public func holdInput(_ c: Connection) {
        c.inputHeld = true
    }

    /// Sends the ack owed for the held message, then processes the input kept meanwhile.
    public func releaseInput(_ c: Connection) {
        guard c.inputHeld else { return }
        c.inputHeld = false
        if let id = c.extras.heldAckID {
            c.extras.heldAckID = nil
            id.withUnsafeBytes { id in
                reply(to: c) { b in
                    b.append("{\"type\":\"ack\",\"id\":")
                    b.append(id)
                    b.append("}")
                }
            }
        }
        if c.closing || c.heldInputCount == 0 { return }
        let kept = Array(c.extras.heldInput.readable)
        c.extras.heldInput.removeAll()
        c.extras.heldInput.releaseIfEmpty()
        kept.withUnsafeBytes { connectionReceived(c, $0) }
    }

    func holdBytes(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if c.heldInputCount + bytes.count > 4 * config.maxFrameBytes {
            limitHit("max_frame_bytes")
            sendError(c, .frameTooLarge, "too much input while a reply is pending", id: nil)
            closeAfterFlush(c)
            return
        }
        c.extras.heldInput.append(bytes)
    }

    /// A client frame in lz4/zstd: inflated (bounded by max_frame_bytes) and handled as JSON.
    func handleCompressed(_ c: Connection, _ codec: CompressionCodec, _ payload: UnsafeRawBufferPointer, maxFrame: Int) {
        inflated.removeAll()
        do throws(CompressionError) {
            try compression.decompress(codec, payload, maxOutput: maxFrame, into: &inflated)
            handleMessage(c, inflated.readable)
        } catch {
            switch error {
            case .tooLarge:
                limitHit("max_frame_bytes")
                sendError(c, .frameTooLarge, "decompressed frame exceeds max_frame_bytes (\(maxFrame))", id: nil)
                closeAfterFlush(c)
            case .corrupt(let why):
                sendError(c, .badFrame, "corrupt \(codec.name) frame: \(why)", id: nil)
            }
        }
        inflated.removeAll()
    }

    func connectionReceiveEnded(_ c: Connection, error: Int32) {
        // Peer closed or reset: flush what is queued (if the socket still takes it), then close.
        if error != 0 { c.dropQueuedOutput(pool: pool) }
        closeAfterFlush(c)
    }

    func connectionSendCompleted(_ c: Connection, error: Int32) {
        if error != 0 {
            // A peer that reset or went away is its own doing; any other send error is the
            // server's (the monitor's error_rate counts those).
            if error != EPIPE && error != ECONNRESET && error != ETIMEDOUT { counters.serverFailures &+= 1 }
            c.dropQueuedOutput(pool: pool)
            closeAfterFlush(c)
        } else {
            sendFinished(c)
        }
        if c.closeAfterFlush || c.hasQueuedOutput { markForFlush(c) }
    }

    func zeroCopySendFinished(copied: Bool) {
        counters.zeroCopySends &+= 1
        if copied { counters.zeroCopyCopied &+= 1 }
    }

    func connectionReleased(_ c: Connection) {
        c.releaseOutput(pool: pool, blocksPool: blocksPool)
        connections[Int(c.slot)] = nil
        freeSlots.append(Int(c.slot))
        liveConnections -= 1
        counters.closed += 1
        shared.connectionClosed(peerIP: c.peerIP)
    }

    func wakeup() {
        if shared.draining.load(ordering: .acquiring) && !draining { beginDrain() }
        // Ring records first: anything in the overflow inbox is newer than them.
        for source in 0..<shared.reactors.count where source != index {
            shared.handoff[source][index]!.drain { room, origin, body in
                guard let local = room.locals[index] else { return }
                originNanos = origin
                renderGeneration &+= 1
                deliverLocal(local, body, excluding: nil)
            }
        }
        inbox.drain(into: &deliveries)
        for d in deliveries {
            guard let local = d.room.locals[index] else { continue }
            originNanos = d.message.originNanos
            renderGeneration &+= 1
            deliverLocal(local, d.message.body.readable, excluding: nil)
        }
        deliveries.removeAll(keepingCapacity: true)
    }


    // MARK: messages

    func handleMessage(_ c: Connection, _ payload: UnsafeRawBufferPointer) {
        counters.messagesIn &+= 1
        do {
            try JSONReader.parse(payload, into: &fields)
        } catch {
            // The fields parsed before the error stay in the table: an id read in full is
            // echoed in the error and acknowledged like any other failed message.
            let id = Self.idBytes(fields, payload)
            // Malformed lines count against the rate limit like any other: a flood of them is
            // answered rate_limited (and closed after rate_limit_strikes), not bad_json forever.
            do throws(ProtocolError) {
                try admitByRate(c)
                sendError(c, .badJSON, Self.describe(error), id: id)
            } catch {
                sendError(c, error.code, error.message, id: id)
            }
            if let id, !c.closing { ack(c, id) }
            return
        }
        let id = Self.idBytes(fields, payload)
        do throws(ProtocolError) {
            guard let typeField = fields.find("type", in: payload), typeField.kind == .string else {
                throw ProtocolError(.missingField, "field 'type' (a string) is required")
            }
            try admitByRate(c)
            try dispatch(c, JSONReader.string(typeField, in: payload), payload)
        } catch {
            if error.code == .badName { limitHit("bad_name") }
            sendError(c, error.code, error.message, id: id)
            if c.closing { return }
        }
        // Every message with an id is acknowledged once handled, after its reply or error —
        // for a message a plugin finishes later, when it releases the input.
        if let id, c.inputHeld {
            c.extras.heldAckID = Array(id)
        } else if let id {
            ack(c, id)
        }
    }

    /// The `id` field's bytes as sent (strings keep their quotes, so the ack echoes the id
    /// exactly).
    static func idBytes(_ fields: JSONFieldTable, _ payload: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let f = fields.find("id", in: payload) else { return nil }
        let start = f.kind == .string ? f.valueStart - 1 : f.valueStart
        let end = f.kind == .string ? f.valueEnd + 1 : f.valueEnd
        return UnsafeRawBufferPointer(rebasing: payload[start..<end])
    }

    func ack(_ c: Connection, _ id: UnsafeRawBufferPointer) {
        reply(to: c) { b in
            b.append("{\"type\":\"ack\",\"id\":")
            b.append(id)
            b.append("}")
        }
    }

    /// Token bucket per connection; sustained abuse closes the connection.
    @inline(__always)
    func admitByRate(_ c: Connection) throws(ProtocolError) {
        let rate = config.rateLimitPerSec
        if rate == 0 { return }
        if c.tokens < 1 {
            let elapsed = Double(Connection.elapsedMs(c.tokensRefilledMs, turnNanos)) / 1e3
            c.tokens = Float(min(Double(config.rateLimitBurst), Double(c.tokens) + elapsed * Double(rate)))
            c.tokensRefilledMs = Connection.ms(turnNanos)
        }
        if c.tokens >= 1 {
            c.tokens -= 1
            c.rateStrikes = 0
            return
        }
        limitHit("rate_limited")
        c.rateStrikes += 1
        if c.rateStrikes >= config.rateLimitStrikes {
            closeAfterFlush(c)
            throw ProtocolError(.rateLimited, "over \(rate) messages/s for too long; closing")
        }
        throw ProtocolError(.rateLimited, "over \(rate) messages/s (burst \(config.rateLimitBurst)); message dropped")
    }

    /// Hello gate, then the plugin chain, then the core handler.
    func dispatch(_ c: Connection, _ type: String, _ payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        if !c.isAuthenticated && type != "hello" {
            throw ProtocolError(.helloRequired, "send hello first")
        }
        var processor: MessageProcessor = core
        var found = false
        for i in 0..<plugins.count where plugins[i].canHandle(type) {
            if let flag = pluginFlags[i], !FeatureGate.isEnabled(flag, for: c) {
                throw ProtocolError(.featureDisabled, "'\(type)' is disabled (feature flag \(flag.name))")
            }
            processor = plugins[i]
            found = true
            break
        }
        if !found && !core.canHandle(type) {
            throw ProtocolError(.unsupportedType, "unsupported message type '\(type)'")
        }
        try withUnsafePointer(to: &fields) { (fp) throws(ProtocolError) in
            try processor.process(IncomingMessage(connection: c, type: type, bytes: payload, fields: fp), self)
        }
    }

    static func describe(_ e: JSONError) -> String {
        switch e {
        case .syntax(let at): "malformed JSON at byte \(at)"
        case .invalidUTF8(let at): "invalid UTF-8 at byte \(at)"
        case .notAnObject: "a message must be a JSON object"
        case .tooDeep: "JSON nested too deeply"
        case .tooManyFields: "too many fields in one message"
        }
    }


    // MARK: HTTP

    func handleHTTP(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        c.extras.input.append(bytes)
        guard let response = HTTPRouter.route(c.extras.input.readable, from: c, shared: shared) else {
            return   // request incomplete
        }
        c.extras.input.removeAll()
        sendHTTP(c, response, since: originNanos)
    }

    /// Queues a whole response and closes after it: one request per connection.
    func sendHTTP(_ c: Connection, _ response: borrowing ByteBuffer, since: UInt64) {
        c.out.append(response.readable, pool: pool)
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(since) }
        closeAfterFlush(c)
    }
}
