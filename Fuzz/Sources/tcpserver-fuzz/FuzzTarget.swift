// libFuzzer entry point: frame scanner, JSON codec and protocol dispatch.
//
// Input layout: byte 0 is a control byte, the rest is the byte stream.
//   bits 0-1  connections: 0 → 1, 1 → 2, 2 → 3, 3 → 1
//   bits 2-4  chunk size for each feed: 0 → the whole segment, k → 2^(k-1) bytes (1…64)
//   bits 5-6  disconnects: 0 none (all at the end), 1 the last connection after half the
//             segments, 2 connection 0 after half the segments and a fresh one in its place,
//             3 after every third segment the segment's connection, replaced
//   bit  7    segments: 0 → split after each "\n", 1 → split at 0xFF bytes (dropped), so
//             binary frames can be routed; segment i goes to connection i % count
//
// Checks (any failure is a crash):
//   - FrameScanner SIMD scans agree with byte-at-a-time references at many offsets;
//   - JSONReader.parse on the raw stream: when it succeeds, every field's ranges are in bounds
//     and quoted, `escaped` flags match the bytes, unescaped strings never grow, unescaped text
//     equals the raw bytes, numbers agree with Int(String), re-encoding a decoded string with
//     appendJSONString and re-parsing gives the same string;
//   - ProtocolHarness: every output chunk is whole messages in the connection's framing, and
//     each message parses with JSONReader and has a string "type" (after a `101` on /ws: whole
//     unmasked WebSocket frames, text frames holding such messages, a close frame last with a
//     code the server may send); after every connection is gone, no connection is left open.

import Primitives
import UringServer
import UringServerTesting

// One harness for the whole run: a ProtocolHarness is never freed (ServerShared.reactors and
// Reactor.shared reference each other), so one per input would leak memory and an eventfd.
// Every input ends with all its connections closed, so inputs do not see each other's state.
nonisolated(unsafe) let harness = ProtocolHarness()

// SwiftPM links every executable with `--defsym main=<module>_main` (so tests can link
// executables), which hides libFuzzer's own `main`. So the entry point is ours (@main, hence
// -parse-as-library) and hands control to libFuzzer's driver with the same arguments.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@main
struct FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let rc = LLVMFuzzerRunDriver(&argc, &argv, fuzz)
        exitProcess(rc)
    }
}

@_silgen_name("exit")
func exitProcess(_ code: CInt) -> Never

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    let raw = UnsafeRawBufferPointer(input)
    checkScanners(raw)
    checkJSON(raw)
    if size > 0 {
        driveHarness(control: input[0], Array(input[1...]))
    }
    return 0
}

@inline(never)
func fail(_ what: String) -> Never {
    fatalError("fuzz invariant violated: \(what)")
}

// MARK: FrameScanner

func checkScanners(_ raw: UnsafeRawBufferPointer) {
    guard let base = raw.baseAddress else { return }
    // Every start offset inside the first 40 bytes (all vector alignments and tail splits) and
    // a few near the end, over at most the first 512 bytes (the scans are O(n) per start), then
    // the whole input once from 0.
    let n = min(raw.count, 512)
    var needles: [UInt8] = [0x0A, 0x00, 0x22, 0xFF]
    if n > 0 { needles.append(raw[0]); needles.append(raw[n - 1]) }
    var starts = Array(0...min(n, 40))
    if n > 40 { starts += [n - 33, n - 32, n - 17, n - 16, n - 1, n] }
    for from in starts where from <= n {
        for b in needles {
            let simd = FrameScanner.firstIndex(of: b, base: base, from: from, to: n)
            var ref: Int? = nil
            for i in from..<n where raw[i] == b { ref = i; break }
            if simd != ref { fail("firstIndex(of: \(b)) from \(from): simd \(String(describing: simd)) scalar \(String(describing: ref))") }
        }
        let sp = FrameScanner.firstJSONStringSpecial(base: base, from: from, to: n)
        var spRef: Int? = nil
        for i in from..<n {
            let c = raw[i]
            if c < 0x20 || c >= 0x80 || c == 0x22 || c == 0x5C { spRef = i; break }
        }
        if sp != spRef { fail("firstJSONStringSpecial from \(from): \(String(describing: sp)) vs \(String(describing: spRef))") }
        let esc = FrameScanner.firstJSONEscapeNeeded(base: base, from: from, to: n)
        var escRef: Int? = nil
        for i in from..<n {
            let c = raw[i]
            if c < 0x20 || c == 0x22 || c == 0x5C { escRef = i; break }
        }
        if esc != escRef { fail("firstJSONEscapeNeeded from \(from): \(String(describing: esc)) vs \(String(describing: escRef))") }
    }
    for b in needles + [0x0A, 0x7B] where FrameScanner.firstIndex(of: b, in: raw) != FrameScanner.firstIndexScalar(of: b, in: raw) {
        fail("firstIndex(of:in:) vs firstIndexScalar for \(b)")
    }
    var anySpecial = false
    for c in raw where c < 0x20 || c >= 0x80 || c == 0x22 || c == 0x5C { anySpecial = true; break }
    if FrameScanner.needsJSONEscapeOrValidation(raw) != anySpecial { fail("needsJSONEscapeOrValidation") }
}

