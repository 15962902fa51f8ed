// WebSocketFrames (Protocol/WebSocketFrames.swift) and UTF8Validation without sockets: a
// stream of masked client frames fed whole, split at every position and one byte at a time
// must give the same events; refusals are decided from the header; the early-stop contract;
// server frame headers; the UTF-8 validator against Swift's own decoder.

import Primitives
import Testing
@testable import UringServer

/// A WebSocketEvent copied out of the scratch buffers.
enum WSEvent: Equatable {
    case text([UInt8]), binary([UInt8]), ping([UInt8]), pong, close(UInt16, [UInt8]), fail(UInt16)

    init(_ e: WebSocketEvent) {
        switch e {
        case .text(let p): self = .text(Array(p))
        case .binary(let p): self = .binary(Array(p))
        case .ping(let p): self = .ping(Array(p))
        case .pong: self = .pong
        case let .close(code, reason): self = .close(code, Array(reason))
        case let .fail(code, _): self = .fail(code.rawValue)
        }
    }
}

/// Feeds `stream` in pieces of the given sizes (the rest in one piece) to a fresh parser.
func feedWS(_ stream: [UInt8], pieces: [Int] = [], maxMessage: Int = 1 << 20) -> [WSEvent] {
    var input = FrameInput(framing: .webSocket)
    let session = WebSocketSession()
    var scratch = ByteBuffer()
    var events: [WSEvent] = []
    var failed = false
    var offset = 0
    var cuts = pieces
    while offset < stream.count && !failed {
        let n = cuts.isEmpty ? stream.count - offset : min(cuts.removeFirst(), stream.count - offset)
        stream[offset..<(offset + n)].withUnsafeBytes { b in
            WebSocketFrames.feed(&input, session, b, maxMessage: maxMessage, scratch: &scratch) { e in
                events.append(WSEvent(e))
                if case .fail = e { failed = true }
                return true
            }
        }
        offset += n
    }
    return events
}

