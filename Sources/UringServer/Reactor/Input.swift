import Glibc
import Primitives

// Input: received bytes → framing → messages; held input (a plugin finishing a message later);
// compressed client frames; HTTP requests on the same port (and the upgrade of GET /ws, whose
// frames then go to WebSocketIO.swift).

extension Reactor {
    package func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
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
        var input = c   // the splitter's state lives on the connection (FrameInputOwner)
        if c.framing == .undetermined {
            let (ok, used) = FrameSplitter.detect(&input, rest)
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
        if c.framing == .webSocket {
            let unread = webSocketReceived(c, rest)
            if c.inputHeld && !c.closing && unread.count > 0 { holdBytes(c, unread) }
            return
        }
        let maxFrame = config.maxFrameBytes
        let unread = FrameSplitter.feed(&input, rest, maxFrame: maxFrame) { event in
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
                refuse(c, limit: "max_frame_bytes", .frameTooLarge, "frame exceeds max_frame_bytes (\(maxFrame))")
            case .badFrame(let why):
                sendError(c, .badFrame, why, id: nil)
            }
            return !c.closing && !c.inputHeld
        }
        if c.inputHeld && !c.closing && unread.count > 0 { holdBytes(c, unread) }
    }

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
            ackOffset = 0   // a held message is a join, never a send_chat
            id.withUnsafeBytes { ack(c, $0) }
        }
        if c.closing || c.heldInputCount == 0 { return }
        let kept = Array(c.extras.heldInput.readable)
        c.extras.heldInput.removeAll()
        c.extras.heldInput.releaseIfEmpty()
        kept.withUnsafeBytes { connectionReceived(c, $0) }
    }

    func holdBytes(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if c.heldInputCount + bytes.count > 4 * config.maxFrameBytes {
            refuse(c, limit: "max_frame_bytes", .frameTooLarge, "too much input while a reply is pending")
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
                refuse(c, limit: "max_frame_bytes", .frameTooLarge, "decompressed frame exceeds max_frame_bytes (\(maxFrame))")
            case .corrupt(let why):
                sendError(c, .badFrame, "corrupt \(codec.name) frame: \(why)", id: nil)
            }
        }
        inflated.removeAll()
    }

    func handleHTTP(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        c.extras.input.append(bytes)
        var response = ByteBuffer()
        switch HTTPRouter.route(c.extras.input.readable, from: c, shared: shared, into: &response) {
        case .incomplete:
            return
        case .response:
            c.extras.input.removeAll()
            sendHTTP(c, response, since: originNanos)
        case .upgrade(let headLength):
            upgradeToWebSocket(c, response, headLength: headLength)
        }
    }

    /// Queues a whole response and closes after it: one request per connection.
    func sendHTTP(_ c: Connection, _ response: borrowing ByteBuffer, since: UInt64) {
        c.output.out.append(response.readable, pool: pool)
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(since) }
        closeAfterFlush(c)
    }
}