// MARK: JSON codec

func checkJSON(_ raw: UnsafeRawBufferPointer) {
    var table = JSONFieldTable()
    do {
        try JSONReader.parse(raw, into: &table)
    } catch {
        // Errors must carry offsets inside the input.
        switch error {
        case .syntax(let at), .invalidUTF8(let at):
            if at < 0 || at > raw.count { fail("error offset \(at) outside 0...\(raw.count)") }
        default: break
        }
        return
    }
    checkTable(table, raw, depth: 0)
}

func checkTable(_ table: JSONFieldTable, _ raw: UnsafeRawBufferPointer, depth: Int) {
    let n = raw.count
    if table.count < 0 || table.count > JSONFieldTable.capacity { fail("field count \(table.count)") }
    for i in 0..<table.count {
        let f = table[i]
        guard f.keyStart >= 1, f.keyStart <= f.keyEnd, f.keyEnd < n,
              raw[f.keyStart - 1] == 0x22, raw[f.keyEnd] == 0x22 else {
            fail("field \(i): key range \(f.keyStart)..<\(f.keyEnd) in \(n) bytes")
        }
        guard f.valueStart >= 0, f.valueStart <= f.valueEnd, f.valueEnd <= n else {
            fail("field \(i): value range \(f.valueStart)..<\(f.valueEnd) in \(n) bytes")
        }
        if f.keyEscaped != contains(raw, f.keyStart, f.keyEnd, 0x5C) { fail("field \(i): keyEscaped flag") }
        let text = Array(raw[f.valueStart..<f.valueEnd])
        switch f.kind {
        case .string:
            guard f.valueStart >= 1, f.valueEnd < n, raw[f.valueStart - 1] == 0x22, raw[f.valueEnd] == 0x22 else {
                fail("field \(i): string not quoted")
            }
            if f.valueEscaped != text.contains(0x5C) { fail("field \(i): valueEscaped flag") }
            let s = JSONReader.string(f, in: raw)
            let u = Array(s.utf8)
            if !f.valueEscaped && u != text { fail("field \(i): unescaped string differs from its bytes") }
            if u.count > text.count { fail("field \(i): unescaping grew \(text.count) → \(u.count)") }
            if f.valueEscaped && u.count >= text.count { fail("field \(i): escaped string did not shrink") }
            roundTrip(s)
        case .number:
            let literal = String(decoding: text, as: UTF8.self)
            let expected = Int(literal)
            if JSONReader.int(f, in: raw) != expected {
                fail("field \(i): int(\(literal)) = \(String(describing: JSONReader.int(f, in: raw))), Int() = \(String(describing: expected))")
            }
            if text.isEmpty { fail("field \(i): empty number") }
        case .bool:
            let t = String(decoding: text, as: UTF8.self)
            guard t == "true" || t == "false", JSONReader.bool(f, in: raw) == (t == "true") else { fail("field \(i): bool \(t)") }
        case .null:
            if String(decoding: text, as: UTF8.self) != "null" { fail("field \(i): null token") }
        case .object:
            guard text.first == UInt8(ascii: "{"), text.last == UInt8(ascii: "}") else { fail("field \(i): object brackets") }
            // A nested object is itself a valid object (unless it has > 16 fields or is
            // deeper than the reader allows from the top).
            if depth < 2 {
                text.withUnsafeBytes { sub in
                    var t = JSONFieldTable()
                    do throws(JSONError) { try JSONReader.parse(sub, into: &t) } catch {
                        if case .tooManyFields = error { return }
                        fail("field \(i): nested object does not parse on its own: \(error)")
                    }
                    checkTable(t, sub, depth: depth + 1)
                }
            }
        case .array:
            guard text.first == UInt8(ascii: "["), text.last == UInt8(ascii: "]") else { fail("field \(i): array brackets") }
        }
        // Key: decoding must work and round-trip too.
        let keyField = JSONField(keyStart: f.keyStart, keyEnd: f.keyEnd, keyEscaped: false,
                                 valueStart: f.keyStart, valueEnd: f.keyEnd, kind: .string,
                                 valueEscaped: f.keyEscaped)
        roundTrip(JSONReader.string(keyField, in: raw))
    }
}

