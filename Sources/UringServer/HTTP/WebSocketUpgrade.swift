import CCrypto
import Primitives

/// The RFC 6455 opening handshake on `GET /ws` (§4.2): the request is checked, the origin
/// judged, and either `101 Switching Protocols` with `Sec-WebSocket-Accept` is written or an
/// HTTP error that says what was wrong (400 bad or missing headers, 426 + the version we speak,
/// 403 origin, 503 while draining). No subprotocol or extension is ever accepted (so no
/// permessage-deflate: frames must have RSV bits clear).
enum WebSocketUpgrade {
    static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// Base64(SHA-1(key + GUID)), through libcrypto (`CCrypto`).
    static func acceptValue(forKey key: String) -> String {
        var digest = [UInt8](repeating: 0, count: 20)
        var input = Array((key + guid).utf8)
        _ = input.withUnsafeMutableBytes { p in
            digest.withUnsafeMutableBufferPointer { ccrypto_sha1(p.baseAddress, p.count, $0.baseAddress) }
        }
        var text = [CChar](repeating: 0, count: 32)   // 4 * ceil(20 / 3) + 1 = 29
        let n = digest.withUnsafeBytes { d in
            text.withUnsafeMutableBufferPointer { ccrypto_base64_encode(d.baseAddress, d.count, $0.baseAddress) }
        }
        return String(decoding: text[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Writes the answer to `req` (a request for /ws) into `out`; true when it is the 101 and
    /// the connection now speaks WebSocket.
    static func respond(_ req: HTTPRequest, _ shared: ServerShared, _ out: inout ByteBuffer) -> Bool {
        func fail(_ status: Int, _ reason: StaticString, _ message: String, extra: StaticString? = nil) -> Bool {
            HTTPRouter.respond(&out, status, reason, "text/plain; charset=utf-8", message + "\n", extra: extra)
            return false
        }
        guard req.method == "GET" else {
            HTTPRouter.respond(&out, 405, "Method Not Allowed", "text/plain; charset=utf-8",
                               "a WebSocket handshake is a GET\n", allow: "GET")
            return false
        }
        if shared.draining.load(ordering: .relaxed) {
            return fail(503, "Service Unavailable", "draining")
        }
        guard req.minor >= 1 else { return fail(400, "Bad Request", "a WebSocket handshake needs HTTP/1.1") }
        guard hasToken(req.upgrade, "websocket") else {
            return fail(400, "Bad Request", "WebSocket handshake expected: missing 'Upgrade: websocket'")
        }
        guard hasToken(req.connection, "upgrade") else {
            return fail(400, "Bad Request", "WebSocket handshake expected: missing 'Connection: Upgrade'")
        }
        guard let version = req.webSocketVersion else {
            return fail(400, "Bad Request", "missing Sec-WebSocket-Version (this server speaks 13)")
        }
        guard version == "13" else {
            return fail(426, "Upgrade Required", "unsupported Sec-WebSocket-Version '\(version)': this server speaks 13",
                        extra: "Sec-WebSocket-Version: 13")
        }
        guard req.webSocketKeyCount == 1, let key = req.webSocketKey, isValidKey(key) else {
            return fail(400, "Bad Request", req.webSocketKeyCount > 1 ? "more than one Sec-WebSocket-Key"
                        : "Sec-WebSocket-Key must be the Base64 of 16 bytes")
        }
        if let origin = req.origin, !originAllowed(origin, host: req.host, allowed: shared.config.wsAllowedOrigins) {
            return fail(403, "Forbidden", "origin '\(origin)' may not open /ws (see ws_allowed_origins)")
        }
        out.append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
        out.append(contentsOf: acceptValue(forKey: key))
        out.append("\r\n\r\n")
        return true
    }

    /// A comma-separated header list contains `token` (case-insensitive): `Connection:
    /// keep-alive, Upgrade` is how Firefox asks.
    static func hasToken(_ header: String?, _ token: String) -> Bool {
        guard let header else { return false }
        return header.split(separator: ",").contains { String($0).trimmingSpaces().lowercased() == token }
    }

    /// 24 Base64 characters ending in "==" decode to exactly 16 bytes (§4.2.1 item 5).
    static func isValidKey(_ key: String) -> Bool {
        let b = Array(key.utf8)
        guard b.count == 24, b[22] == UInt8(ascii: "="), b[23] == UInt8(ascii: "=") else { return false }
        for c in b[..<22] {
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"): continue
            default: return false
            }
        }
        // The last data character carries 4 unused bits, which must be zero.
        return "AQgw".utf8.contains(b[21])
    }

    /// Browsers send Origin; a page elsewhere must not open a chat connection with the user's
    /// network position (cross-site WebSocket hijacking). `allowed` empty: the origin's
    /// host[:port] must equal the Host header (the page came from this server); "*": any.
    static func originAllowed(_ origin: String, host: String?, allowed: [String]) -> Bool {
        let o = origin.lowercased()
        if allowed.isEmpty {
            guard let host, let sep = o.firstRange(of: "://") else { return false }
            return o[sep.upperBound...] == host.lowercased()
        }
        return allowed.contains { $0 == "*" || $0.lowercased() == o }
    }
}
