/// The three servers the load tool can drive, each with its own subscribe/publish wire format.
enum Wire: String {
    case tcpserver, redis, nats

    /// Bytes a subscriber sends to join `room` (and, for tcpserver, to say hello first).
    func subscribe(user: String, room: String) -> [UInt8] {
        switch self {
        case .tcpserver:
            return Array("{\"type\":\"hello\",\"user\":\"\(user)\"}\n{\"type\":\"join_room\",\"room\":\"\(room)\"}\n".utf8)
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