func contains(_ raw: UnsafeRawBufferPointer, _ from: Int, _ to: Int, _ b: UInt8) -> Bool {
    var i = from
    while i < to { if raw[i] == b { return true }; i += 1 }
    return false
}

/// appendJSONString(s) then parse: one string field whose decoded value is s again.
func roundTrip(_ s: String) {
    var b = ByteBuffer()
    b.append(StaticString("{\"k\":"))
    b.appendJSONString(s)
    b.append(StaticString("}"))
    var t = JSONFieldTable()
    do {
        try JSONReader.parse(b.readable, into: &t)
    } catch {
        fail("re-encoded string does not parse (\(error)): \(Array(b.readable))")
    }
    guard t.count == 1, t[0].kind == .string else { fail("re-encoded string: wrong table") }
    let back = JSONReader.string(t[0], in: b.readable)
    if back != s || Array(back.utf8) != Array(s.utf8) { fail("round trip changed \(Array(s.utf8)) → \(Array(back.utf8))") }
    var raw = ByteBuffer()
    raw.appendJSONString(bytes: UnsafeRawBufferPointer(start: nil, count: 0))
    if Array(raw.readable) != [0x22, 0x22] { fail("empty string encoding") }
}

// MARK: protocol harness

enum Framing { case undetermined, sniffing, json, binary, http, webSocket, rejected }

struct Client {
    var id: Int
    var framing = Framing.undetermined
    /// From the first letter on, while `sniffing`: what the server buffers to decide.
    var firstLine: [UInt8] = []
    var gone = false
    /// The server sent its WebSocket close frame: nothing may follow it.
    var closeFrameSeen = false
}

