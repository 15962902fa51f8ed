// --ws (tcpserver only): subscribers and publishers speak WebSocket on /ws instead of JSON
// lines. The upgrade request and the first frames go out in one write (the server handles
// frames that arrive with the request head). Client frames are masked with the all-zero key,
// which RFC 6455 allows: the server still unmasks every byte, but the frame bytes equal the
// JSON, so the publish stamp can be patched in place as for the other wires, and deliveries
// (unmasked server frames) are found by the same stamp scan.

enum WebSocketWire {
    static func upgradeRequest(host: String, port: Int) -> [UInt8] {
        Array(("GET /ws HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").utf8)
    }

    /// Each "\n"-terminated JSON line of `lines` as one masked text frame (zero key).
    static func frames(fromLines lines: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for line in lines.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            let n = line.count
            out.append(0x81)
            if n < 126 {
                out.append(0x80 | UInt8(n))
            } else if n < 65536 {
                out += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
            } else {
                out.append(0x80 | 127)
                for i in (0..<8).reversed() { out.append(UInt8((n >> (i * 8)) & 0xFF)) }
            }
            out += [0, 0, 0, 0]
            out += line
        }
        return out
    }

    /// What a client sends to set up: the upgrade, then `lines` as frames.
    static func setup(_ o: Options, port: Int, lines: [UInt8]) -> [UInt8] {
        upgradeRequest(host: o.host, port: port) + frames(fromLines: lines)
    }
}
