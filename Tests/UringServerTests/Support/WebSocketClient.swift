// A minimal RFC 6455 client for the WebSocket tests, over `TestClient`'s socket: the opening
// handshake, masked frames out (any opcode, FIN or not, and deliberately broken ones), frames
// in (checked: server frames are never masked), JSON messages in text frames.

import Foundation

struct WSFrame {
    var fin: Bool
    var opcode: UInt8
    var payload: [UInt8]
    var text: String { String(decoding: payload, as: UTF8.self) }
    /// A close frame's code (1005 when it carried none).
    var closeCode: Int { payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 1005 }
}

final class WSClient: @unchecked Sendable {
    let tcp: TestClient
    /// The handshake's status line and headers (lower-cased names).
    private(set) var status = ""
    private(set) var headers: [String: String] = [:]

    static let sampleKey = "dGhlIHNhbXBsZSBub25jZQ=="

    /// Connects and performs the handshake; throws unless the answer is 101.
    init(port: Int, key: String = WSClient.sampleKey, origin: String? = nil, extraHeaders: String = "") throws {
        tcp = try TestClient(port: port)
        try handshake(port: port, key: key, origin: origin, extraHeaders: extraHeaders)
        guard status.hasPrefix("HTTP/1.1 101") else {
            throw ClientError.protocolViolation("handshake answered \(status)")
        }
    }

    /// Connects and sends the handshake without requiring 101 (for the refusal tests).
    init(port: Int, rawHandshake: String) throws {
        tcp = try TestClient(port: port)
        try tcp.send(rawHandshake)
        try readHead()
    }

    static func request(port: Int, key: String = sampleKey, origin: String? = nil, version: String = "13",
                        extraHeaders: String = "") -> String {
        var r = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        r += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: \(version)\r\n"
        if let origin { r += "Origin: \(origin)\r\n" }
        return r + extraHeaders + "\r\n"
    }

    private func handshake(port: Int, key: String, origin: String?, extraHeaders: String) throws {
        try tcp.send(Self.request(port: port, key: key, origin: origin, extraHeaders: extraHeaders))
        try readHead()
    }

    private func readHead() throws {
        status = try tcp.readLine()
        while true {
            let l = try tcp.readLine()
            if l.isEmpty { break }
            if let colon = l.firstIndex(of: ":") {
                headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
    }

    /// The bytes of one client frame: masked (unless `masked` is false), FIN unless told not,
    /// with the 16- or 64-bit length form as the payload needs (or `forcedLength`, announced
    /// without sending that many bytes).
    static func encode(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true,
                       rsv: UInt8 = 0, forcedLength: UInt64? = nil) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
        let m: UInt8 = masked ? 0x80 : 0
        let n = forcedLength ?? UInt64(payload.count)
        if n < 126 {
            out.append(m | UInt8(n))
        } else if n < 65536 {
            out += [m | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            out.append(m | 127)
            for i in (0..<8).reversed() { out.append(UInt8((n >> (UInt64(i) * 8)) & 0xFF)) }
        }
        if !masked { return out + payload }
        let key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        out += key
        for (i, b) in payload.enumerated() { out.append(b ^ key[i & 3]) }
        return out
    }

    func sendFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, masked: Bool = true, rsv: UInt8 = 0) throws {
        try tcp.send(Self.encode(opcode, payload, fin: fin, masked: masked, rsv: rsv))
    }

    func sendText(_ s: String) throws { try sendFrame(1, Array(s.utf8)) }
    func send(_ pairs: KeyValuePairs<String, Any>) throws { try sendText(J.obj(pairs)) }

    func readFrame(timeout t: Double? = nil) throws -> WSFrame {
        let h = try tcp.readExactly(2, timeout: t, what: "a WebSocket frame header")
        guard h[1] & 0x80 == 0 else { throw ClientError.protocolViolation("server frame is masked") }
        guard h[0] & 0x70 == 0 else { throw ClientError.protocolViolation("server frame has RSV bits set") }
        var n = Int(h[1] & 0x7F)
        if n == 126 {
            let e = try tcp.readExactly(2, timeout: t)
            n = Int(e[0]) << 8 | Int(e[1])
        } else if n == 127 {
            let e = try tcp.readExactly(8, timeout: t)
            n = e.reduce(0) { $0 << 8 | Int($1) }
        }
        let payload = try tcp.readExactly(n, timeout: t, what: "a WebSocket frame payload")
        return WSFrame(fin: h[0] & 0x80 != 0, opcode: h[0] & 0x0F, payload: payload)
    }

    /// The next JSON message (a text frame); pings are answered and skipped.
    func read(timeout t: Double? = nil) throws -> JSONObject {
        while true {
            let f = try readFrame(timeout: t)
            switch f.opcode {
            case 1: return try J.parse(f.payload)
            case 9: try sendFrame(10, f.payload)
            case 8: throw ClientError.closed("a text frame (got close \(f.closeCode) '\(f.text)')")
            default: throw ClientError.protocolViolation("unexpected opcode \(f.opcode)")
            }
        }
    }

    func read(until type: String, timeout t: Double? = nil) throws -> JSONObject {
        let deadline = Date().addingTimeInterval(t ?? tcp.timeout)
        while true {
            let m = try read(timeout: max(0, deadline.timeIntervalSinceNow))
            if m.type == type { return m }
        }
    }

    /// Reads frames until a close frame; returns it. Data frames before it are skipped.
    func readClose(timeout t: Double? = nil) throws -> WSFrame {
        while true {
            let f = try readFrame(timeout: t)
            if f.opcode == 8 { return f }
        }
    }

    /// True once the server closed the TCP connection (EOF or reset) within `t` seconds.
    func waitForEOF(timeout t: Double = 5) -> Bool {
        do {
            while true { _ = try tcp.readExactly(1, timeout: t) }
        } catch ClientError.closed, ClientError.reset {
            return true
        } catch {
            return false
        }
    }

    @discardableResult
    func hello(_ user: String) throws -> JSONObject {
        try send(["type": "hello", "user": user])
        return try read(until: "welcome")
    }

    @discardableResult
    func join(_ room: String) throws -> JSONObject {
        try send(["type": "join_room", "room": room])
        return try read(until: "joined")
    }
}