func driveHarness(control: UInt8, _ body: [UInt8]) {
    let h = harness
    let base = h.openConnections
    let count = [1, 2, 3, 1][Int(control & 3)]
    let chunkSel = Int((control >> 2) & 7)
    let chunk = chunkSel == 0 ? Int.max : 1 << (chunkSel - 1)
    let policy = (control >> 5) & 3
    let splitFF = control & 0x80 != 0

    // Segments.
    var segments: [ArraySlice<UInt8>] = []
    var start = 0
    for i in 0..<body.count {
        if splitFF {
            if body[i] == 0xFF { segments.append(body[start..<i]); start = i + 1 }
        } else if body[i] == 0x0A {
            segments.append(body[start...i]); start = i + 1
        }
    }
    if start < body.count { segments.append(body[start...]) }

    var clients: [Client] = []
    // Harness ids are reactor slots: once the server closes a connection its slot is free and
    // the next connect() gets the same id (and isClosed(id) stays true for the new one, as
    // MemoryBackend never forgets a closed slot). So a client whose id comes back from
    // connect() was closed by the server.
    func connect() -> Client {
        let id = h.connect()
        for j in clients.indices where clients[j].id == id { clients[j].gone = true }
        _ = h.takeOutput(id)   // nothing is sent on accept, but stay in sync
        return Client(id: id)
    }
    for _ in 0..<count { clients.append(connect()) }

    func disconnect(_ k: Int, replace: Bool) {
        guard !clients[k].gone else { return }
        h.disconnect(clients[k].id)
        for j in clients.indices where !clients[j].gone { check(&clients[j], h.takeOutput(clients[j].id)) }
        clients[k].gone = true
        if replace {
            let c = connect()
            clients[k] = c
        }
    }

    for (si, seg) in segments.enumerated() {
        let k = si % clients.count
        if !clients[k].gone {
            var off = seg.startIndex
            while off < seg.endIndex {
                let end = seg.endIndex - off > chunk ? off + chunk : seg.endIndex
                let piece = Array(seg[off..<end])
                noteFraming(&clients[k], piece)
                h.feed(clients[k].id, piece)
                for j in clients.indices where !clients[j].gone { check(&clients[j], h.takeOutput(clients[j].id)) }
                off = end
            }
        }
        let half = si == segments.count / 2
        switch policy {
        case 1 where half: disconnect(clients.count - 1, replace: false)
        case 2 where half: disconnect(0, replace: true)
        case 3 where si % 3 == 2: disconnect(k, replace: true)
        default: break
        }
    }
    for k in clients.indices { disconnect(k, replace: false) }
    if h.openConnections != base {
        fail("\(h.openConnections) connections open after every client left (was \(base))")
    }
}

/// Follows the server's framing detection for the bytes fed so far.
func noteFraming(_ c: inout Client, _ bytes: [UInt8]) {
    if c.framing == .sniffing {
        c.firstLine += bytes
        c.framing = requestLineVerdict(c.firstLine) ?? .sniffing
        return
    }
    guard c.framing == .undetermined else { return }
    for (i, b) in bytes.enumerated() {
        switch b {
        case 32, 9, 10, 13: continue
        case UInt8(ascii: "{"): c.framing = .json
        case 0: c.framing = .binary
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"):
            c.firstLine = Array(bytes[i...])
            c.framing = requestLineVerdict(c.firstLine) ?? .sniffing
        default: c.framing = .rejected
        }
        return
    }
}

/// The server's request-line rule (RequestLine.classify, docs/protocol.md), restated over
/// arrays: .http, .rejected, or nil while undecided.
func requestLineVerdict(_ b: [UInt8]) -> Framing? {
    let known: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
    let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
    let token = b.prefix { tchar.contains($0) }
    if token.count == b.count { return b.count > 8192 ? .http : nil }
    let sep = b[token.count]
    if sep == 32 || sep == 13 || sep == 10, known.contains(String(decoding: token, as: UTF8.self)) { return .http }
    guard sep == 32 else { return .rejected }
    let rest = b[(token.count + 1)...]
    let target = rest.prefix { $0 > 32 && $0 != 127 }
    if target.count == rest.count { return b.count > 8192 ? .http : nil }
    guard !target.isEmpty, rest[target.endIndex] == 32 else { return .rejected }
    let tail = Array(rest[(target.endIndex + 1)...])
    let pattern = Array("HTTP/0.0".utf8)   // 0: any digit
    for k in 0..<min(tail.count, pattern.count) {
        let isDigit = tail[k] >= 48 && tail[k] <= 57
        if pattern[k] == 48 ? !isDigit : tail[k] != pattern[k] { return .rejected }
    }
    if tail.count <= pattern.count { return nil }
    switch tail[pattern.count] {
    case 10: return .http
    case 13: return tail.count == pattern.count + 1 ? nil : (tail[pattern.count + 1] == 10 ? .http : .rejected)
    default: return .rejected
    }
}

