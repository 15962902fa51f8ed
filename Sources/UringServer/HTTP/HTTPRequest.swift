/// A parsed HTTP/1.x request head: what the routes need and nothing more.
struct HTTPRequest {
    var method: String
    /// The path of an origin-form or absolute-form target (RFC 9112 §3.2.1, §3.2.2); `*` for
    /// asterisk-form and the authority for authority-form (neither names a route here).
    var path: String
    var query: [(String, String)]
    var authorization: String?
    /// HTTP/1.minor.
    var minor = 1
    /// Bytes of the head, blank line included (what follows is the body, or WebSocket frames).
    var headLength = 0
    /// The headers a WebSocket upgrade is judged by (nil: absent). A repeated
    /// Sec-WebSocket-Key is a bad handshake (`keyCount`).
    var host: String?
    var upgrade: String?
    var connection: String?
    var webSocketKey: String?
    var webSocketKeyCount = 0
    var webSocketVersion: String?
    var origin: String?

    static let maxHeaderBytes = 8192

    enum ParseResult {
        case incomplete
        case request(HTTPRequest)
        case error(status: Int, reason: StaticString, message: String)
    }

    static func parse(_ b: UnsafeRawBufferPointer) -> ParseResult {
        guard let (end, after) = headerEnd(b) else {
            // Judged by where the head could still end: the bytes at the tail that may begin
            // the blank line do not count, so the verdict is the same however the head is split
            // across receives (the whole head is judged by `end` below).
            if b.count - terminatorStart(b) > maxHeaderBytes {
                return .error(status: 431, reason: "Request Header Fields Too Large", message: "request header over 8 KiB")
            }
            return .incomplete
        }
        if end > maxHeaderBytes {
            return .error(status: 431, reason: "Request Header Fields Too Large", message: "request header over 8 KiB")
        }
        let lines = b[..<end].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { line -> Slice<UnsafeRawBufferPointer> in
                line.last == UInt8(ascii: "\r") ? line.dropLast() : line
            }
        guard let requestLine = lines.first else {
            return .error(status: 400, reason: "Bad Request", message: "empty request")
        }
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(RequestLine.isTchar), !parts[1].isEmpty,
              let minor = version(parts[2]) else {
            return .error(status: 400, reason: "Bad Request", message: "malformed request line")
        }
        guard minor >= 0 else {
            return .error(status: 505, reason: "HTTP Version Not Supported", message: "this server speaks HTTP/1.x")
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        guard let target = requestTarget(String(decoding: parts[1], as: UTF8.self), method: method) else {
            return .error(status: 400, reason: "Bad Request", message: "malformed request target")
        }
        var path = Substring(target)
        var query: [(String, String)] = []
        if let q = target.firstIndex(of: "?") {
            path = target[..<q]
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append((String(kv[0]), kv.count > 1 ? String(kv[1]) : ""))
            }
        }
        var req = HTTPRequest(method: method, path: String(path), query: query, authorization: nil)
        req.minor = minor
        req.headLength = after
        var hosts = 0
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
            let value = { String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingSpaces() }
            switch name {
            case "authorization": req.authorization = value()
            case "host": hosts += 1; req.host = value()
            case "upgrade": req.upgrade = value()
            case "connection": req.connection = value()
            case "sec-websocket-key": req.webSocketKeyCount += 1; req.webSocketKey = value()
            case "sec-websocket-version": req.webSocketVersion = value()
            case "origin": req.origin = value()
            default: break
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with two, gets 400
        // (HTTP/1.0 predates Host and may omit it).
        if hosts > 1 || (hosts == 0 && minor >= 1) {
            return .error(status: 400, reason: "Bad Request",
                          message: hosts > 1 ? "more than one Host header" : "HTTP/1.1 request without a Host header")
        }
        return .request(req)
    }

    /// `HTTP/d.d` → the minor version for HTTP/1.x, -1 for another major version, nil when
    /// malformed.
    private static func version(_ v: Slice<UnsafeRawBufferPointer>) -> Int? {
        let a = Array(v)
        guard a.count == 8, a[..<5].elementsEqual("HTTP/".utf8), a[6] == UInt8(ascii: "."),
              (48...57).contains(a[5]), (48...57).contains(a[7]) else { return nil }
        return a[5] == UInt8(ascii: "1") ? Int(a[7] - 48) : -1
    }

    /// The target as origin-form (`/path?query`). Absolute-form (`http://host:port/path?query`)
    /// must be accepted by servers (RFC 9112 §3.2.2): the path is taken from it, `/` when it
    /// has none. Authority-form (CONNECT) and `*` (OPTIONS) come back as they are; the router
    /// answers them with 405. So does any target of a method the server does not know, which
    /// gets 501 whatever its target. Anything else is nil (400).
    private static func requestTarget(_ t: String, method: String) -> String? {
        if t.hasPrefix("/") || !RequestLine.knownMethods.contains(method) { return t }
        if t == "*" && method == "OPTIONS" { return t }
        if method == "CONNECT" { return t.contains("/") ? nil : t }
        let lower = t.lowercased()
        for scheme in ["http://", "https://"] where lower.hasPrefix(scheme) {
            let rest = t.dropFirst(scheme.count)
            guard let cut = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) else {
                return rest.isEmpty ? nil : "/"
            }
            guard cut > rest.startIndex else { return nil }   // no authority
            return rest[cut] == "/" ? String(rest[cut...]) : "/" + rest[cut...]
        }
        return nil
    }

    /// How many bytes at the end of `b` could be the start of the head's terminator
    /// ("\r\n\r\n" or "\n\n"): 0 to 3.
    private static func terminatorStart(_ b: UnsafeRawBufferPointer) -> Int {
        let n = b.count
        func ends(_ tail: [UInt8]) -> Bool { n >= tail.count && b[(n - tail.count)...].elementsEqual(tail) }
        if ends([13, 10, 13]) { return 3 }
        if ends([13, 10]) { return 2 }
        if ends([13]) || ends([10]) { return 1 }
        return 0
    }

    /// Where the head ends (the blank line's start) and where what follows it begins.
    private static func headerEnd(_ b: UnsafeRawBufferPointer) -> (Int, Int)? {
        guard b.count >= 2 else { return nil }
        var i = 0
        while i + 1 < b.count {
            if b[i] == 10 && b[i + 1] == 10 { return (i, i + 2) }
            if b[i] == 13 && i + 3 < b.count && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return (i, i + 4) }
            i += 1
        }
        return nil
    }
}
