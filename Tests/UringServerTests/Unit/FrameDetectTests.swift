// FrameSplitter.detect (Protocol/Framing.swift) without sockets: the verdict for a prefix
// (JSON lines, binary, HTTP, not ok, or still undetermined) must not depend on how the prefix
// arrived, and detect followed by feed must hand out the same frames at every split. The stream
// helpers (Event, split, bytewise, utf8, binaryFrame, body) are in FrameSplitterTests.swift.

import Testing
@testable import UringServer

// MARK: Detect

/// What the reactor does with the first chunks of a connection: `detect` while undetermined,
/// skip what it consumed, then feed the rest (JSON lines, binary) or stop (HTTP: the bytes are
/// in `partialInput`). Returns nil when `detect` says not ok, with the chunk index where it did.
private struct Driven {
    var rejectedAtChunk: Int?
    var framing: UringServer.Framing
    var events: [Event]
    var input: [UInt8]
}

private func drive(_ chunks: [[UInt8]], maxFrame: Int = 1024) -> Driven {
    var input = FrameInput()
    var events: [Event] = []
    for (n, chunk) in chunks.enumerated() {
        var rejected = false
        chunk.withUnsafeBytes { p in
            var rest = p
            if input.framing == .undetermined {
                let (ok, used) = FrameSplitter.detect(&input, rest)
                if !ok { rejected = true; return }
                #expect(used >= 0 && used <= rest.count)
                rest = UnsafeRawBufferPointer(rebasing: rest[used...])
                if input.framing == .undetermined { return }
            }
            if input.framing == .http {
                if rest.count > 0 { input.partialInput.append(rest) }   // handleHTTP
                return
            }
            _ = FrameSplitter.feed(&input, rest, maxFrame: maxFrame) { events.append(Event($0)); return true }
        }
        if rejected {
            return Driven(rejectedAtChunk: n, framing: input.framing, events: events, input: [])
        }
    }
    return Driven(rejectedAtChunk: nil, framing: input.framing, events: events,
                  input: Array(input.partialInput.readable))
}

/// One detect call on a fresh connection.
private func detectOnce(_ bytes: [UInt8]) -> (ok: Bool, consumed: Int, framing: UringServer.Framing, sniffing: Bool) {
    var input = FrameInput()
    let (ok, used) = bytes.withUnsafeBytes { FrameSplitter.detect(&input, $0) }
    return (ok, used, input.framing, input.isSniffingRequestLine)
}

@Suite("FrameSplitter.detect")
struct FrameDetectTests {
    @Test("'{' is JSON lines and '\\0' binary; leading whitespace is skipped; the first frame byte is not consumed")
    func braceAndZero() {
        for (prefix, n) in [("", 0), (" ", 1), ("\r\n", 2), ("\t \n\r ", 5)] {
            let j = detectOnce(utf8(prefix + "{\"a\":1}\n"))
            #expect(j.ok && j.framing == .jsonLines && j.consumed == n && !j.sniffing, "\(prefix.debugDescription)")
            let b = detectOnce(utf8(prefix) + [0, 0, 0, 1, 0])
            #expect(b.ok && b.framing == .binary && b.consumed == n && !b.sniffing, "\(prefix.debugDescription)")
        }
    }

    @Test("whitespace only: ok, still undetermined, nothing held")
    func whitespaceOnly() {
        for s in [" ", "\r\n", "\n\n\t  \r"] {
            var input = FrameInput()
            let (ok, used) = utf8(s).withUnsafeBytes { FrameSplitter.detect(&input, $0) }
            #expect(ok && used == s.utf8.count && input.framing == .undetermined, "\(s.debugDescription)")
            let held = input.hasPartialInput, sniffing = input.isSniffingRequestLine   // #expect would copy the (noncopyable) FrameInput
            #expect(!held && !sniffing)
        }
        let empty = detectOnce([])
        #expect(empty.ok && empty.consumed == 0 && empty.framing == .undetermined)
    }

