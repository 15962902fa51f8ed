import Optimizers

/// The HTTP side of the port (told apart by the first bytes): one request per connection,
/// answered and closed. Later issues add /stats, /metrics and /dashboard here.
enum HTTPResponder {
    static let maxHeaderBytes = 8192

    enum Outcome {
        case needMore
        case respond(status: Int, reason: StaticString, body: String, contentType: StaticString, headOnly: Bool)
    }

    /// Looks at the request accumulated so far.
    static func handle(_ request: UnsafeRawBufferPointer) -> Outcome {
        guard let end = headerEnd(request) else {
            if request.count > maxHeaderBytes {
                return .respond(status: 431, reason: "Request Header Fields Too Large",
                                body: "request header too large\n", contentType: "text/plain", headOnly: false)
            }
            return .needMore
        }
        let head = UnsafeRawBufferPointer(rebasing: request[..<end])
        // Request line: METHOD SP TARGET SP VERSION
        let lineEnd = head.firstIndex(of: UInt8(ascii: "\r")) ?? head.count
        let parts = head[..<lineEnd].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].starts(with: "HTTP/1.".utf8) else {
            return .respond(status: 400, reason: "Bad Request", body: "malformed request line\n",
                            contentType: "text/plain", headOnly: false)
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        var target = Substring(String(decoding: parts[1], as: UTF8.self))
        if let q = target.firstIndex(of: "?") { target = target[..<q] }
        let isHead = method == "HEAD"
        guard method == "GET" || isHead else {
            return .respond(status: 405, reason: "Method Not Allowed", body: "method not allowed\n",
                            contentType: "text/plain", headOnly: false)
        }
        switch target {
        case "/health":
            return .respond(status: 200, reason: "OK", body: "ok", contentType: "text/plain", headOnly: isHead)
        default:
            return .respond(status: 404, reason: "Not Found", body: "not found\n", contentType: "text/plain", headOnly: isHead)
        }
    }

    private static func headerEnd(_ b: UnsafeRawBufferPointer) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 {
            return i
        }
        // Accept bare-LF clients too.
        for i in 0..<(b.count - 1) where b[i] == 10 && b[i + 1] == 10 { return i }
        return nil
    }

    static func render(_ out: inout ByteBuffer, status: Int, reason: StaticString, body: String,
                       contentType: StaticString, headOnly: Bool) {
        out.append("HTTP/1.1 ")
        out.appendDecimal(status)
        out.append(" ")
        out.append(reason)
        out.append("\r\nContent-Type: ")
        out.append(contentType)
        out.append("\r\nContent-Length: ")
        out.appendDecimal(body.utf8.count)
        out.append("\r\nConnection: close\r\n\r\n")
        if !headOnly { out.append(contentsOf: body) }
    }
}
