/// A parsed HTTP/1.x request head: what the routes need and nothing more.
struct HTTPRequest {
    var method: String
    var path: String
    var query: [(String, String)]
    var authorization: String?

    static let maxHeaderBytes = 8192

    enum ParseResult {
        case incomplete
        case request(HTTPRequest)
        case error(status: Int, reason: StaticString, message: String)
    }

    static func parse(_ b: UnsafeRawBufferPointer) -> ParseResult {
        guard let end = headerEnd(b) else {
            if b.count > maxHeaderBytes {
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
        guard parts.count == 3, parts[2].starts(with: "HTTP/1.".utf8), parts[1].first == UInt8(ascii: "/") else {
            return .error(status: 400, reason: "Bad Request", message: "malformed request line")
        }
        let target = String(decoding: parts[1], as: UTF8.self)
        var path = Substring(target)
        var query: [(String, String)] = []
        if let q = target.firstIndex(of: "?") {
            path = target[..<q]
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append((String(kv[0]), kv.count > 1 ? String(kv[1]) : ""))
            }
        }
        var auth: String?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
            if name == "authorization" {
                auth = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingSpaces()
            }
        }
        return .request(HTTPRequest(method: String(decoding: parts[0], as: UTF8.self), path: String(path),
                                    query: query, authorization: auth))
    }

    private static func headerEnd(_ b: UnsafeRawBufferPointer) -> Int? {
        guard b.count >= 2 else { return nil }
        var i = 0
        while i + 1 < b.count {
            if b[i] == 10 && b[i + 1] == 10 { return i }
            if b[i] == 13 && i + 3 < b.count && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }
}