    @Test("a first byte that is not whitespace, '{', 0 or a letter is not ok")
    func otherFirstBytes() {
        for first: UInt8 in [UInt8(ascii: "["), UInt8(ascii: "\""), UInt8(ascii: "1"), UInt8(ascii: "/"),
                             UInt8(ascii: "}"), 1, 0x16, 0x7f, 0xc3, 0xff] {
            let r = detectOnce([first, UInt8(ascii: "{")])
            #expect(!r.ok, "first byte \(first)")
            #expect(r.framing == .undetermined)
            let w = detectOnce(utf8("  ") + [first])
            #expect(!w.ok, "first byte \(first) after spaces")
        }
    }

    @Test("a known method decides HTTP as soon as the byte after it (SP, CR or LF) is in")
    func knownMethods() {
        for m in RequestLine.knownMethods.sorted() {
            for sep in [" ", "\r", "\n"] {
                let r = detectOnce(utf8(m + sep))
                #expect(r.ok && r.framing == .http, "\(m)\(sep.debugDescription)")
                #expect(r.consumed == m.utf8.count + 1)
            }
            // The method alone may still grow into another token.
            let partial = detectOnce(utf8(m))
            #expect(partial.ok && partial.framing == .undetermined && partial.sniffing, "\(m) alone")
        }
        // Even when the rest is malformed (the HTTP parser answers 400): the client means HTTP.
        #expect(detectOnce(utf8("GET garbage\n")).framing == .http)
        // Case-sensitive: "get " is not decided at once.
        let lower = detectOnce(utf8("get "))
        #expect(lower.ok && lower.framing == .undetermined && lower.sniffing)
    }

