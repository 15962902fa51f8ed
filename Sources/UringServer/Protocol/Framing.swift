import Primitives

/// How a connection frames its messages, decided by its first bytes.
enum Framing: UInt8 {
    case undetermined
    case jsonLines
    case binary
    case http
    /// Upgraded on GET /ws (`WebSocketUpgrade`); frames are parsed by `WebSocketFrames`.
    case webSocket
}

/// The state the frame splitter reads and writes: the framing, and the bytes of an unfinished
/// frame (or of a first line being sniffed) held between receives. `FrameInput` holds exactly
/// that; a connection keeps its partial bytes in a record allocated on first use, so it
/// provides them through this protocol. The splitter is generic over it (specialized, no
/// existential).
protocol FrameInputOwner: ~Copyable {
    var framing: Framing { get set }
    /// True when partial bytes are held (must not create the partial buffer's storage).
    var hasPartialInput: Bool { get }
    /// The held bytes (an owner may create its storage on first access).
    var partialInput: ByteBuffer { get set }
}

extension FrameInputOwner where Self: ~Copyable {
    /// Undetermined, with a first line that may still become an HTTP request line: such a
    /// connection is neither sent JSON (it may be HTTP) nor held past `http_header_timeout_ms`.
    var isSniffingRequestLine: Bool { framing == .undetermined && hasPartialInput }
}

/// The splitter's state on its own (a byte stream without a connection).
struct FrameInput: FrameInputOwner, ~Copyable {
    var framing: Framing
    var partialInput = ByteBuffer()

    init(framing: Framing = .undetermined) { self.framing = framing }

    var hasPartialInput: Bool { !partialInput.isEmpty }
}

/// What the splitter found in a connection's byte stream.
enum FrameEvent {
    /// A complete line (JSON lines, without "\n") or binary frame body (codec byte + payload).
    case frame(UnsafeRawBufferPointer)
    /// The frame in progress is over max_frame_bytes: answer frame_too_large and close.
    case tooLarge
    /// A binary frame header that cannot be right (length 0): bad_frame, connection stays.
    case badFrame(String)
}

/// Splits received bytes into frames. Complete frames are handed out straight from the receive
/// buffer (no copy); only an unfinished tail is copied into the owner's `partialInput`, which is
/// emptied again as soon as the frame completes.
enum FrameSplitter {
    /// Calls `emit` for each frame in `bytes`; stops early when `emit` returns false and then
    /// returns the bytes after the last frame it handed out (empty when it ran to the end; a
    /// frame too large also ends it, with nothing returned: the connection is closing).
    @discardableResult
    static func feed<Input: FrameInputOwner & ~Copyable>(
        _ input: inout Input, _ bytes: UnsafeRawBufferPointer, maxFrame: Int,
        _ emit: (FrameEvent) -> Bool
    ) -> UnsafeRawBufferPointer {
        switch input.framing {
        case .jsonLines: return feedLines(&input, bytes, maxFrame: maxFrame, emit)
        case .binary: return feedBinary(&input, bytes, maxFrame: maxFrame, emit)
        case .undetermined, .http, .webSocket: return none   // (WebSocket: `WebSocketFrames.feed`)
        }
    }

