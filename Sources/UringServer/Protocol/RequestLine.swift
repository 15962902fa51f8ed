/// Tells whether a connection's first line is an HTTP request line, for framing detection.
///
/// JSON lines start with `{` and binary frames with a 0 byte, so any connection whose first
/// byte is a letter is a candidate. Deciding on the first letter alone (as the server once did
/// for G/H/P/D/O) answered `TRACE`, `CONNECT`, `get` or `FOO` requests with a JSON-lines
/// `bad_frame`; an HTTP client must get an HTTP answer. So the first line is buffered until it
/// is HTTP or cannot be any more:
///
/// - a known method (RFC 9110 plus PATCH, case-sensitive) followed by SP, CR or LF is HTTP at
///   once: the client means HTTP even if the rest is malformed (the parser answers 400);
/// - any other token is HTTP only once the whole line has the shape
///   `token SP target SP HTTP/d.d [CR] LF` (token: RFC 9110 tchar; target: visible bytes);
/// - a line still shaped like a request line past `HTTPRequest.maxHeaderBytes` is HTTP too
///   (the parser answers 431);
/// - anything else is not HTTP (the caller answers the JSON-lines `bad_frame`).
///
/// Each call re-reads the buffered prefix: it is at most 8 KiB, almost always arrives in one
/// receive, and a client dribbling it byte by byte is cut by `http_header_timeout_ms`.
enum RequestLine {
    enum Verdict { case http, notHTTP, undecided }

    /// Methods this server recognizes (it serves GET, HEAD and POST; the others get 405 with
    /// `Allow`). Anything else, lower-case spellings included, gets 501.
    static let knownMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
                                            "OPTIONS", "TRACE", "PATCH"]

    /// `b` starts at the first non-whitespace byte of the connection, a letter.
    static func classify(_ b: UnsafeRawBufferPointer) -> Verdict {
        let n = b.count
        var i = 0
        while i < n && isTchar(b[i]) { i += 1 }
        if i == n { return n > HTTPRequest.maxHeaderBytes ? .http : .undecided }
        let sep = b[i]
        if sep == 32 || sep == 13 || sep == 10, isKnownMethod(UnsafeRawBufferPointer(rebasing: b[..<i])) {
            return .http
        }
        guard sep == 32, i > 0 else { return .notHTTP }
        i += 1
        // target: one or more visible bytes (non-ASCII included: sloppy clients send raw UTF-8)
        let targetStart = i
        while i < n && (b[i] > 32 && b[i] != 127) { i += 1 }
        if i == n { return n > HTTPRequest.maxHeaderBytes ? .http : .undecided }
        guard b[i] == 32, i > targetStart else { return .notHTTP }
        i += 1
        // "HTTP/" DIGIT "." DIGIT, then an optional CR and the LF
        let version: [UInt8] = [72, 84, 84, 80, 47, 0, 46, 0]   // H T T P / d . d
        for k in 0..<version.count {
            if i == n { return .undecided }
            let ok = version[k] == 0 ? (b[i] >= 48 && b[i] <= 57) : b[i] == version[k]
            guard ok else { return .notHTTP }
            i += 1
        }
        if i == n { return .undecided }
        if b[i] == 13 {
            i += 1
            if i == n { return .undecided }
        }
        return b[i] == 10 ? .http : .notHTTP
    }

    /// RFC 9110 §5.6.2 tchar: `!#$%&'*+-.^_`|~`, digits and letters.
    @inline(__always)
    static func isTchar(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: return true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: return true
        default: return false
        }
    }

    private static func isKnownMethod(_ token: UnsafeRawBufferPointer) -> Bool {
        // Longest known method is 7 bytes: skip building a String for anything longer.
        token.count >= 3 && token.count <= 7 && knownMethods.contains(String(decoding: token, as: UTF8.self))
    }
}
