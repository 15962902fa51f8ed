import Primitives

// RFC 6455 framing for connections that upgraded on /ws: client frames are parsed (masked,
// possibly fragmented, control frames interleaved) into whole messages; server frames are
// written unmasked (`WebSocketFrames.writeHeader`). No extension is negotiated, so the RSV
// bits must be 0.

/// The close codes the server sends (RFC 6455 §7.4.1).
enum WebSocketCloseCode: UInt16 {
    case normal = 1000
    case goingAway = 1001
    case protocolError = 1002
    case unsupportedData = 1003
    case invalidPayload = 1007
    case policyViolation = 1008
    case tooBig = 1009
    case internalError = 1011
}

enum WebSocketOpcode {
    static let continuation: UInt8 = 0
    static let text: UInt8 = 1
    static let binary: UInt8 = 2
    static let close: UInt8 = 8
    static let ping: UInt8 = 9
    static let pong: UInt8 = 10
}

/// One WebSocket connection's message state (the bytes of an unfinished *frame* are the
/// `FrameInputOwner`'s partial input, like any framing's). A class: the reactor reads and sets
/// `closeSent` while the parser is running over the same connection.
final class WebSocketSession {
    /// Opcode of the fragmented message being reassembled (0: none).
    var messageOpcode: UInt8 = 0
    /// The unmasked payload of that message so far (bounded by max_frame_bytes).
    var message = ByteBuffer()
    /// Bytes of a text `message` already known to be whole, valid UTF-8: each fragment is
    /// checked as it arrives, so a bad one fails the connection at once (RFC 6455 §8.1).
    var validatedCount = 0
    /// Payload bytes of the text frame being gathered in the partial input that are already
    /// known to be valid UTF-8 (`earlyCheck`): a frame arriving in pieces fails at the bad piece.
    var frameValidated = 0
    /// A close frame was sent: nothing more is sent or processed.
    var closeSent = false
    /// The close frame to write at the end of the turn (0: none; 1005: an empty one), so it
    /// follows whatever the turn queued before it (`Reactor.writePendingClose`).
    var pendingCloseCode: UInt16 = 0
    var pendingCloseReason = ""
}

/// What the parser found in a WebSocket connection's bytes. Payloads are unmasked and valid
/// (text is UTF-8), and only valid until the next event.
enum WebSocketEvent {
    case text(UnsafeRawBufferPointer)
    case binary(UnsafeRawBufferPointer)
    case ping(UnsafeRawBufferPointer)
    case pong
    /// The peer's close frame: its code (1005 when it sent none) and reason.
    case close(code: UInt16, reason: UnsafeRawBufferPointer)
    /// A protocol violation: answer with a close frame of this code and close the connection.
    case fail(WebSocketCloseCode, String)
}

enum WebSocketFrames {
    struct Header {
        var fin: Bool
        var rsv: UInt8
        var opcode: UInt8
        var masked: Bool
        var length: UInt64
        var size: Int
        var mask: UInt32   // the four key bytes as they appear on the wire (host-order load)
    }

    /// The frame header at the start of `p`, or nil while it is incomplete.
    static func header(_ p: UnsafeRawBufferPointer) -> Header? {
        guard p.count >= 2 else { return nil }
        let b0 = p[0], b1 = p[1]
        let masked = b1 & 0x80 != 0
        var size = 2
        var length = UInt64(b1 & 0x7F)
        if length == 126 { size = 4 } else if length == 127 { size = 10 }
        if masked { size += 4 }
        guard p.count >= size else { return nil }
        if length == 126 {
            length = UInt64(p[2]) << 8 | UInt64(p[3])
        } else if length == 127 {
            length = 0
            for i in 2..<10 { length = length << 8 | UInt64(p[i]) }
        }
        let mask = masked ? p.loadUnaligned(fromByteOffset: size - 4, as: UInt32.self) : 0
        return Header(fin: b0 & 0x80 != 0, rsv: b0 & 0x70, opcode: b0 & 0x0F, masked: masked,
                      length: length, size: size, mask: mask)
    }

