import Glibc
import Histogram
import LoadClient
import Primitives

// tcpserver's binary frames, as a subscriber that asked for compression receives them:
// `[u32 BE N][u8 codec][N-1 bytes payload]`; codec 0 raw JSON, 1 LZ4 `[u32 BE size][block]`,
// 2 one Zstd frame with its content size set (docs/protocol.md, "Compression").

/// Splits a subscriber's byte stream into binary frames, across chunk boundaries. Keeps the first
/// `headBytes` of every payload (enough for the `{"type":"chat"` prefix, the LZ4 size field and a
/// Zstd frame header), and the whole payload only when `wantBody` says so.
struct FrameReader {
    static let headBytes = 18
    private var header = [UInt8](repeating: 0, count: 5)
    private var headerFill = 0
    private var left = 0
    private var codec: UInt8 = 0
    private var wireBytes = 0
    private var collect = false
    var head: [UInt8] = []
    var body: [UInt8] = []

    init() {
        head.reserveCapacity(Self.headBytes)
    }

    /// Calls `frame(codec, bytes on the wire incl. the 5-byte header, whole payload collected?)`
    /// for every frame completed in `buf`, with `head` and (if collected, else empty) `body` of its payload.
    mutating func feed(_ buf: UnsafeRawBufferPointer, wantBody: (UInt8) -> Bool,
                       frame: (UInt8, Int, Bool, [UInt8], [UInt8]) -> Void) {
        var i = 0
        let n = buf.count
        while i < n {
            if headerFill < 5 {
                let take = min(5 - headerFill, n - i)
                for k in 0..<take { header[headerFill + k] = buf[i + k] }
                headerFill += take
                i += take
                if headerFill < 5 { break }
                let len = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
                if len == 0 { die("server sent a binary frame of length 0") }
                codec = header[4]
                left = len - 1
                wireBytes = 4 + len
                collect = wantBody(codec)
                head.removeAll(keepingCapacity: true)
                body.removeAll(keepingCapacity: true)
                if left == 0 {
                    frame(codec, wireBytes, collect, head, body)
                    headerFill = 0
                }
                continue
            }
            let take = min(left, n - i)
            if head.count < Self.headBytes {
                let h = min(Self.headBytes - head.count, take)
                head.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[i..<(i + h)]))
            }
            if collect { body.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[i..<(i + take)])) }
            i += take
            left -= take
            if left == 0 {
                frame(codec, wireBytes, collect, head, body)
                headerFill = 0
            }
        }
    }
}

/// The uncompressed size a compressed payload declares: LZ4's u32 BE prefix, or a Zstd frame
/// header's content-size field. Nil when it cannot be read from `head`.
func declaredSize(codec: UInt8, head: [UInt8]) -> Int? {
    switch codec {
    case 1:
        guard head.count >= 4 else { return nil }
        return Int(head[0]) << 24 | Int(head[1]) << 16 | Int(head[2]) << 8 | Int(head[3])
    case 2:
        // Magic (4, LE 0xFD2FB528), descriptor (1), window (0/1), dictionary id (0/1/2/4),
        // content size (0/1/2/4/8, little-endian; the 2-byte form is offset by 256).
        guard head.count >= 6, head[0] == 0x28, head[1] == 0xB5, head[2] == 0x2F, head[3] == 0xFD else { return nil }
        let fhd = head[4]
        let single = (fhd >> 5) & 1 == 1
        var pos = 5 + (single ? 0 : 1) + [0, 1, 2, 4][Int(fhd & 3)]
        let fcsSize = [single ? 1 : 0, 2, 4, 8][Int(fhd >> 6)]
        guard fcsSize > 0, pos + fcsSize <= head.count else { return nil }
        var v = 0
        for k in 0..<fcsSize { v |= Int(head[pos + k]) << (8 * k) }
        pos += fcsSize
        return fcsSize == 2 ? v + 256 : v
    default:
        return nil
    }
}

let chatPrefix: [UInt8] = Array("{\"type\":\"chat\"".utf8)

func startsWith(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
    guard bytes.count >= prefix.count else { return false }
    for k in 0..<prefix.count where bytes[k] != prefix[k] { return false }
    return true
}