@Suite("WebSocketFrames")
struct WebSocketFramesTests {
    static let key: [UInt8] = [0xA1, 0x02, 0xF3, 0x44]

    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) -> [UInt8] {
        WSClient.encode(opcode, payload, fin: fin, masked: masked)
    }

    @Test func splitsAnywhereGiveTheSameEvents() {
        let big = (0..<70_000).map { UInt8(truncatingIfNeeded: 65 + $0 % 26) }
        let stream = Self.frame(1, Array("héllo".utf8))
            + Self.frame(1, Array(big[..<300]), fin: false)        // 16-bit length, fragment
            + Self.frame(9, Array("p".utf8))                        // ping between fragments
            + Self.frame(0, Array(big[300..<70_000]), fin: true)     // 64-bit length
            + Self.frame(2, [0, 1, 2, 255])
            + Self.frame(10, [])
            + Self.frame(8, [0x03, 0xE8] + Array("bye".utf8))
        let expected: [WSEvent] = [.text(Array("héllo".utf8)), .ping(Array("p".utf8)), .text(big), .binary([0, 1, 2, 255]),
                                   .pong, .close(1000, Array("bye".utf8))]
        #expect(feedWS(stream) == expected)
        #expect(feedWS(stream, pieces: Array(repeating: 1, count: 400)) == expected, "byte by byte through the headers")
        for cut in [1, 2, 3, 5, 9, 13, 14, 15, 320, 330, 70_320, stream.count - 3] {
            #expect(feedWS(stream, pieces: [cut]) == expected, "split at \(cut)")
        }
    }

    @Test func refusalsAreDecidedFromTheHeader() {
        #expect(feedWS(Self.frame(1, [0x7B], masked: false)) == [.fail(1002)])
        #expect(feedWS([0x81 | 0x40, 0x80, 0, 0, 0, 0]) == [.fail(1002)], "RSV1 without an extension")
        #expect(feedWS(Self.frame(3, [])) == [.fail(1002)], "reserved opcode")
        #expect(feedWS(Self.frame(9, [], fin: false)) == [.fail(1002)])
        #expect(feedWS(Self.frame(0, [1])) == [.fail(1002)], "nothing to continue")
        #expect(feedWS(Self.frame(1, [1], fin: false) + Self.frame(1, [1])) == [.fail(1002)], "message inside a message")
        // Lengths: only the header is sent; nothing is buffered for the announced payload.
        #expect(feedWS(WSClient.encode(2, [], forcedLength: UInt64(1) << 63)) == [.fail(1002)], "top bit set")
        #expect(feedWS(WSClient.encode(2, [], forcedLength: 1 << 40)) == [.fail(1009)])
        #expect(feedWS(WSClient.encode(1, [], forcedLength: 1001), maxMessage: 1000) == [.fail(1009)])
        #expect(feedWS(Self.frame(1, Array(repeating: 65, count: 600), fin: false)
                       + Self.frame(0, Array(repeating: 65, count: 600)), maxMessage: 1000) == [.fail(1009)],
                "the reassembled message counts")
        #expect(feedWS(Self.frame(8, [3])) == [.fail(1002)], "1-byte close payload")
        #expect(feedWS(Self.frame(8, [0x03, 0xEE])) == [.fail(1002)], "close code 1006")
        #expect(feedWS(Self.frame(8, [0x0F, 0xA0])) == [.close(4000, [])], "4000 is an application code")
        #expect(feedWS(Self.frame(8, [])) == [.close(1005, [])])
        #expect(feedWS(Self.frame(1, [0xC0, 0x80])) == [.fail(1007)], "overlong NUL")
    }

    @Test func fragmentsAreValidatedAsTheyArrive() {
        // A character split between fragments is fine; a bad byte fails at its fragment,
        // before the message is finished (RFC 6455 §8.1, "fail fast").
        let e = Array("é".utf8)
        #expect(feedWS(Self.frame(1, [0x61, e[0]], fin: false) + Self.frame(0, [e[1]])) == [.text([0x61] + e)])
        #expect(feedWS(Self.frame(1, [0x61, 0xC0], fin: false)) == [.fail(1007)], "no FIN needed to fail")
        #expect(feedWS(Self.frame(1, [0xF0, 0x9F], fin: false) + Self.frame(0, [0x41], fin: false)) == [.fail(1007)])
        #expect(feedWS(Self.frame(1, [0xF0, 0x9F], fin: false) + Self.frame(0, [0x98], fin: true)) == [.fail(1007)],
                "cut short at the end of the message")
        // One frame arriving in pieces fails at the bad piece (only its first bytes are fed).
        let bad = Self.frame(1, Array("abcdefg".utf8) + [0xC0] + Array("more text to come".utf8))
        #expect(feedWS(Array(bad.prefix(6 + 8))) == [.fail(1007)])
        #expect(feedWS(Array(bad.prefix(6 + 3)), pieces: [7, 1, 1]) == [], "valid so far")
        let good = Self.frame(1, Array("x€yz😀!".utf8))
        for cut in 6..<(good.count - 1) {
            #expect(feedWS(good, pieces: [cut, 1, 2]) == [.text(Array("x€yz😀!".utf8))], "split at \(cut)")
        }
        let late = Self.frame(1, Array("abc".utf8) + [0xED, 0xA0, 0x80] + Array("def".utf8))
        #expect(feedWS(Array(late.prefix(6 + 5)), pieces: [7, 1, 1, 1, 1]) == [.fail(1007)], "found byte by byte")
    }

    @Test func stopsWhenEmitSaysSo() {
        let stream = Self.frame(1, Array("a".utf8)) + Self.frame(1, Array("b".utf8))
        var input = FrameInput(framing: .webSocket)
        var scratch = ByteBuffer()
        var seen = 0
        let rest = stream.withUnsafeBytes { b in
            Array(WebSocketFrames.feed(&input, WebSocketSession(), b, maxMessage: 100, scratch: &scratch) { _ in
                seen += 1
                return false
            })
        }
        #expect(seen == 1 && rest == Self.frame(1, Array("b".utf8)))
    }

    @Test func serverHeaders() {
        for (n, size) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (1 << 24, 10)] {
            var h = [UInt8](repeating: 0, count: 10)
            let written = h.withUnsafeMutableBytes { WebSocketFrames.writeHeader(opcode: 1, count: n, to: $0.baseAddress!) }
            #expect(written == size && WebSocketFrames.headerSize(n) == size)
            #expect(h[0] == 0x81 && h[1] & 0x80 == 0, "FIN, text, unmasked")
            let parsed = h.withUnsafeBytes { WebSocketFrames.header(UnsafeRawBufferPointer(rebasing: $0[..<written])) }
            #expect(parsed?.length == UInt64(n))
        }
    }

    @Test func utf8MatchesSwiftsDecoder() {
        let samples: [[UInt8]] = [
            [], Array("plain ascii, long enough for the 8-byte path".utf8), Array("ü€😀".utf8),
            [0xC3], [0xC3, 0x28], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xED, 0x9F, 0xBF],
            [0xF4, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF], [0xF5, 0x80, 0x80, 0x80], [0x80],
            [0xC1, 0xBF], [0xC2, 0x80], Array("abcdefgh".utf8) + [0xFF] + Array("ijklmnop".utf8),
        ]
        for s in samples {
            let swift = String(validating: s, as: UTF8.self) != nil
            #expect(s.withUnsafeBytes { UTF8Validation.isValid($0) } == swift, "\(s)")
        }
        // Every 2-byte sequence, and every 3-byte one starting E0/ED/EF, agrees with Swift's decoder.
        var disagree: [[UInt8]] = []
        for a in 0x80...0xFF {
            for b in 0...0xFF {
                let s: [UInt8] = [UInt8(a), UInt8(b)]
                if s.withUnsafeBytes({ UTF8Validation.isValid($0) }) != (String(validating: s, as: UTF8.self) != nil) { disagree.append(s) }
            }
        }
        for a: UInt8 in [0xE0, 0xED, 0xEF, 0xF0, 0xF4] {
            for b in 0x70...0xC5 {
                for c in [0x30, 0x80, 0xBF, 0xC0] {
                    let s: [UInt8] = [a, UInt8(b), UInt8(c)] + (a >= 0xF0 ? [0x80] : [])
                    if s.withUnsafeBytes({ UTF8Validation.isValid($0) }) != (String(validating: s, as: UTF8.self) != nil) { disagree.append(s) }
                }
            }
        }
        #expect(disagree.isEmpty, "\(disagree.prefix(10))")
    }
}
