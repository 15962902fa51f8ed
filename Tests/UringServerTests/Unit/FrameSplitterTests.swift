// FrameSplitter (Protocol/Framing.swift) without sockets: the splitter's state is a `FrameInput`
// and byte streams are fed to it split at every position, one byte at a time, and whole. Whatever
// the split, the frames handed out must be the originals, in order; frames too large, binary
// frames of length 0 and the early-stop contract behave the same way. `detect` is checked the
// same way (FrameDetectTests.swift, which shares the stream helpers here).

import Testing
@testable import UringServer

// MARK: Helpers

/// A FrameEvent copied out of the receive buffer (the pointers are only valid during `emit`).
enum Event: Equatable, CustomStringConvertible {
    case frame([UInt8])
    case tooLarge
    case badFrame

    init(_ e: FrameEvent) {
        switch e {
        case .frame(let p): self = .frame(Array(p))
        case .tooLarge: self = .tooLarge
        case .badFrame: self = .badFrame
        }
    }

    var description: String {
        switch self {
        case .frame(let b): return "frame(\(String(decoding: b, as: UTF8.self).debugDescription), \(b.count) B)"
        case .tooLarge: return "tooLarge"
        case .badFrame: return "badFrame"
        }
    }
}

/// Feeds `chunks` in order to a `FrameInput` of `framing`, always continuing (emit returns true).
/// Stops feeding after a `.tooLarge` (the reactor closes the connection then). Every feed that
/// ran to the end must return an empty rest.
private func feedChunks(_ framing: UringServer.Framing, _ chunks: [[UInt8]], maxFrame: Int,
                        sourceLocation: SourceLocation = #_sourceLocation) -> [Event] {
    var input = FrameInput(framing: framing)
    var events: [Event] = []
    for chunk in chunks {
        if events.last == .tooLarge { break }
        chunk.withUnsafeBytes { p in
            let rest = FrameSplitter.feed(&input, p, maxFrame: maxFrame) { e in
                events.append(Event(e))
                return true
            }
            #expect(rest.count == 0, "a feed that was never stopped returned \(rest.count) bytes",
                    sourceLocation: sourceLocation)
        }
    }
    return events
}

/// The stream cut in two at `k`.
func split(_ s: [UInt8], at k: Int) -> [[UInt8]] { [Array(s[..<k]), Array(s[k...])] }

/// The stream one byte per chunk.
func bytewise(_ s: [UInt8]) -> [[UInt8]] { s.map { [$0] } }

/// Checks that `stream` yields `expected` whole, split in two at every position, one byte at a
/// time, and (when `threeWay`) split in three at every pair of positions.
private func checkEverySplit(_ framing: UringServer.Framing, _ stream: [UInt8], maxFrame: Int, expected: [Event],
                             threeWay: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(feedChunks(framing, [stream], maxFrame: maxFrame) == expected, "whole", sourceLocation: sourceLocation)
    for k in 0...stream.count {
        let got = feedChunks(framing, split(stream, at: k), maxFrame: maxFrame)
        #expect(got == expected, "split at \(k) of \(stream.count)", sourceLocation: sourceLocation)
        if got != expected { return }   // one failure is enough to read
    }
    #expect(feedChunks(framing, bytewise(stream), maxFrame: maxFrame) == expected, "one byte at a time",
            sourceLocation: sourceLocation)
    guard threeWay else { return }
    for i in 0...stream.count {
        for j in i...stream.count {
            let chunks = [Array(stream[..<i]), Array(stream[i..<j]), Array(stream[j...])]
            let got = feedChunks(framing, chunks, maxFrame: maxFrame)
            #expect(got == expected, "split at \(i) and \(j) of \(stream.count)", sourceLocation: sourceLocation)
            if got != expected { return }
        }
    }
}

func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }

/// A binary frame: 4-byte big-endian length, then the body (codec byte + payload).
func binaryFrame(_ body: [UInt8]) -> [UInt8] { header(body.count) + body }