/// Set-up for a subscriber that asked for compression: reads the welcome (a JSON line, or a frame)
/// and checks the codec was granted, then frames until the `joined` reply. Returns the bytes read
/// past the `joined` frame (the start of the stream the FrameReader continues with).
func awaitJoinedBinary(_ fd: Int32, codec: String, timeoutMs: Int32 = 10000) -> [UInt8] {
    var acc: [UInt8] = []
    var pos = 0
    var buf = [UInt8](repeating: 0, count: 65536)
    var welcomed = false
    let granted = Array("\"compress\":\"\(codec)\"".utf8)
    func contains(_ hay: ArraySlice<UInt8>, _ needle: [UInt8]) -> Bool {
        findSubsequence(Array(hay), needle) != nil
    }
    while true {
        // Parse whatever is complete.
        while pos < acc.count {
            let item: ArraySlice<UInt8>
            if acc[pos] == 0 {
                // A binary frame.
                guard acc.count - pos >= 5 else { break }
                let len = Int(acc[pos]) << 24 | Int(acc[pos + 1]) << 16 | Int(acc[pos + 2]) << 8 | Int(acc[pos + 3])
                guard len >= 1, acc.count - pos >= 4 + len else { break }
                if acc[pos + 4] != 0 { die("set-up: compressed frame (codec \(acc[pos + 4])) before the join reply") }
                item = acc[(pos + 5)..<(pos + 4 + len)]
                pos += 4 + len
            } else {
                guard let nl = acc[pos...].firstIndex(of: 0x0A) else { break }
                item = acc[pos..<nl]
                pos = nl + 1
            }
            if contains(item, Array("\"welcome\"".utf8)) {
                if !contains(item, granted) {
                    die("server did not grant compress=\(codec): \(String(decoding: item, as: UTF8.self))")
                }
                welcomed = true
            } else if contains(item, Array("\"error\"".utf8)) {
                die("set-up: \(String(decoding: item, as: UTF8.self))")
            } else if contains(item, Array("\"joined\"".utf8)) {
                if !welcomed { die("set-up: joined before welcome") }
                return Array(acc[pos...])
            }
        }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, timeoutMs) <= 0 { die("timed out waiting for subscription confirmation") }
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { die("connection closed during set-up") }
        acc += buf[0..<n]
    }
}

/// Counts a compressed-mode subscriber's deliveries. Every chat frame is counted from its header
/// (cheap); codec-0 frames are checked for the `{"type":"chat"` prefix (presence notices and
/// other small messages are not deliveries), and compressed ones are decompressed and checked
/// for the first `verifyFirst` per subscriber and every `verifyEvery`-th after that, which also
/// gives the latency samples (the stamp is inside the compressed payload).
final class CompressedStats {
    var ctx = CompressionContext()
    var out = ByteBuffer()
    var rawFrames = 0          // chat frames sent as codec 0
    var compressedFrames = 0   // codec 1 or 2
    var otherFrames = 0        // codec-0 frames that are not chats
    var wireBytes = 0          // chat frames, 5-byte header included
    var rawBytes = 0           // their JSON, uncompressed
    var verified = 0
    var verifyFailed = 0
    var undeclared = 0         // compressed frames whose size could not be read from the header
    var codecsSeen = Set<UInt8>()
    let verifyFirst = 3
    let verifyEvery = 32

    /// Decompresses one payload and checks it is a chat of the declared size. Returns nil when
    /// the check failed, else the stamp it carries (inner nil if it has none).
    func verify(codec: UInt8, payload: [UInt8], declared: Int?) -> UInt64?? {
        guard let c = CompressionCodec(rawValue: codec) else { verifyFailed += 1; return nil }
        out.removeAll()
        var failed = false
        payload.withUnsafeBytes { b in
            do {
                try ctx.decompress(c, b, maxOutput: 16 << 20, into: &out)
            } catch {
                failed = true
            }
        }
        let json = out.readable
        guard !failed, startsWith(json, chatPrefix), declared == json.count else {
            verifyFailed += 1
            return nil
        }
        verified += 1
        var scanner = StampScanner()
        var stamp: UInt64? = nil
        _ = scanner.scan(json) { stamp = $0 }
        return .some(stamp)
    }
}

/// Compressed mode: parses `chunk` as binary frames for one subscriber and returns the chat
/// deliveries it completed (see CompressedStats). Stamps found in verified (decompressed) or
/// raw chat frames go to `hist`.
func consumeFrames(_ cs: CompressedStats, _ reader: inout FrameReader, _ verifiedHere: inout Int,
                   _ chunk: UnsafeRawBufferPointer, now t: UInt64, hist: inout Histogram<UInt64>) -> Int {
    var got = 0
    reader.feed(chunk, wantBody: { codec in
        if codec == 0 { return true }
        return verifiedHere < cs.verifyFirst || (cs.compressedFrames + 1) % cs.verifyEvery == 0
    }) { codec, wire, collected, head, body in
        func record(_ json: UnsafeRawBufferPointer) {
            var scanner = StampScanner()
            _ = scanner.scan(json) { stamp in hist.record(t > stamp ? t - stamp : 0) }
        }
        if codec == 0 {
            let isChat = body.withUnsafeBytes { startsWith($0, chatPrefix) }
            guard isChat else { cs.otherFrames += 1; return }
            got += 1
            cs.rawFrames += 1
            cs.wireBytes += wire
            cs.rawBytes += body.count
            body.withUnsafeBytes { record($0) }
            return
        }
        // A compressed frame: only chats are ever large enough to be compressed.
        got += 1
        cs.compressedFrames += 1
        cs.codecsSeen.insert(codec)
        cs.wireBytes += wire
        if let n = declaredSize(codec: codec, head: head) { cs.rawBytes += n } else { cs.undeclared += 1 }
        guard collected else { return }
        if let stamp = cs.verify(codec: codec, payload: body, declared: declaredSize(codec: codec, head: head)) {
            verifiedHere += 1
            if let stamp { hist.record(t > stamp ? t - stamp : 0) }
        }
    }
    return got
}