    /// For every prefix of `line`, fed one byte at a time and split in two at every byte, the
    /// connection is undecided (ok, sniffing) before `decidedAt` bytes and decided (http, or
    /// not ok when `http` is false) from `decidedAt` on.
    private func checkDecidedAt(_ line: [UInt8], _ decidedAt: Int, http: Bool,
                                sourceLocation: SourceLocation = #_sourceLocation) {
        // Byte at a time on one connection.
        var input = FrameInput()
        for i in 0..<line.count {
            let (ok, used) = [line[i]].withUnsafeBytes { FrameSplitter.detect(&input, $0) }
            if i + 1 < decidedAt {
                #expect(ok && used == 1 && input.framing == .undetermined && input.isSniffingRequestLine,
                        "byte \(i) of \(String(decoding: line, as: UTF8.self).debugDescription): still undecided",
                        sourceLocation: sourceLocation)
            } else {
                if http {
                    #expect(ok && input.framing == .http, "byte \(i): HTTP", sourceLocation: sourceLocation)
                    #expect(Array(input.partialInput.readable) == Array(line[...i]), "input holds the line so far",
                            sourceLocation: sourceLocation)
                } else {
                    #expect(!ok, "byte \(i): not ok", sourceLocation: sourceLocation)
                }
                break
            }
        }
        // Two chunks at every split.
        for k in 0...line.count {
            let d = drive(split(line, at: k))
            if line.count < decidedAt {
                #expect(d.rejectedAtChunk == nil && d.framing == .undetermined, sourceLocation: sourceLocation)
            } else if http {
                #expect(d.rejectedAtChunk == nil && d.framing == .http && d.input == line, "split at \(k)",
                        sourceLocation: sourceLocation)
            } else {
                #expect(d.rejectedAtChunk == (k >= decidedAt ? 0 : 1), "split at \(k)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test("known methods: HTTP at the byte after the method, at every split, and input keeps every byte")
    func knownMethodEverySplit() {
        let req = utf8("GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        checkDecidedAt(req, 4, http: true)
        checkDecidedAt(utf8("OPTIONS * HTTP/1.1\r\n"), 8, http: true)
        checkDecidedAt(utf8("DELETE\r\n"), 7, http: true)
    }

    @Test("other tokens: HTTP only once the whole request line (SP target SP HTTP/d.d [CR] LF) is in")
    func unknownTokenEverySplit() {
        for line in ["FOO /x HTTP/1.1\r\n", "get / HTTP/1.0\n", "M-SEARCH * HTTP/1.1\r\n",
                     "GETS /a?b=c HTTP/2.0\n", "x http://h/p HTTP/9.9\r\n", "BREW /pot\u{e9} HTTP/1.1\n"] {
            let b = utf8(line)
            checkDecidedAt(b, b.count, http: true)
        }
    }

    @Test("lines that cannot be request lines are not ok at the byte that rules them out, at every split")
    func notRequestLines() {
        // (line, number of bytes after which it is no longer a possible request line)
        let cases: [(String, Int)] = [
            ("hello world\n", 12),             // LF where " HTTP/" should be
            ("hello{", 6),                      // not a tchar, not SP
            ("GETS/ HTTP/1.1\n", 5),            // token then "/" instead of SP
            ("FOO  / HTTP/1.1\n", 5),           // empty target
            ("FOO / HTTX/1.1\n", 10),
            ("FOO / HTTP/x.1\n", 12),
            ("FOO / HTTP/1.1 \n", 15),          // SP after the version
            ("FOO / HTTP/1.1\r\r", 16),
            ("FOO /\u{7f} HTTP/1.1\n", 6),      // DEL in the target
            ("FOO\t/ HTTP/1.1\n", 4),
            ("foo\r\n", 4),                     // a bare unknown token line
            ("quit\n", 5),
        ]
        for (line, at) in cases {
            checkDecidedAt(utf8(line), at, http: false)
        }
    }

    @Test("a request line still unfinished past 8 KiB is HTTP (the parser answers 431)")
    func longRequestLine() {
        let token = [UInt8](repeating: UInt8(ascii: "A"), count: HTTPRequest.maxHeaderBytes)
        let atLimit = detectOnce(token)
        #expect(atLimit.ok && atLimit.framing == .undetermined && atLimit.sniffing)
        let over = detectOnce(token + [UInt8(ascii: "A")])
        #expect(over.ok && over.framing == .http)
        let target = utf8("FOO /") + [UInt8](repeating: UInt8(ascii: "a"), count: HTTPRequest.maxHeaderBytes)
        #expect(detectOnce(target).framing == .http)
        #expect(detectOnce(Array(target.prefix(HTTPRequest.maxHeaderBytes))).framing == .undetermined)
    }

    @Test("leading whitespace then JSON lines or binary frames, split at every byte: detect + feed gives the frames")
    func detectThenFeedEverySplit() {
        let lines = utf8("\r\n  \n{\"a\":1}\r\n\n{\"b\":2}\n")
        let lineEvents: [Event] = [.frame(utf8("{\"a\":1}")), .frame(utf8("{\"b\":2}"))]
        let a = body(codec: 0, 6, seed: 1), b = body(codec: 0, 2, seed: 2)
        let binary = utf8(" \n") + binaryFrame(a) + binaryFrame(b)
        for (stream, framing, expected) in [(lines, UringServer.Framing.jsonLines, lineEvents), (binary, .binary, [Event.frame(a), .frame(b)])] {
            for k in 0...stream.count {
                let d = drive(split(stream, at: k))
                #expect(d.rejectedAtChunk == nil && d.framing == framing && d.events == expected, "split at \(k)")
            }
            let d = drive(bytewise(stream))
            #expect(d.rejectedAtChunk == nil && d.framing == framing && d.events == expected, "one byte at a time")
        }
    }

    @Test("leading whitespace then an HTTP request, split at every byte: input holds the request from its first letter, and it parses")
    func detectHTTPEverySplit() {
        let request = utf8("POST /admin/kick?user=bob HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t0k\r\n\r\n")
        let stream = utf8("\r\n ") + request
        var chunkings = (0...stream.count).map { split(stream, at: $0) }
        chunkings.append(bytewise(stream))
        for (n, chunks) in chunkings.enumerated() {
            let d = drive(chunks)
            #expect(d.rejectedAtChunk == nil && d.framing == .http && d.input == request, "chunking \(n)")
            let parsed = d.input.withUnsafeBytes { HTTPRequest.parse($0) }
            guard case .request(let r) = parsed else { Issue.record("chunking \(n): \(parsed)"); continue }
            #expect(r.method == "POST" && r.path == "/admin/kick" && r.authorization == "Bearer t0k")
        }
    }
}
