import CHiredis
import Glibc

/// RESP command formatting, appended straight into a pipeline buffer (no per-command allocation
/// beyond the buffer's own growth). Commands are arrays of bulk strings: `*N\r\n$len\r\narg\r\n…`.
enum RESP {
    @inline(__always)
    static func appendDecimal(_ out: inout [UInt8], _ n: Int) {
        if n >= 0 && n < 10 {
            out.append(UInt8(48 + n))
            return
        }
        // Digits written in place: String(n) allocates once the number passes 15 digits (sender
        // tags are 64-bit), and this runs per chat line.
        var v = n.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes: UInt64.max has 20 digits
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[23 - count] = UInt8(48 + v % 10)
                v /= 10
                count += 1
            } while v > 0
            if n < 0 { out.append(UInt8(ascii: "-")) }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[(24 - count)...]))
        }
    }

    @inline(__always)
    static func appendArrayHeader(_ out: inout [UInt8], count: Int) {
        out.append(UInt8(ascii: "*"))
        appendDecimal(&out, count)
        out.append(13)
        out.append(10)
    }

    @inline(__always)
    static func appendBulkHeader(_ out: inout [UInt8], length: Int) {
        out.append(UInt8(ascii: "$"))
        appendDecimal(&out, length)
        out.append(13)
        out.append(10)
    }

    @inline(__always)
    static func appendCRLF(_ out: inout [UInt8]) {
        out.append(13)
        out.append(10)
    }

    static func appendBulk(_ out: inout [UInt8], _ s: String) {
        let u = s.utf8
        appendBulkHeader(&out, length: u.count)
        out.append(contentsOf: u)
        appendCRLF(&out)
    }

    static func appendCommand(_ out: inout [UInt8], _ args: [String]) {
        appendArrayHeader(&out, count: args.count)
        for a in args { appendBulk(&out, a) }
    }

    /// `PUBLISH|SPUBLISH <channelPrefix><tag>} <origin><body>` where `channelPrefix` ends
    /// with `{`, `<tag>` is the room's hash tag (ClusterSlots.tag) and `origin` is `<nodeId>\n`.
    static func appendPublish(_ out: inout [UInt8], sharded: Bool, channelPrefix: [UInt8],
                              room: UnsafeRawBufferPointer, origin: [UInt8], body: UnsafeRawBufferPointer) {
        out.append(contentsOf: sharded ? "*3\r\n$8\r\nSPUBLISH\r\n".utf8 : "*3\r\n$7\r\nPUBLISH\r\n".utf8)
        appendBulkHeader(&out, length: channelPrefix.count + ClusterSlots.tagLength(room) + 1)
        out.append(contentsOf: channelPrefix)
        ClusterSlots.forEachTagByte(room) { out.append($0) }
        out.append(UInt8(ascii: "}"))
        appendCRLF(&out)
        appendBulkHeader(&out, length: origin.count + body.count)
        out.append(contentsOf: origin)
        out.append(contentsOf: body)
        appendCRLF(&out)
    }

    /// `<prefix><tag>}` as one bulk string (`prefix` ends in `{`; the tag is the room's hash tag).
    @inline(__always)
    static func appendRoomKey(_ out: inout [UInt8], _ prefix: [UInt8], _ room: UnsafeRawBufferPointer) {
        appendBulkHeader(&out, length: prefix.count + ClusterSlots.tagLength(room) + 1)
        out.append(contentsOf: prefix)
        ClusterSlots.forEachTagByte(room) { out.append($0) }
        out.append(UInt8(ascii: "}"))
        appendCRLF(&out)
    }

    @inline(__always)
    static func appendBulk(_ out: inout [UInt8], bytes: UnsafeRawBufferPointer) {
        appendBulkHeader(&out, length: bytes.count)
        out.append(contentsOf: bytes)
        appendCRLF(&out)
    }

    @inline(__always)
    static func appendBulk(_ out: inout [UInt8], bytes: [UInt8]) {
        appendBulkHeader(&out, length: bytes.count)
        out.append(contentsOf: bytes)
        appendCRLF(&out)
    }

    @inline(__always)
    static func appendBulkDecimal(_ out: inout [UInt8], _ n: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let count = withUnsafeMutableBytes(of: &digits) { d -> Int in
            var v = UInt64(bitPattern: Int64(n)), k = 0
            var tmp: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &tmp) { t in
                repeat { t[k] = UInt8(48 + v % 10); v /= 10; k += 1 } while v > 0
                for i in 0..<k { d[i] = t[k - 1 - i] }
            }
            return k
        }
        appendBulkHeader(&out, length: count)
        withUnsafeBytes(of: &digits) { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        appendCRLF(&out)
    }

    /// The chat publish script's invocation (RedisLinkChat.swift `chatScriptSource`) for
    /// `lines` lines of one room: `EVALSHA <sha>` (or `EVAL <body>` until the script is loaded
    /// on this server) `3 meta log channel` then the ARGV up to the (sender, line) pairs,
    /// written straight into the shard's pipeline; then appendChatLine per line and
    /// appendBulkHex12 (the epoch candidate). The channel is a KEY so a cluster routes and
    /// checks it like the room's other keys.
    static func appendChatScriptHead(_ out: inout [UInt8], script: [UInt8], isSHA: Bool, keyPrefixes: ChatKeyPrefixes,
                                     sharded: Bool, room: UnsafeRawBufferPointer, nodeId: [UInt8],
                                     epoch: UnsafeRawBufferPointer, floor: Int, maxLength: Int, ttlMillis: Int,
                                     lines: Int) {
        appendArrayHeader(&out, count: 13 + 2 * lines)
        out.append(contentsOf: isSHA ? "$7\r\nEVALSHA\r\n".utf8 : "$4\r\nEVAL\r\n".utf8)
        appendBulk(&out, bytes: script)
        out.append(contentsOf: "$1\r\n3\r\n".utf8)
        appendRoomKey(&out, keyPrefixes.meta, room)
        appendRoomKey(&out, keyPrefixes.log, room)
        appendRoomKey(&out, keyPrefixes.channel, room)
        out.append(contentsOf: sharded ? "$8\r\nSPUBLISH\r\n".utf8 : "$7\r\nPUBLISH\r\n".utf8)
        appendBulk(&out, bytes: nodeId)
        appendBulk(&out, bytes: epoch)
        appendBulkDecimal(&out, floor)
        appendBulkDecimal(&out, maxLength)
        appendBulkDecimal(&out, ttlMillis)
    }

    /// One (sender tag, line) pair of a chat script call.
    static func appendChatLine(_ out: inout [UInt8], sender: UInt64, line: UnsafeRawBufferPointer) {
        appendBulkDecimal(&out, Int(bitPattern: UInt(sender)))
        appendBulk(&out, bytes: line)
    }

    /// The low 48 bits of `v` as 12 lowercase hex digits (an epoch).
    static func appendBulkHex12(_ out: inout [UInt8], _ v: UInt64) {
        out.append(contentsOf: "$12\r\n".utf8)
        for i in stride(from: 44, through: 0, by: -4) {
            let d = UInt8((v >> UInt64(i)) & 0xF)
            out.append(d < 10 ? 48 + d : 87 + d)
        }
        appendCRLF(&out)
    }

    static func hex12(_ v: UInt64) -> String {
        var out: [UInt8] = []
        appendBulkHex12(&out, v)
        return String(decoding: out[5..<17], as: UTF8.self)
    }

    /// A fixed-width integer in a record stream (native-endian, 8 bytes).
    @inline(__always)
    static func appendWord(_ out: inout [UInt8], _ v: UInt64) {
        var v = v
        withUnsafeBytes(of: &v) { out.append(contentsOf: $0) }
    }

    @inline(__always)
    static func readWord(_ buf: UnsafeRawBufferPointer, _ offset: inout Int) -> UInt64 {
        let v = buf.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        offset += 8
        return v
    }

    /// A length-prefixed record (native-endian u32 length, then the bytes): how publishes wait
    /// in the link's inbox.
    @inline(__always)
    static func appendRecord<C: Collection>(_ out: inout [UInt8], _ bytes: C) where C.Element == UInt8 {
        var n = UInt32(truncatingIfNeeded: bytes.count)
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: bytes)
    }

    /// Reads the record at `offset` in `buf`, advancing `offset` past it.
    @inline(__always)
    static func readRecord(_ buf: UnsafeRawBufferPointer, _ offset: inout Int) -> UnsafeRawBufferPointer {
        let n = Int(buf.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        let r = UnsafeRawBufferPointer(rebasing: buf[(offset + 4)..<(offset + 4 + n)])
        offset += 4 + n
        return r
    }
}

