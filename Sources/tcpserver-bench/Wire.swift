/// The three servers the load tool can drive, each with its own subscribe/publish wire format.
enum Wire: String {
    case tcpserver, redis, nats

    /// Bytes a subscriber sends to join `room` (and, for tcpserver, to say hello first).
    /// `compress` (tcpserver only): the codec asked for in the hello ("lz4", "zstd"); the server
    /// then answers in binary frames from the message after the welcome on.
    func subscribe(user: String, room: String, compress: String? = nil) -> [UInt8] {
        switch self {
        case .tcpserver:
            let ask = compress.map { ",\"compress\":\"\($0)\"" } ?? ""
            return Array("{\"type\":\"hello\",\"user\":\"\(user)\"\(ask)}\n{\"type\":\"join_room\",\"room\":\"\(room)\"}\n".utf8)
        case .redis:
            return Array("*2\r\n$9\r\nSUBSCRIBE\r\n$\(room.utf8.count)\r\n\(room)\r\n".utf8)
        case .nats:
            return Array("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB \(room) 1\r\nPING\r\n".utf8)
        }
    }

    /// Bytes a publisher sends once before publishing.
    func publisherSetup(user: String, room: String) -> [UInt8] {
        switch self {
        case .tcpserver: return subscribe(user: user, room: room)
        case .redis: return []
        case .nats: return Array("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n".utf8)
        }
    }

    /// A substring that appears once the subscription is in place.
    var subscribedMarker: [UInt8] {
        switch self {
        case .tcpserver: return Array("\"joined\"".utf8)
        case .redis: return Array("subscribe".utf8)
        case .nats: return Array("PONG".utf8)
        }
    }

    /// One publish of `payload` to `room`.
    func publish(room: String, payload: String) -> [UInt8] {
        switch self {
        case .tcpserver:
            return Array("{\"type\":\"send_chat\",\"room\":\"\(room)\",\"text\":\"\(payload)\"}\n".utf8)
        case .redis:
            return Array("*3\r\n$7\r\nPUBLISH\r\n$\(room.utf8.count)\r\n\(room)\r\n$\(payload.utf8.count)\r\n\(payload)\r\n".utf8)
        case .nats:
            return Array("PUB \(room) \(payload.utf8.count)\r\n\(payload)\r\n".utf8)
        }
    }

    /// The byte pattern that starts each delivered message in a subscriber's stream; counting
    /// its occurrences counts deliveries without parsing.
    var deliveryMarker: [UInt8] {
        switch self {
        case .tcpserver: return Array("{\"type\":\"chat\"".utf8)
        case .redis: return Array("$7\r\nmessage\r\n".utf8)
        case .nats: return Array("MSG ".utf8)
        }
    }

    var ping: [UInt8] {
        switch self {
        case .tcpserver: return Array("{\"type\":\"ping\"}\n".utf8)
        case .redis: return Array("*1\r\n$4\r\nPING\r\n".utf8)
        case .nats: return Array("PING\r\n".utf8)
        }
    }

    var pong: [UInt8] {
        switch self {
        case .tcpserver: return Array("\"pong\"".utf8)
        case .redis: return Array("+PONG\r\n".utf8)
        case .nats: return Array("PONG\r\n".utf8)
        }
    }

    var hello: [UInt8] {
        switch self {
        case .tcpserver: return Array("{\"type\":\"hello\",\"user\":\"pinger\"}\n".utf8)
        case .redis: return []
        case .nats: return Array("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n".utf8)
        }
    }
}

/// Counts occurrences of `pattern` across chunk boundaries (a streaming matcher).
struct PatternCounter {
    let pattern: [UInt8]
    var matched = 0   // bytes of `pattern` matched at the end of the previous chunk

    init(_ p: [UInt8]) { pattern = p }

    mutating func count(_ buf: UnsafeRawBufferPointer) -> Int {
        var n = 0
        let first = pattern[0]
        let len = pattern.count
        var i = 0
        // Finish a match that straddled the previous chunk.
        while matched > 0 && i < buf.count {
            if buf[i] == pattern[matched] {
                matched += 1
                i += 1
                if matched == len { n += 1; matched = 0 }
            } else {
                matched = 0
                i = 0 // restart scanning this chunk from its beginning
                break
            }
        }
        let count = buf.count
        while i < count {
            guard let base = buf.baseAddress,
                  let hit = memchrOffset(base + i, first, count - i) else { break }
            var j = i + hit
            var k = 0
            while k < len && j < count && buf[j] == pattern[k] { j += 1; k += 1 }
            if k == len { n += 1; i = j }
            else if j == count { matched = k; break }
            else { i = i + hit + 1 }
        }
        return n
    }
}

/// Publish timestamps travel inside the payload text: `@T` then 19 decimal digits (CLOCK_MONOTONIC
/// nanoseconds, zero-padded), then filler. The three wires copy the payload bytes unchanged and
/// none of their framing contains `@T`, so a subscriber finds one stamp per delivered message.
enum Stamp {
    static let prefix: [UInt8] = Array("@T".utf8)
    static let digits = 19
    static var length: Int { prefix.count + digits }