    /// Bytes still missing for the header whose first `held` bytes are `p` (at least 1).
    private static func headerShortfall(_ p: UnsafeRawBufferPointer) -> Int {
        if p.count < 2 { return 2 - p.count }
        let l = p[1] & 0x7F
        let size = 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) + (p[1] & 0x80 != 0 ? 4 : 0)
        return max(1, size - p.count)
    }

    /// Why a frame with this header is refused, judged before its payload is read (so an
    /// announced 2^63-byte frame costs nothing).
    static func check(_ h: Header, _ session: WebSocketSession, maxMessage: Int) -> (WebSocketCloseCode, String)? {
        if h.rsv != 0 { return (.protocolError, "reserved bits set (no extension was negotiated)") }
        switch h.opcode {
        case WebSocketOpcode.continuation, WebSocketOpcode.text, WebSocketOpcode.binary,
             WebSocketOpcode.close, WebSocketOpcode.ping, WebSocketOpcode.pong: break
        default: return (.protocolError, "reserved opcode \(h.opcode)")
        }
        if !h.masked { return (.protocolError, "client frames must be masked") }
        if h.length >> 63 != 0 { return (.protocolError, "64-bit payload length with its top bit set") }
        if h.opcode >= 8 {
            if !h.fin { return (.protocolError, "fragmented control frame") }
            if h.length > 125 { return (.protocolError, "control frame payload over 125 bytes") }
            return nil
        }
        if h.opcode == WebSocketOpcode.continuation && session.messageOpcode == 0 {
            return (.protocolError, "continuation frame without a message to continue")
        }
        if h.opcode != WebSocketOpcode.continuation && session.messageOpcode != 0 {
            return (.protocolError, "new message before the fragmented one was finished")
        }
        if h.length > UInt64(maxMessage) || session.message.readableCount + Int(h.length) > maxMessage {
            return (.tooBig, "message over max_frame_bytes (\(maxMessage))")
        }
        return nil
    }

    private static var none: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    /// Calls `emit` for every control frame and every complete message in `bytes`; stops early
    /// when `emit` returns false and then returns the bytes after the last frame it handled
    /// (as `FrameSplitter.feed`). A `.fail` ends the feed with nothing returned. Payloads are
    /// unmasked into `scratch` (single-frame messages, control frames) or into the session's
    /// reassembly buffer (fragments): the receive buffer itself is never written.
    @discardableResult
    static func feed<Input: FrameInputOwner & ~Copyable>(
        _ input: inout Input, _ session: WebSocketSession, _ bytes: UnsafeRawBufferPointer,
        maxMessage: Int, scratch: inout ByteBuffer, _ emit: (WebSocketEvent) -> Bool
    ) -> UnsafeRawBufferPointer {
        var rest = bytes
        while true {
            if input.hasPartialInput {
                // Slow path: a frame split across receives, gathered in `partialInput`.
                var h = header(input.partialInput.readable)
                while h == nil && rest.count > 0 {
                    let take = min(headerShortfall(input.partialInput.readable), rest.count)
                    input.partialInput.append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
                    rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                    h = header(input.partialInput.readable)
                }
                guard let h else { return none }
                if let (code, why) = check(h, session, maxMessage: maxMessage) {
                    input.partialInput.removeAll()
                    _ = emit(.fail(code, why))
                    return none
                }
                let total = h.size + Int(h.length)
                let need = total - input.partialInput.readableCount
                let take = min(need, rest.count)
                input.partialInput.append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                if take < need { return earlyCheck(h, input.partialInput.readable, session, scratch: &scratch, emit) }
                let payload = UnsafeRawBufferPointer(rebasing: input.partialInput.readable[h.size..<total])
                session.frameValidated = 0
                let go = process(h, payload, session, maxMessage: maxMessage, scratch: &scratch, emit)
                input.partialInput.removeAll()   // storage kept for the next split frame (released when idle)
                if !go { return rest }
                continue
            }
            if rest.isEmpty { return none }
            guard let h = header(rest) else {
                input.partialInput.append(rest)
                return none
            }
            if let (code, why) = check(h, session, maxMessage: maxMessage) {
                _ = emit(.fail(code, why))
                return none
            }
            let total = h.size + Int(h.length)
            if rest.count < total {
                input.partialInput.append(rest)   // bounded: the header passed `check`
                session.frameValidated = 0
                return earlyCheck(h, rest, session, scratch: &scratch, emit)
            }
            let payload = UnsafeRawBufferPointer(rebasing: rest[h.size..<total])
            rest = UnsafeRawBufferPointer(rebasing: rest[total...])
            if !process(h, payload, session, maxMessage: maxMessage, scratch: &scratch, emit) { return rest }
        }
    }

    /// A text frame still arriving (`buffered`: its header and the payload so far): the payload
    /// bytes not yet checked are unmasked into `scratch` and checked, so invalid UTF-8 fails the
    /// connection before the rest of the frame arrives (RFC 6455 §8.1). A continuation whose
    /// message ends in a cut-short character is left to the check when the frame completes.
    /// Returns no unread bytes (`feed`'s result).
    private static func earlyCheck(
        _ h: Header, _ buffered: UnsafeRawBufferPointer, _ session: WebSocketSession,
        scratch: inout ByteBuffer, _ emit: (WebSocketEvent) -> Bool
    ) -> UnsafeRawBufferPointer {
        let text = h.opcode == WebSocketOpcode.text
            || (h.opcode == WebSocketOpcode.continuation && session.messageOpcode == WebSocketOpcode.text
                && session.validatedCount == session.message.readableCount)
        let from = session.frameValidated
        let available = buffered.count - h.size
        guard text, available > from else { return none }
        // The key as it applies from payload byte `from` on (it repeats every 4 bytes).
        let shift = UInt32(from & 3) * 8
        let key = shift == 0 ? h.mask : h.mask >> shift | h.mask << (32 - shift)
        scratch.removeAll()
        unmask(UnsafeRawBufferPointer(rebasing: buffered[(h.size + from)...]), key, into: &scratch)
        guard let valid = UTF8Validation.validPrefix(scratch.readable, allowingIncompleteTail: true) else {
            _ = emit(.fail(.invalidPayload, "text message is not valid UTF-8"))
            return none
        }
        session.frameValidated = from + valid
        return none
    }

    /// One whole frame (its header passed `check`): unmasked, validated, emitted.
    private static func process(
        _ h: Header, _ masked: UnsafeRawBufferPointer, _ session: WebSocketSession, maxMessage: Int,
        scratch: inout ByteBuffer, _ emit: (WebSocketEvent) -> Bool
    ) -> Bool {
        let single = h.opcode >= 8 || (h.fin && h.opcode != WebSocketOpcode.continuation)
        if single {
            scratch.removeAll()
            unmask(masked, h.mask, into: &scratch)
            let payload = scratch.readable
            switch h.opcode {
            case WebSocketOpcode.ping: return emit(.ping(payload))
            case WebSocketOpcode.pong: return emit(.pong)
            case WebSocketOpcode.close: return emitClose(payload, emit)
            case WebSocketOpcode.text:
                guard UTF8Validation.isValid(payload) else {
                    _ = emit(.fail(.invalidPayload, "text message is not valid UTF-8"))
                    return false
                }
                return emit(.text(payload))
            default: return emit(.binary(payload))
            }
        }
        if h.opcode != WebSocketOpcode.continuation { session.messageOpcode = h.opcode }
        unmask(masked, h.mask, into: &session.message)
        let opcode = session.messageOpcode
        if opcode == WebSocketOpcode.text {
            let rest = UnsafeRawBufferPointer(rebasing: session.message.readable[session.validatedCount...])
            guard let valid = UTF8Validation.validPrefix(rest, allowingIncompleteTail: !h.fin), h.fin ? valid == rest.count : true else {
                session.messageOpcode = 0
                session.validatedCount = 0
                session.message.removeAll()
                _ = emit(.fail(.invalidPayload, "text message is not valid UTF-8"))
                return false
            }
            session.validatedCount += valid
        }
        if !h.fin { return true }
        session.messageOpcode = 0
        session.validatedCount = 0
        defer {
            session.message.removeAll()
            session.message.releaseIfEmpty()   // fragmented messages are rare: hold no memory after one
        }
        let payload = session.message.readable
        return emit(opcode == WebSocketOpcode.text ? .text(payload) : .binary(payload))
    }

    private static func emitClose(_ p: UnsafeRawBufferPointer, _ emit: (WebSocketEvent) -> Bool) -> Bool {
        if p.count == 0 { return emit(.close(code: 1005, reason: none)) }
        if p.count == 1 {
            _ = emit(.fail(.protocolError, "close frame with a 1-byte payload"))
            return false
        }
        let code = UInt16(p[0]) << 8 | UInt16(p[1])
        guard isValidCloseCode(code) else {
            _ = emit(.fail(.protocolError, "close code \(code) may not be sent"))
            return false
        }
        let reason = UnsafeRawBufferPointer(rebasing: p[2...])
        guard UTF8Validation.isValid(reason) else {
            _ = emit(.fail(.invalidPayload, "close reason is not valid UTF-8"))
            return false
        }
        return emit(.close(code: code, reason: reason))
    }

    /// Codes an endpoint may put in a close frame (RFC 6455 §7.4; 1004–1006 and 1015 are
    /// reserved, 1016–2999 unassigned, 3000–4999 for libraries and applications).
    static func isValidCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1011, 3000...4999: return true
        default: return false
        }
    }

    /// XORs `src` with the 4-byte key into `dst`, eight bytes at a time.
    static func unmask(_ src: UnsafeRawBufferPointer, _ key: UInt32, into dst: inout ByteBuffer) {
        let n = src.count
        guard n > 0, let s = src.baseAddress else { return }
        dst.writeWithUnsafeMutableBytes(minimumCapacity: n) { out in
            let d = out.baseAddress.unsafelyUnwrapped
            let key64 = UInt64(key) | UInt64(key) << 32   // key bytes repeat every 4 (little endian)
            var i = 0
            while i + 8 <= n {
                d.storeBytes(of: s.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ key64, toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < n {
                let k = UInt8(truncatingIfNeeded: key >> (UInt32(i & 3) * 8))
                d.storeBytes(of: s.load(fromByteOffset: i, as: UInt8.self) ^ k, toByteOffset: i, as: UInt8.self)
                i += 1
            }
            return n
        }
    }

    /// The header of an unmasked server frame with FIN set: 2, 4 or 10 bytes.
    static func headerSize(_ count: Int) -> Int { count < 126 ? 2 : count < 65536 ? 4 : 10 }

    /// Writes that header at `p` (which has `headerSize(count)` bytes) and returns its size.
    @inline(__always)
    static func writeHeader(opcode: UInt8, count: Int, to p: UnsafeMutableRawPointer) -> Int {
        p.storeBytes(of: 0x80 | opcode, as: UInt8.self)
        if count < 126 {
            p.storeBytes(of: UInt8(count), toByteOffset: 1, as: UInt8.self)
            return 2
        }
        if count < 65536 {
            p.storeBytes(of: 126, toByteOffset: 1, as: UInt8.self)
            p.storeBytes(of: UInt16(count).bigEndian, toByteOffset: 2, as: UInt16.self)
            return 4
        }
        p.storeBytes(of: 127, toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: UInt64(count).bigEndian, toByteOffset: 2, as: UInt64.self)
        return 10
    }
}
