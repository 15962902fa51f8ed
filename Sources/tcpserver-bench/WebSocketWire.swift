// --ws: subscribers and publishers speak WebSocket — tcpserver on /ws (one JSON message per
// text frame), nats-server on its websocket listener (`--port` is that listener; the NATS
// protocol bytes ride in binary frames, one frame per write). The upgrade request and the first frames go out in one write (the server handles
// frames that arrive with the request head). Client frames are masked with the all-zero key,
// which RFC 6455 allows: the server still unmasks every byte, but the frame bytes equal the
// JSON, so the publish stamp can be patched in place as for the other wires, and deliveries
// (unmasked server frames) are found by the same stamp scan.

enum WebSocketWire {
    static func upgradeRequest(host: String, port: Int, path: String) -> [UInt8] {
        Array(("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
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

    /// `bytes` as one masked binary frame (zero key).
    static func binaryFrame(_ bytes: [UInt8]) -> [UInt8] {
        let n = bytes.count
        var out: [UInt8] = [0x82]
        if n < 126 {
            out.append(0x80 | UInt8(n))
        } else if n < 65536 {
            out += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            out.append(0x80 | 127)
            for i in (0..<8).reversed() { out.append(UInt8((n >> (i * 8)) & 0xFF)) }
        }
        return out + [0, 0, 0, 0] + bytes
    }

    /// One write's bytes in the wire's WebSocket framing.
    static func wrap(_ wire: Wire, _ bytes: [UInt8]) -> [UInt8] {
        if bytes.isEmpty { return [] }
        return wire == .nats ? binaryFrame(bytes) : frames(fromLines: bytes)
    }

    /// Sends a client's set-up bytes on `fd`: as they are, or (--ws) behind the upgrade, as
    /// frames. tcpserver takes frames in the same write as the request head; nats-server drops
    /// what follows the head, so for it the 101 is awaited first.
    static func writeSetup(_ o: Options, fd: Int32, port: Int, _ bytes: [UInt8]) {
        guard o.ws else { bytes.withUnsafeBytes { writeAll(fd, $0) }; return }
        let upgrade = upgradeRequest(host: o.host, port: port, path: o.wire == .nats ? "/" : "/ws")
        if o.wire == .nats {
            upgrade.withUnsafeBytes { writeAll(fd, $0) }
            awaitMarker(fd, Array("\r\n\r\n".utf8))
            wrap(o.wire, bytes).withUnsafeBytes { writeAll(fd, $0) }
        } else {
            (upgrade + wrap(o.wire, bytes)).withUnsafeBytes { writeAll(fd, $0) }
        }
    }
}