    /// A payload of `size` bytes (at least `length`) with a zero stamp to be patched in place.
    /// The filler is 'x' repeated, or with `text` English-like words (compressible about as much
    /// as chat text: lz4 ~1.8x, zstd ~3x at 4 KiB), so compressed fan-out has realistic work.
    static func payload(size: Int, text: Bool = false) -> String {
        let fill = max(0, size - length)
        return "@T" + String(repeating: "0", count: digits) + (text ? englishText(fill) : String(repeating: "x", count: fill))
    }

    /// `count` bytes of words drawn (deterministically) from a 30-word vocabulary, separated by
    /// spaces and the odd ". ". Letters, spaces and dots only: safe inside a JSON string, and no
    /// "@T" (which would read as a stamp).
    static func englishText(_ count: Int) -> String {
        let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "server",
                     "message", "room", "user", "joined", "left", "hello", "world", "chat", "and",
                     "a", "to", "of", "is", "in", "that", "it", "with", "for", "on", "was", "as"]
        var rng: UInt64 = 42
        func next() -> UInt64 { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng }
        var out: [UInt8] = []
        out.reserveCapacity(count + 16)
        while out.count < count {
            out += Array(words[Int(next() % UInt64(words.count))].utf8)
            out.append(next() % 12 == 0 ? UInt8(ascii: ".") : UInt8(ascii: " "))
        }
        return String(decoding: out.prefix(count), as: UTF8.self)
    }

    /// Writes `value` as 19 zero-padded digits at `offset`.
    @inline(__always)
    static func write(_ value: UInt64, into buf: UnsafeMutableRawBufferPointer, at offset: Int) {
        var v = value
        var i = offset + digits - 1
        while i >= offset {
            buf[i] = UInt8(48 + v % 10)
            v /= 10
            i -= 1
        }
    }
}

/// Finds stamps in a subscriber's byte stream, across chunk boundaries; each stamp is one
/// delivery, and `now - stamp` its publish→deliver latency.
struct StampScanner {
    private var state = 0       // 0 searching for '@', 1 saw '@', 2 reading digits
    private var digitsRead = 0
    private var value: UInt64 = 0

    /// The value of 8 ASCII digits at `p`, and whether they all were digits (SWAR, as in
    /// Lemire's "parse_eight_digits_unrolled").
    @inline(__always)
    static func eightDigits(_ p: UnsafeRawPointer) -> (UInt64, Bool) {
        let raw = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        let ok = ((raw &+ 0x4646_4646_4646_4646) | (raw &- 0x3030_3030_3030_3030)) & 0x8080_8080_8080_8080 == 0
        var v = raw &- 0x3030_3030_3030_3030
        v = v &* 10 &+ (v >> 8)
        let mask: UInt64 = 0x0000_00FF_0000_00FF
        v = (((v & mask) &* 0x000F_4240_0000_0064) &+ (((v >> 16) & mask) &* 0x0000_2710_0000_0001)) >> 32
        return (v & 0xFFFF_FFFF, ok)
    }

    /// Calls `found` with each complete stamp value in `buf`; returns how many there were.
    @inline(__always)
    mutating func scan(_ buf: UnsafeRawBufferPointer, _ found: (UInt64) -> Void) -> Int {
        var n = 0
        var i = 0
        let count = buf.count
        guard let base = buf.baseAddress else { return 0 }
        while i < count {
            switch state {
            case 0:
                guard let hit = memchrOffset(base + i, 64 /* @ */, count - i) else { return n }
                i += hit + 1
                state = 1
            case 1:
                if buf[i] != 84 /* T */ { state = 0; continue }
                i += 1
                // Fast path: the whole stamp is in this buffer (almost always): parse the 19
                // digits straight through (the state machine below costs ~2 ns per digit; the
                // tool parses every delivery and shares the CPUs with the server it measures).
                if count - i >= Stamp.digits {
                    // 19 digits = 8 + 8 (SWAR, 8 digits per multiply chain) + 3.
                    let p = base + i
                    let (a, okA) = Self.eightDigits(p)
                    let (b, okB) = Self.eightDigits(p + 8)
                    var v = a &* 100_000_000 &+ b
                    var ok = okA && okB
                    for k in 16..<Stamp.digits {
                        let d = p.load(fromByteOffset: k, as: UInt8.self) &- 48
                        ok = ok && d <= 9
                        v = v &* 10 &+ UInt64(d)
                    }
                    state = 0
                    if ok {
                        i += Stamp.digits
                        found(v)
                        n += 1
                    }
                    continue
                }
                state = 2; digitsRead = 0; value = 0
            default:
                let d = buf[i] &- 48
                if d > 9 { state = 0; continue }
                value = value &* 10 &+ UInt64(d)
                digitsRead += 1
                i += 1
                if digitsRead == Stamp.digits {
                    found(value)
                    n += 1
                    state = 0
                }
            }
        }
        return n
    }
}