    private static var none: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: nil, count: 0) }

    private static let newline = UInt8(ascii: "\n")

    private static func feedLines<Input: FrameInputOwner & ~Copyable>(
        _ input: inout Input, _ bytes: UnsafeRawBufferPointer, maxFrame: Int,
        _ emit: (FrameEvent) -> Bool
    ) -> UnsafeRawBufferPointer {
        var rest = bytes
        if input.hasPartialInput {
            guard let nl = FrameScanner.firstIndex(of: newline, in: rest) else {
                if input.partialInput.readableCount + rest.count > maxFrame + 1 { _ = emit(.tooLarge); return none }
                input.partialInput.append(rest)
                return none
            }
            if input.partialInput.readableCount + nl > maxFrame + 1 { _ = emit(.tooLarge); return none }
            input.partialInput.append(UnsafeRawBufferPointer(rebasing: rest[..<nl]))
            let line = trimCR(input.partialInput.readable)
            let go = line.count == 0 || emit(.frame(line))
            input.partialInput.removeAll()   // storage kept for the next split line (released when idle)
            rest = UnsafeRawBufferPointer(rebasing: rest[(nl + 1)...])
            if !go { return rest }
        }
        while let nl = FrameScanner.firstIndex(of: newline, in: rest) {
            if nl > maxFrame + 1 { _ = emit(.tooLarge); return none }
            let line = trimCR(UnsafeRawBufferPointer(rebasing: rest[..<nl]))
            let after = UnsafeRawBufferPointer(rebasing: rest[(nl + 1)...])
            if line.count > 0 && !emit(.frame(line)) { return after }
            rest = after
        }
        if rest.count > maxFrame + 1 { _ = emit(.tooLarge); return none }
        if rest.count > 0 { input.partialInput.append(rest) }
        return none
    }

    /// Drops one trailing "\r" (telnet/netcat clients); a short line of only spaces and tabs
    /// becomes empty (ignored rather than answered with bad_json).
    @inline(__always)
    private static func trimCR(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var n = line.count
        if n > 0 && line[n - 1] == UInt8(ascii: "\r") { n -= 1 }
        if n > blankCheckLimit { return UnsafeRawBufferPointer(rebasing: line[..<n]) }
        var allSpace = true
        for i in 0..<n where line[i] != 32 && line[i] != 9 { allSpace = false; break }
        return allSpace ? UnsafeRawBufferPointer(start: line.baseAddress, count: 0)
                        : UnsafeRawBufferPointer(rebasing: line[..<n])
    }
    /// Only short lines are checked for being blank; long ones are parsed (and fail) as usual.
    private static let blankCheckLimit = 16

    private static func be32(_ p: UnsafeRawBufferPointer) -> Int {
        Int(p[0]) << 24 | Int(p[1]) << 16 | Int(p[2]) << 8 | Int(p[3])
    }

    private static func feedBinary<Input: FrameInputOwner & ~Copyable>(
        _ input: inout Input, _ bytes: UnsafeRawBufferPointer, maxFrame: Int,
        _ emit: (FrameEvent) -> Bool
    ) -> UnsafeRawBufferPointer {
        var rest = bytes
        while rest.count > 0 {
            if !input.hasPartialInput && rest.count >= 4 {
                let n = be32(rest)
                if n > maxFrame { _ = emit(.tooLarge); return none }
                if n == 0 {
                    rest = UnsafeRawBufferPointer(rebasing: rest[4...])
                    if !emit(.badFrame("binary frame of length 0 (a frame needs its codec byte)")) { return rest }
                    continue
                }
                if rest.count >= 4 + n {
                    let body = UnsafeRawBufferPointer(rebasing: rest[4..<(4 + n)])
                    rest = UnsafeRawBufferPointer(rebasing: rest[(4 + n)...])
                    if !emit(.frame(body)) { return rest }
                    continue
                }
                input.partialInput.append(rest)
                return none
            }
            // Slow path: the header or the body spans receives; accumulate in `partialInput`.
            if input.partialInput.readableCount < 4 {
                let take = min(4 - input.partialInput.readableCount, rest.count)
                input.partialInput.append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                if input.partialInput.readableCount < 4 { return none }
            }
            let n = be32(input.partialInput.readable)
            if n > maxFrame { _ = emit(.tooLarge); return none }
            if n == 0 {
                input.partialInput.removeAll()
                if !emit(.badFrame("binary frame of length 0 (a frame needs its codec byte)")) { return rest }
                continue
            }
            let need = 4 + n - input.partialInput.readableCount
            let take = min(need, rest.count)
            input.partialInput.append(UnsafeRawBufferPointer(rebasing: rest[..<take]))
            rest = UnsafeRawBufferPointer(rebasing: rest[take...])
            if take < need { return none }
            let body = UnsafeRawBufferPointer(rebasing: input.partialInput.readable[4...])
            let go = emit(.frame(body))
            input.partialInput.removeAll()   // storage kept for the next split frame (released when idle)
            if !go { return rest }
        }
        return none
    }

    /// Decides the framing from the first non-whitespace byte: `{` JSON lines, 0 binary, a
    /// letter possibly HTTP (decided on the first line, see `RequestLine`). Returns false when
    /// the bytes match no framing the server speaks.
    ///
    /// While the first line is being sniffed its bytes are kept in `partialInput` (the framing
    /// stays `.undetermined`, `isSniffingRequestLine`) and everything fed is consumed; once it
    /// is HTTP, `partialInput` already holds the request for the HTTP handler.
    static func detect<Input: FrameInputOwner & ~Copyable>(
        _ input: inout Input, _ bytes: UnsafeRawBufferPointer
    ) -> (ok: Bool, consumed: Int) {
        if input.hasPartialInput { return sniffRequestLine(&input, bytes, from: 0) }
        var i = 0
        while i < bytes.count {
            switch bytes[i] {
            case 32, 9, 10, 13: i += 1
            case UInt8(ascii: "{"): input.framing = .jsonLines; return (true, i)
            case 0: input.framing = .binary; return (true, i)
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
                return sniffRequestLine(&input, bytes, from: i)
            default: return (false, i)
            }
        }
        return (true, i)   // whitespace only so far: keep waiting
    }

    private static func sniffRequestLine<Input: FrameInputOwner & ~Copyable>(
        _ input: inout Input, _ bytes: UnsafeRawBufferPointer, from i: Int
    ) -> (ok: Bool, consumed: Int) {
        input.partialInput.append(UnsafeRawBufferPointer(rebasing: bytes[i...]))
        switch RequestLine.classify(input.partialInput.readable) {
        case .http: input.framing = .http
        case .undecided: break
        case .notHTTP: return (false, bytes.count)
        }
        return (true, bytes.count)
    }
}