/// `P:meta:{`, `P:log:{`, `P:room:{` as bytes (RESP.appendChatScriptHead).
struct ChatKeyPrefixes {
    let meta: [UInt8]
    let log: [UInt8]
    let channel: [UInt8]
}

/// One reply (or an element of one) from hiredis' reader. Valid only until the top-level reply
/// is freed, i.e. inside the callback that hands it out.
struct RedisReply {
    let raw: OpaquePointer

    var type: Int { Int(chiredis_reply_type(raw)) }
    var isArray: Bool { type == Int(CHIREDIS_ARRAY) }
    var isError: Bool { type == Int(CHIREDIS_ERROR) }
    var isInteger: Bool { type == Int(CHIREDIS_INTEGER) }
    var isString: Bool { type == Int(CHIREDIS_STRING) || type == Int(CHIREDIS_STATUS) }
    var integer: Int { Int(chiredis_reply_integer(raw)) }
    var count: Int { Int(chiredis_reply_count(raw)) }

    /// The bytes of a string, status or error reply (empty otherwise).
    var bytes: UnsafeRawBufferPointer {
        var n = 0
        guard let p = chiredis_reply_str(raw, &n) else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: p, count: n)
    }

    var string: String { String(decoding: bytes, as: UTF8.self) }

    subscript(i: Int) -> RedisReply? {
        guard i >= 0, let e = chiredis_reply_element(raw, i) else { return nil }
        return RedisReply(raw: e)
    }

    /// Whether the string bytes equal `s` (ASCII, case-insensitive: Redis sends "pong" in
    /// subscribe mode and "PONG" otherwise).
    func `is`(_ s: StaticString) -> Bool {
        let b = bytes
        guard b.count == s.utf8CodeUnitCount else { return false }
        let p = s.utf8Start
        for i in 0..<b.count where b[i] | 0x20 != p[i] | 0x20 { return false }
        return true
    }

    func hasPrefix(_ s: StaticString) -> Bool {
        let b = bytes
        guard b.count >= s.utf8CodeUnitCount else { return false }
        return memcmp(b.baseAddress!, s.utf8Start, s.utf8CodeUnitCount) == 0
    }
}

/// hiredis' RESP reader: feed bytes in, take complete replies out.
final class RESPReader {
    private let reader: OpaquePointer?

    init() { reader = chiredis_reader_new() }
    deinit { chiredis_reader_free(reader) }

    enum Next { case reply(OpaquePointer), needMore, error(String) }

    func feed(_ p: UnsafeRawBufferPointer) -> Bool {
        guard let reader else { return false }
        return chiredis_reader_feed(reader, p.baseAddress, p.count) == 0
    }

    func next() -> Next {
        guard let reader else { return .error("out of memory") }
        var out: OpaquePointer?
        switch chiredis_reader_next(reader, &out) {
        case 1: return out.map { .reply($0) } ?? .needMore
        case 0: return .needMore
        default: return .error(String(cString: chiredis_reader_error(reader)))
        }
    }

    var error: String { reader.map { String(cString: chiredis_reader_error($0)) } ?? "out of memory" }
}
