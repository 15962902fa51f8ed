import Glibc
import Primitives

// WebSocket connections (upgraded on GET /ws): the upgrade itself, frames in (one JSON
// message per text frame, control frames answered), control frames out, the close handshake.
// Room messages to WebSocket members are framed in `enqueue` (FanOut.swift).

extension Reactor {
    /// The 101 was written into `response`: queue it, switch the connection to WebSocket, and
    /// handle any frames that came in the same receive as the request head.
    func upgradeToWebSocket(_ c: Connection, _ response: borrowing ByteBuffer, headLength: Int) {
        let input = c.extras.input.readable
        let early = headLength < input.count ? Array(input[headLength...]) : []
        c.extras.input.removeAll()
        c.extras.input.releaseIfEmpty()   // the head's storage: most WebSockets never split a frame
        c.output.out.append(response.readable, pool: pool)
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(originNanos) }
        markForFlush(c, origin: 0)
        c.framing = .webSocket
        c.extras.webSocket = WebSocketSession()
        counters.webSocketOpen += 1
        if !early.isEmpty { early.withUnsafeBytes { webSocketReceived(c, $0) } }
    }

    /// Frames from a WebSocket connection. Returns the bytes left unread when a message
    /// held the connection's input (`holdInput`).
    @discardableResult
    func webSocketReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard let session = c.extrasIfPresent?.webSocket, !session.closeSent else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        var input = c
        let echo = config.wsEcho
        return WebSocketFrames.feed(&input, session, bytes, maxMessage: config.maxFrameBytes, scratch: &webSocketScratch) { event in
            counters.webSocketFramesIn &+= 1
            switch event {
            case .text(let payload):
                if echo { sendWebSocketFrame(c, WebSocketOpcode.text, payload) } else { handleMessage(c, payload) }
            case .binary(let payload):
                if echo {
                    sendWebSocketFrame(c, WebSocketOpcode.binary, payload)
                } else {
                    closeWebSocket(c, .unsupportedData, "binary messages are not accepted: send JSON in text frames")
                }
            case .ping(let payload):
                sendWebSocketFrame(c, WebSocketOpcode.pong, payload)
            case .pong:
                break   // any input already counts as traffic (`lastReceiveMs`)
            case .close(let code, _):
                // Echo the peer's code (an empty close when it sent none), then close TCP
                // once it is out.
                requestClose(c, code, "")
                closeAfterFlush(c)
            case let .fail(code, why):
                if code == .tooBig { limitHit("max_frame_bytes") }
                closeWebSocket(c, code, why)
            }
            return !c.closing && !c.inputHeld
        }
    }

    /// Closes with `code` and `why`: the close frame goes out at the end of the turn, behind
    /// everything queued before it this turn (an error message that explains the close).
    func closeWebSocket(_ c: Connection, _ code: WebSocketCloseCode, _ why: String) {
        requestClose(c, code.rawValue, why)
        closeAfterFlush(c)
    }

    /// Notes the close frame to send (the first request wins: `closeAfterFlush` asks for 1001
    /// after a caller with a precise code asked first). 1005 means an empty close frame.
    func requestClose(_ c: Connection, _ code: UInt16, _ why: String) {
        guard let session = c.extrasIfPresent?.webSocket, !session.closeSent, session.pendingCloseCode == 0 else { return }
        session.pendingCloseCode = code
        session.pendingCloseReason = why
    }

    /// End of turn (`endTurn`), for a closing WebSocket: writes the close frame asked for.
    /// Nothing is queued for the connection after it.
    func writePendingClose(_ c: Connection) {
        guard let session = c.extrasIfPresent?.webSocket, !session.closeSent, session.pendingCloseCode != 0 else { return }
        session.closeSent = true
        let code = session.pendingCloseCode
        if code == 1005 {
            appendWebSocketHeader(opcode: WebSocketOpcode.close, count: 0, to: c)
            return
        }
        var reason = session.pendingCloseReason
        session.pendingCloseReason = ""
        reason.withUTF8 { r in
            // 123 bytes of reason at most (a control frame's payload is 125), cut on a
            // character boundary: a close reason must be valid UTF-8 too.
            var n = min(r.count, 123)
            while n > 0 && n < r.count && r[n] & 0xC0 == 0x80 { n -= 1 }
            appendWebSocketHeader(opcode: WebSocketOpcode.close, count: 2 + n, to: c)
            c.output.out.appendReserved(UInt8(code >> 8))
            c.output.out.appendReserved(UInt8(truncatingIfNeeded: code))
            if n > 0 { c.output.out.appendReserved(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(r)[..<n])) }
        }
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(turnNanos) }
    }

    /// Queues one unmasked data or control frame for `c` (an echo, a pong, a ping); never
    /// after the close frame.
    func sendWebSocketFrame(_ c: Connection, _ opcode: UInt8, _ payload: UnsafeRawBufferPointer) {
        if c.closeStarted || c.extrasIfPresent?.webSocket?.closeSent ?? true { return }
        if batch.room != nil && !batch.onlyFrom(Unmanaged.passUnretained(c).toOpaque()) { flushBatch() }
        appendWebSocketHeader(opcode: opcode, count: payload.count, to: c)
        c.output.out.appendReserved(payload)
        if c.queuedMs == 0 { c.queuedMs = Connection.stampMs(originNanos == 0 ? Clock.monoNanos() : originNanos) }
        markForFlush(c, origin: opcode < 8 ? originNanos : 0)   // an echo is a latency sample
        let pending = c.pendingOutputBytes
        if pending > config.outboundHardBytes && !c.closing {
            cutSlowConsumer(c, "output over outbound_hard_bytes (\(config.outboundHardBytes))")
        }
    }

    /// An unmasked FIN frame header in `c`'s output, with room reserved for the body when
    /// `reserveBody` (the body is then appended with `appendReserved`).
    @inline(__always)
    func appendWebSocketHeader(opcode: UInt8, count: Int, reserveBody: Bool = true, to c: Connection) {
        counters.webSocketFramesOut &+= 1
        let size = WebSocketFrames.headerSize(count)
        c.output.out.reserve(reserveBody ? size + count : size, pool: pool)
        var header: (UInt64, UInt16) = (0, 0)
        withUnsafeMutableBytes(of: &header) { h in
            let n = WebSocketFrames.writeHeader(opcode: opcode, count: count, to: h.baseAddress.unsafelyUnwrapped)
            c.output.out.appendReserved(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(h)[..<n]))
        }
    }

    /// The turn's batch of one room (`all`, messages at `batch.messages`) as consecutive text
    /// frames in `webSocketBatch`: framed once, then taken whole by every WebSocket member.
    func frameBatchForWebSocket(_ all: UnsafeRawBufferPointer) {
        webSocketBatch.removeAll()
        for msg in batch.messages {
            let body = UnsafeRawBufferPointer(rebasing: all[msg.start..<(msg.start + msg.count)])
            webSocketBatch.writeWithUnsafeMutableBytes(minimumCapacity: 10 + body.count) { out in
                let p = out.baseAddress.unsafelyUnwrapped
                let h = WebSocketFrames.writeHeader(opcode: WebSocketOpcode.text, count: body.count, to: p)
                if body.count > 0 { (p + h).copyMemory(from: body.baseAddress.unsafelyUnwrapped, byteCount: body.count) }
                return h + body.count
            }
        }
    }

    /// The idle check's ping for a WebSocket: a ping frame (browsers answer it without the
    /// page's help); the connection closes if nothing, pong included, arrives in time.
    func sendWebSocketPing(_ c: Connection) {
        sendWebSocketFrame(c, WebSocketOpcode.ping, UnsafeRawBufferPointer(start: nil, count: 0))
    }
}