private func header(_ n: Int) -> [UInt8] {
    [UInt8(truncatingIfNeeded: n >> 24), UInt8(truncatingIfNeeded: n >> 16),
     UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
}

/// A body of `n` bytes (n ≥ 1): codec byte then a recognizable payload.
func body(codec: UInt8, _ n: Int, seed: UInt8) -> [UInt8] {
    [codec] + (0..<(n - 1)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

// MARK: Feed

@Suite("FrameSplitter")
struct FrameSplitterTests {
    // JSON lines: a "\r" before the "\n" is dropped; empty lines and short lines of spaces and
    // tabs (also with "\r") are skipped; a long line of spaces is handed out (it fails parsing
    // later); leading spaces are kept; a line over 256 bytes makes the partial buffer grow.
    static let longValue = String(repeating: "v", count: 300)
    static let lineStream: [UInt8] = utf8(
        "{\"a\":1}\n" +
        "{\"b\":\"two\"}\r\n" +
        "\n" +
        "   \t \r\n" +
        "\r\n" +
        "{\"long\":\"\(longValue)\"}\n" +
        "  {\"lead\":\"space\"}\n" +
        String(repeating: " ", count: 20) + "\n" +
        "x\n")
    fileprivate static let lineFrames: [Event] = [
        .frame(utf8("{\"a\":1}")),
        .frame(utf8("{\"b\":\"two\"}")),
        .frame(utf8("{\"long\":\"\(longValue)\"}")),
        .frame(utf8("  {\"lead\":\"space\"}")),
        .frame(utf8(String(repeating: " ", count: 20))),
        .frame(utf8("x")),
    ]

    @Test("JSON lines: the same frames, in order, whole, split at every byte and one byte at a time")
    func linesEverySplit() {
        checkEverySplit(.jsonLines, Self.lineStream, maxFrame: 1024, expected: Self.lineFrames)
    }

    @Test("JSON lines: a short stream split in three at every pair of positions")
    func linesThreeWay() {
        let stream = utf8("{\"a\":1}\r\n \t\n\n{\"bb\":22}\n{}\r\nz\n")
        checkEverySplit(.jsonLines, stream, maxFrame: 64,
                        expected: [.frame(utf8("{\"a\":1}")), .frame(utf8("{\"bb\":22}")), .frame(utf8("{}")), .frame(utf8("z"))],
                        threeWay: true)
    }

    @Test("JSON lines: an unfinished line is held (and not handed out) until its newline")
    func linesUnfinished() {
        var input = FrameInput(framing: .jsonLines)
        var events: [Event] = []
        func feed(_ s: String) {
            utf8(s).withUnsafeBytes { p in
                _ = FrameSplitter.feed(&input, p, maxFrame: 64) { events.append(Event($0)); return true }
            }
        }
        feed("{\"a\":1}\n{\"b\"")
        #expect(events == [.frame(utf8("{\"a\":1}"))])
        let held = input.hasPartialInput   // #expect would copy the (noncopyable) FrameInput
        #expect(held)
        feed(":2}\r")
        #expect(events.count == 1, "no newline yet: \(events)")
        feed("\n")
        #expect(events == [.frame(utf8("{\"a\":1}")), .frame(utf8("{\"b\":2}"))])
        let stillHeld = input.hasPartialInput
        #expect(!stillHeld, "the partial line is dropped once handed out")
    }

    @Test("JSON lines: a line longer than max_frame_bytes is tooLarge however it is split; max_frame_bytes itself is fine")
    func linesTooLarge() {
        let maxFrame = 40
        let ok = utf8("{\"k\":\"" + String(repeating: "a", count: maxFrame - 8) + "\"}")   // maxFrame bytes
        #expect(ok.count == maxFrame)
        // Exactly max_frame_bytes, with and without "\r".
        checkEverySplit(.jsonLines, utf8("{}\n") + ok + utf8("\n{}\n"), maxFrame: maxFrame,
                        expected: [.frame(utf8("{}")), .frame(ok), .frame(utf8("{}"))])
        checkEverySplit(.jsonLines, utf8("{}\n") + ok + utf8("\r\n{}\n"), maxFrame: maxFrame,
                        expected: [.frame(utf8("{}")), .frame(ok), .frame(utf8("{}"))])
        // Two bytes over (one over is tolerated for the "\r"): tooLarge, nothing after it.
        let big = ok + utf8("bb")
        checkEverySplit(.jsonLines, utf8("{}\n") + big + utf8("\n{}\n"), maxFrame: maxFrame,
                        expected: [.frame(utf8("{}")), .tooLarge])
        // Far over and never finished: tooLarge once the held bytes pass the limit.
        checkEverySplit(.jsonLines, utf8("{}\n") + [UInt8](repeating: 120, count: 3 * maxFrame), maxFrame: maxFrame,
                        expected: [.frame(utf8("{}")), .tooLarge])
        // An unfinished line of up to max_frame_bytes + 1 is still waiting: no event.
        checkEverySplit(.jsonLines, utf8("{}\n") + [UInt8](repeating: 120, count: maxFrame + 1), maxFrame: maxFrame,
                        expected: [.frame(utf8("{}"))])
    }

    @Test("JSON lines: a line of max_frame_bytes + 1 without \"\\r\" gets the same verdict at every split")
    func linesOneOverConsistent() {
        let maxFrame = 40
        let stream = utf8("{}\n") + [UInt8](repeating: 121, count: maxFrame + 1) + utf8("\n{}\n")
        let whole = feedChunks(.jsonLines, [stream], maxFrame: maxFrame)
        #expect(whole.first == .frame(utf8("{}")))
        checkEverySplit(.jsonLines, stream, maxFrame: maxFrame, expected: whole)
    }

    static let binaryBodies: [[UInt8]] = [
        body(codec: 0, 1, seed: 0),      // just the codec byte
        body(codec: 0, 7, seed: 1),
        body(codec: 1, 3, seed: 2),      // codec bytes are not the splitter's business
        body(codec: 0, 300, seed: 3),    // over ByteBuffer's first 256 bytes
        body(codec: 2, 4, seed: 4),
        body(codec: 0, 10, seed: 5),
    ]

    @Test("binary frames: the same bodies, in order, whole, split at every byte and one byte at a time")
    func binaryEverySplit() {
        let stream = Self.binaryBodies.flatMap(binaryFrame)
        checkEverySplit(.binary, stream, maxFrame: 1024, expected: Self.binaryBodies.map { .frame($0) })
    }

    @Test("binary frames: a short stream split in three at every pair of positions")
    func binaryThreeWay() {
        let bodies = [body(codec: 0, 1, seed: 9), body(codec: 0, 6, seed: 8), body(codec: 1, 2, seed: 7)]
        checkEverySplit(.binary, bodies.flatMap(binaryFrame), maxFrame: 16,
                        expected: bodies.map { .frame($0) }, threeWay: true)
    }

    @Test("binary frames: a length of 0 is badFrame and the stream goes on, at every split")
    func binaryLengthZero() {
        let a = body(codec: 0, 5, seed: 1), b = body(codec: 0, 9, seed: 2)
        checkEverySplit(.binary, binaryFrame(a) + header(0) + binaryFrame(b) + header(0) + header(0) + binaryFrame(a),
                        maxFrame: 64, expected: [.frame(a), .badFrame, .frame(b), .badFrame, .badFrame, .frame(a)],
                        threeWay: true)
        // First thing on the connection.
        checkEverySplit(.binary, header(0) + binaryFrame(b), maxFrame: 64, expected: [.badFrame, .frame(b)])
    }

    @Test("binary frames: a length over max_frame_bytes is tooLarge as soon as the header is in; max_frame_bytes itself is fine")
    func binaryTooLarge() {
        let maxFrame = 32
        let a = body(codec: 0, 5, seed: 1)
        let full = body(codec: 0, maxFrame, seed: 6)
        checkEverySplit(.binary, binaryFrame(a) + binaryFrame(full) + binaryFrame(a), maxFrame: maxFrame,
                        expected: [.frame(a), .frame(full), .frame(a)])
        // The header alone (no body yet) is enough for the verdict.
        checkEverySplit(.binary, binaryFrame(a) + header(maxFrame + 1), maxFrame: maxFrame,
                        expected: [.frame(a), .tooLarge])
        checkEverySplit(.binary, binaryFrame(a) + header(maxFrame + 1) + body(codec: 0, maxFrame + 1, seed: 2) + binaryFrame(a),
                        maxFrame: maxFrame, expected: [.frame(a), .tooLarge])
        // A huge length (top byte set) is not taken for a negative or small number.
        checkEverySplit(.binary, [0xff, 0xff, 0xff, 0xff] + a, maxFrame: maxFrame, expected: [.tooLarge])
        checkEverySplit(.binary, [0x80, 0, 0, 1] + a, maxFrame: maxFrame, expected: [.tooLarge])
    }

    @Test("undetermined and HTTP connections: feed hands out nothing")
    func feedWithoutFraming() {
        for framing in [UringServer.Framing.undetermined, .http] {
            var input = FrameInput(framing: framing)
            var called = false
            utf8("{\"a\":1}\n").withUnsafeBytes { p in
                let rest = FrameSplitter.feed(&input, p, maxFrame: 64) { _ in called = true; return true }
                #expect(rest.count == 0)
            }
            #expect(!called, "\(framing)")
            let held = input.hasPartialInput   // #expect would copy the (noncopyable) FrameInput
            #expect(!held)
        }
    }

    // MARK: Early stop

    /// Feeds `chunks` with an emit that stops after every event, and re-feeds what `feed`
    /// returns (as the reactor does with held input) until it is empty. Checks that what comes
    /// back is a suffix of the chunk just fed.
    private static func feedStopping(_ framing: UringServer.Framing, _ chunks: [[UInt8]], maxFrame: Int) -> [Event] {
        var input = FrameInput(framing: framing)
        var events: [Event] = []
        for chunk in chunks {
            var pending = chunk
            var rounds = 0
            while true {
                rounds += 1
                if rounds > chunk.count + 2 { Issue.record("no progress re-feeding \(pending.count) bytes"); return events }
                let before = events.count
                let rest: [UInt8] = pending.withUnsafeBytes { p in
                    Array(FrameSplitter.feed(&input, p, maxFrame: maxFrame) { e in events.append(Event(e)); return false })
                }
                if rest.isEmpty { break }
                #expect(events.count == before + 1, "a non-empty rest comes back only after one event that said stop")
                #expect(pending.count > rest.count && Array(pending.suffix(rest.count)) == rest,
                        "the rest is a proper suffix of what was fed")
                pending = rest
            }
        }
        return events
    }

    @Test("early stop, JSON lines: the rest after the frame comes back, exactly; re-fed it yields the others")
    func earlyStopLinesExact() {
        // Whole stream: the rest returned after frame k starts right after that frame's "\n".
        let s = Self.lineStream
        var ends: [Int] = []            // offset just after each handed-out line's "\n"
        var start = 0
        for (i, b) in s.enumerated() where b == 10 {
            let line = Array(s[start..<i])
            let trimmed = line.last == 13 ? Array(line.dropLast()) : line
            if !(trimmed.count <= 16 && trimmed.allSatisfy { $0 == 32 || $0 == 9 }) { ends.append(i + 1) }
            start = i + 1
        }
        #expect(ends.count == Self.lineFrames.count)
        var input = FrameInput(framing: .jsonLines)
        var pending = s
        for (k, expected) in Self.lineFrames.enumerated() {
            var got: [Event] = []
            let rest: [UInt8] = pending.withUnsafeBytes { p in
                Array(FrameSplitter.feed(&input, p, maxFrame: 1024) { got.append(Event($0)); return false })
            }
            #expect(got == [expected], "frame \(k)")
            #expect(rest == Array(s[ends[k]...]), "rest after frame \(k)")
            pending = rest
        }
        #expect(pending.isEmpty)
        let held = input.hasPartialInput   // #expect would copy the (noncopyable) FrameInput
        #expect(!held)
    }

    @Test("early stop, binary: the rest after the frame (or after a length-0 header) comes back, exactly")
    func earlyStopBinaryExact() {
        let a = body(codec: 0, 3, seed: 1), b = body(codec: 1, 5, seed: 2)
        let s = binaryFrame(a) + header(0) + binaryFrame(b)
        var input = FrameInput(framing: .binary)
        var got: [Event] = []
        let stop = { (e: FrameEvent) -> Bool in got.append(Event(e)); return false }
        let r1: [UInt8] = s.withUnsafeBytes { Array(FrameSplitter.feed(&input, $0, maxFrame: 64, stop)) }
        #expect(got == [.frame(a)])
        #expect(r1 == Array(s[(4 + a.count)...]))
        let r2: [UInt8] = r1.withUnsafeBytes { Array(FrameSplitter.feed(&input, $0, maxFrame: 64, stop)) }
        #expect(got == [.frame(a), .badFrame])
        #expect(r2 == binaryFrame(b))
        let r3: [UInt8] = r2.withUnsafeBytes { Array(FrameSplitter.feed(&input, $0, maxFrame: 64, stop)) }
        #expect(got == [.frame(a), .badFrame, .frame(b)])
        #expect(r3.isEmpty)
        let held = input.hasPartialInput   // #expect would copy the (noncopyable) FrameInput
        #expect(!held)
    }

    @Test("early stop, any split: stopping after every event and re-feeding the rest yields the same events")
    func earlyStopEverySplit() {
        let lines = Self.lineStream
        let bodies = Self.binaryBodies
        let a = body(codec: 0, 5, seed: 1)
        let binary = bodies.flatMap(binaryFrame) + header(0) + binaryFrame(a)
        let binaryEvents = bodies.map { Event.frame($0) } + [.badFrame, .frame(a)]
        for k in 0...lines.count {
            let got = Self.feedStopping(.jsonLines, split(lines, at: k), maxFrame: 1024)
            #expect(got == Self.lineFrames, "lines split at \(k)")
            if got != Self.lineFrames { break }
        }
        #expect(Self.feedStopping(.jsonLines, bytewise(lines), maxFrame: 1024) == Self.lineFrames)
        for k in 0...binary.count {
            let got = Self.feedStopping(.binary, split(binary, at: k), maxFrame: 1024)
            #expect(got == binaryEvents, "binary split at \(k)")
            if got != binaryEvents { break }
        }
        #expect(Self.feedStopping(.binary, bytewise(binary), maxFrame: 1024) == binaryEvents)
    }

    @Test("a frame too large ends the feed with nothing returned, even when emit says stop")
    func tooLargeReturnsNothing() {
        for (framing, stream) in [(UringServer.Framing.jsonLines, utf8(String(repeating: "x", count: 100) + "\n{}\n")),
                                  (.binary, header(100) + [UInt8](repeating: 0, count: 100) + binaryFrame([0]))] {
            var input = FrameInput(framing: framing)
            var got: [Event] = []
            let rest: [UInt8] = stream.withUnsafeBytes { p in
                Array(FrameSplitter.feed(&input, p, maxFrame: 32) { got.append(Event($0)); return false })
            }
            #expect(got == [.tooLarge], "\(framing)")
            #expect(rest.isEmpty, "\(framing)")
        }
    }
}