/// One takeOutput: whole messages in the connection's framing, each a JSON object with a type.
func check(_ c: inout Client, _ out: [UInt8]) {
    if out.isEmpty { return }
    switch c.framing {
    case .sniffing:
        fail("output while the first line was still undecided: \(out.prefix(60))")
    case .http:
        let head = Array("HTTP/1.1 ".utf8)
        if !out.starts(with: head) { fail("HTTP connection got \(out.prefix(40))") }
        if out.starts(with: Array("HTTP/1.1 101 ".utf8)) {
            c.framing = .webSocket
            guard let end = findSubsequence(out, Array("\r\n\r\n".utf8)) else { fail("101 without the end of its head") }
            checkWebSocket(&c, out[(end + 4)...])
        }
    case .webSocket:
        checkWebSocket(&c, out[...])
    case .json, .rejected, .undetermined:
        guard out.last == 0x0A else { fail("JSON-lines output does not end with a newline: \(out.suffix(60))") }
        var start = 0
        for i in 0..<out.count where out[i] == 0x0A {
            checkMessage(out[start..<i])
            start = i + 1
        }
    case .binary:
        var i = 0
        while i < out.count {
            guard out.count - i >= 5 else { fail("binary output: truncated frame header") }
            let n = Int(out[i]) << 24 | Int(out[i + 1]) << 16 | Int(out[i + 2]) << 8 | Int(out[i + 3])
            guard n >= 1, out.count - i - 4 >= n else { fail("binary output: frame length \(n), \(out.count - i - 4) bytes left") }
            let codec = out[i + 4]
            if codec == 0 {
                checkMessage(out[(i + 5)..<(i + 4 + n)])
            } else if codec > 2 {
                fail("binary output: codec \(codec)")
            }
            i += 4 + n
        }
    }
}

/// Server frames: unmasked, FIN, RSV clear, a known opcode, whole; text frames hold one
/// message; a close frame carries a code the server may send and is the last frame.
func checkWebSocket(_ c: inout Client, _ out: ArraySlice<UInt8>) {
    var i = out.startIndex
    while i < out.endIndex {
        if c.closeFrameSeen { fail("WebSocket output after the close frame") }
        guard out.endIndex - i >= 2 else { fail("WebSocket output: truncated frame header") }
        let b0 = out[i], b1 = out[i + 1]
        if b0 & 0xF0 != 0x80 { fail("WebSocket output: FIN/RSV byte \(b0)") }
        if b1 & 0x80 != 0 { fail("WebSocket output: masked server frame") }
        var n = Int(b1 & 0x7F), h = 2
        if n == 126 {
            guard out.endIndex - i >= 4 else { fail("WebSocket output: truncated 16-bit length") }
            n = Int(out[i + 2]) << 8 | Int(out[i + 3]); h = 4
        } else if n == 127 {
            guard out.endIndex - i >= 10 else { fail("WebSocket output: truncated 64-bit length") }
            n = 0
            for k in 2..<10 { n = n << 8 | Int(out[i + k]) }
            h = 10
        }
        guard out.endIndex - i - h >= n else { fail("WebSocket output: frame of \(n) bytes, \(out.endIndex - i - h) left") }
        let payload = out[(i + h)..<(i + h + n)]
        switch b0 & 0x0F {
        case 1: checkMessage(payload)
        case 8:
            c.closeFrameSeen = true
            if n == 1 || n > 125 { fail("WebSocket close frame of \(n) bytes") }
            if n >= 2 {
                let code = Int(payload[payload.startIndex]) << 8 | Int(payload[payload.startIndex + 1])
                if ![1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011].contains(code) { fail("WebSocket close code \(code)") }
            }
        case 9, 10: if n > 125 { fail("WebSocket control frame of \(n) bytes") }
        default: fail("WebSocket output: opcode \(b0 & 0x0F)")
        }
        i += h + n
    }
}

func findSubsequence(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
    guard needle.count <= hay.count else { return nil }
    for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle {
        return i
    }
    return nil
}

func checkMessage(_ m: ArraySlice<UInt8>) {
    if m.isEmpty { fail("empty output message") }
    Array(m).withUnsafeBytes { raw in
        var t = JSONFieldTable()
        do { try JSONReader.parse(raw, into: &t) } catch {
            fail("server output is not valid JSON (\(error)): \(String(decoding: raw, as: UTF8.self))")
        }
        guard let type = t.find("type", in: raw), type.kind == .string else {
            fail("server output without a string type: \(String(decoding: raw, as: UTF8.self))")
        }
        checkTable(t, raw, depth: 1)
    }
}
