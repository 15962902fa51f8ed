// HTTPRequest.parse (HTTP/HTTPRequest.swift) without sockets: heads fed whole and as every
// prefix (the reactor re-parses the accumulated input after each receive), line endings,
// request-line and target forms, the Host and version rules, and the 8 KiB head limit.

import Testing
@testable import UringServer

// MARK: Helpers

/// A ParseResult reduced to comparable values.
private enum Parsed: Equatable, CustomStringConvertible {
    case incomplete
    case request(method: String, path: String, query: [[String]], authorization: String?)
    case error(Int)

    var description: String {
        switch self {
        case .incomplete: return "incomplete"
        case let .request(m, p, q, a): return "request(\(m) \(p) \(q) auth: \(a ?? "nil"))"
        case .error(let s): return "error(\(s))"
        }
    }
}

private func parse(_ bytes: [UInt8]) -> Parsed {
    switch bytes.withUnsafeBytes({ HTTPRequest.parse($0) }) {
    case .incomplete: return .incomplete
    case .request(let r): return .request(method: r.method, path: r.path, query: r.query.map { [$0.0, $0.1] },
                                          authorization: r.authorization)
    case .error(let status, _, _): return .error(status)
    }
}

private func parse(_ s: String) -> Parsed { parse(Array(s.utf8)) }

private func status(_ s: String) -> Int? {
    if case .error(let st) = parse(s) { return st }
    return nil
}

private func path(_ s: String) -> String? {
    if case .request(_, let p, _, _) = parse(s) { return p }
    return nil
}

private func get(_ target: String, _ version: String = "HTTP/1.1", method: String = "GET") -> String {
    "\(method) \(target) \(version)\r\nHost: example.com\r\n\r\n"
}

@Suite("HTTPRequest.parse")
struct HTTPRequestTests {
    @Test("every proper prefix of a head is incomplete, the whole head is the request (CRLF, bare LF, mixed)")
    func everyPrefix() {
        let heads = [
            "GET /stats?x=1 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer abc\r\n\r\n",
            "GET /stats?x=1 HTTP/1.1\nHost: h\nAuthorization: Bearer abc\n\n",
            "GET /stats?x=1 HTTP/1.1\r\nHost: h\nAuthorization: Bearer abc\r\n\n",
        ]
        let expected = Parsed.request(method: "GET", path: "/stats", query: [["x", "1"]], authorization: "Bearer abc")
        for head in heads {
            let b = Array(head.utf8)
            for k in 0..<b.count {
                let got = parse(Array(b[..<k]))
                #expect(got == .incomplete, "\(k) of \(b.count) bytes of \(head.debugDescription)")
                if got != .incomplete { break }
            }
            #expect(parse(b) == expected, "\(head.debugDescription)")
            // Bytes after the head (a body, a pipelined request) do not change it.
            #expect(parse(b + Array("{\"x\":1}\r\n\r\nGET / HTTP/1.0\r\n\r\n".utf8)) == expected)
        }
    }

    @Test("a head that is only a blank line is a malformed request line, not incomplete")
    func blankHead() {
        #expect(parse("\r\n\r\n") == .error(400))
        #expect(parse("\n\n") == .error(400))
        #expect(parse("") == .incomplete)
        #expect(parse("\n") == .incomplete)
        #expect(parse("\r\n") == .incomplete)
    }

    @Test("method, path and query")
    func methodPathQuery() {
        #expect(parse(get("/")) == .request(method: "GET", path: "/", query: [], authorization: nil))
        #expect(parse(get("/health", method: "HEAD")) == .request(method: "HEAD", path: "/health", query: [], authorization: nil))
        #expect(parse(get("/stats?format=json&pretty")) ==
                .request(method: "GET", path: "/stats", query: [["format", "json"], ["pretty", ""]], authorization: nil))
        // Empty pairs are skipped; only the first "=" splits; an empty value stays empty.
        #expect(parse(get("/a?&k=v=w&&e=&")) ==
                .request(method: "GET", path: "/a", query: [["k", "v=w"], ["e", ""]], authorization: nil))
        #expect(parse(get("/a?")) == .request(method: "GET", path: "/a", query: [], authorization: nil))
        // Nothing is decoded: the path is the bytes of the target.
        #expect(path(get("/a%20b/c")) == "/a%20b/c")
        // Any token is a method here (the router answers unknown ones with 501).
        #expect(parse(get("/x", method: "M-SEARCH")) == .request(method: "M-SEARCH", path: "/x", query: [], authorization: nil))
        #expect(parse(get("/x", method: "get")) == .request(method: "get", path: "/x", query: [], authorization: nil))
    }

    @Test("Authorization: any case of the name, value trimmed, absent is nil, other headers ignored")
    func authorization() {
        func auth(_ headers: String) -> String?? {
            if case .request(_, _, _, let a) = parse("GET /admin HTTP/1.1\r\nHost: h\r\n\(headers)\r\n") { return .some(a) }
            return nil
        }
        #expect(auth("Authorization: Bearer s3cret\r\n") == .some("Bearer s3cret"))
        #expect(auth("authorization:Bearer s3cret\r\n") == .some("Bearer s3cret"))
        #expect(auth("AUTHORIZATION: \t Basic dTpw \t\r\n") == .some("Basic dTpw"))
        #expect(auth("Authorization:\r\n") == .some(""))
        #expect(auth("X-Authorization: Bearer no\r\nAccept: */*\r\n") == .some(nil))
        #expect(auth("") == .some(nil))
        if case .request(_, _, _, let a) = parse("GET / HTTP/1.1\nHost: h\nAuthorization: Bearer lf-only\n\n") {
            #expect(a == "Bearer lf-only")
        } else {
            Issue.record("bare-LF head did not parse")
        }
        // The value may contain colons.
        #expect(auth("Authorization: Bearer a:b:c\r\n") == .some("Bearer a:b:c"))
    }

    @Test("absolute-form targets: the path (and query) are taken from the URI")
    func absoluteForm() {
        #expect(parse(get("http://example.com:8080/stats?x=1")) ==
                .request(method: "GET", path: "/stats", query: [["x", "1"]], authorization: nil))
        #expect(path(get("http://example.com")) == "/")
        #expect(path(get("https://example.com/a/b")) == "/a/b")
        #expect(path(get("HTTP://Example.COM/Mixed")) == "/Mixed", "scheme is case-insensitive, path is not")
        #expect(parse(get("http://example.com?q=2")) == .request(method: "GET", path: "/", query: [["q", "2"]], authorization: nil))
        #expect(path(get("http://user@h:1/p", method: "POST")) == "/p")
        // No authority, or nothing after the scheme: 400.
        #expect(status(get("http:///stats")) == 400)
        #expect(status(get("http://")) == 400)
        #expect(status(get("http://?x")) == 400)
        // Not origin-form and not a URI with an http(s) scheme: 400.
        #expect(status(get("example.com/stats")) == 400)
        #expect(status(get("ftp://example.com/x")) == 400)
        #expect(status(get("*")) == 400, "asterisk-form is for OPTIONS only")
    }

    @Test("asterisk-form (OPTIONS), authority-form (CONNECT) and unknown methods keep their target")
    func otherForms() {
        #expect(path(get("*", method: "OPTIONS")) == "*")
        #expect(path(get("example.com:443", method: "CONNECT")) == "example.com:443")
        #expect(status(get("example.com:443/x", method: "CONNECT")) == 400)
        #expect(path(get("anything-at-all", method: "FOO")) == "anything-at-all")
    }

    @Test("Host: HTTP/1.1 needs exactly one; HTTP/1.0 may omit it")
    func host() {
        #expect(status("GET / HTTP/1.1\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.1\nHost: a\nHost: b\n\n") == 400)
        #expect(status("GET / HTTP/1.0\r\nHost: a\r\nhOsT: a\r\n\r\n") == 400, "two Hosts in any case")
        #expect(parse("GET /h HTTP/1.0\r\n\r\n") == .request(method: "GET", path: "/h", query: [], authorization: nil))
        #expect(parse("GET /h HTTP/1.0\n\n") == .request(method: "GET", path: "/h", query: [], authorization: nil))
        #expect(path("GET /h HTTP/1.1\r\nhost: a\r\n\r\n") == "/h", "header names are case-insensitive")
        #expect(path("GET /h HTTP/1.1\r\nHost:\r\n\r\n") == "/h", "an empty Host is still a Host")
        // Minor versions above 1 are HTTP/1.1 for this purpose.
        #expect(status("GET / HTTP/1.9\r\n\r\n") == 400)
        #expect(path(get("/v", "HTTP/1.9")) == "/v")
    }

    @Test("versions: another major version is 505, a malformed one 400")
    func versions() {
        #expect(status(get("/", "HTTP/2.0")) == 505)
        #expect(status(get("/", "HTTP/0.9")) == 505)
        #expect(status(get("/", "HTTP/3.0")) == 505)
        for bad in ["HTTP/1.x", "HTTP/1", "HTTP/1.10", "HTTP/11.1", "http/1.1", "HTTP/1,1", "HTTP 1.1", "HTTP/a.1", "HTTP/1.1 "] {
            #expect(status(get("/", bad)) == 400, "\(bad.debugDescription)")
        }
    }

    @Test("malformed request lines are 400")
    func malformedRequestLine() {
        for line in ["GET /", "GET", "GET  / HTTP/1.1", "GET / HTTP/1.1 extra", " GET / HTTP/1.1", "GET /  HTTP/1.1",
                     "G(T / HTTP/1.1", "GET\t/ HTTP/1.1", "GE:T / HTTP/1.1", "/ HTTP/1.1", "GET  HTTP/1.1"] {
            #expect(status(line + "\r\nHost: h\r\n\r\n") == 400, "\(line.debugDescription)")
        }
    }

    // Head limit. `end` below is the offset of the line break that ends the last header line.
    private func head(endingAt end: Int, terminator: String = "\r\n\r\n") -> [UInt8] {
        let start = Array("GET / HTTP/1.0\r\nX-Pad: ".utf8)
        return start + [UInt8](repeating: UInt8(ascii: "p"), count: end - start.count) + Array(terminator.utf8)
    }

    @Test("a head over 8 KiB is 431, complete or not")
    func tooLarge() {
        let max = HTTPRequest.maxHeaderBytes
        #expect(max == 8192)
        #expect(parse(head(endingAt: max)) == .request(method: "GET", path: "/", query: [], authorization: nil))
        #expect(parse(head(endingAt: max, terminator: "\n\n")) == .request(method: "GET", path: "/", query: [], authorization: nil))
        #expect(parse(head(endingAt: max + 1)) == .error(431))
        #expect(parse(head(endingAt: 3 * max)) == .error(431))
        // Incomplete: waiting up to 8 KiB, 431 past it.
        let open = Array(head(endingAt: 2 * max).dropLast(4))
        #expect(parse(Array(open.prefix(max))) == .incomplete)
        #expect(parse(Array(open.prefix(max + 1))) == .error(431))
        #expect(parse(open) == .error(431))
        // A request line alone past 8 KiB (what RequestLine hands over as HTTP).
        #expect(parse([UInt8](repeating: UInt8(ascii: "A"), count: max + 1)) == .error(431))
    }

    @Test("the 8 KiB verdict does not depend on how the head arrived")
    func tooLargeSplitConsistent() {
        let max = HTTPRequest.maxHeaderBytes
        for end in (max - 8)...(max + 2) {
            let b = head(endingAt: end)
            let whole = parse(b)
            for k in 1..<b.count {
                let prefix = parse(Array(b[..<k]))
                #expect(prefix == .incomplete || prefix == whole,
                        "head ending at \(end): the \(k)-byte prefix is \(prefix), the whole head \(whole)")
            }
        }
    }
}
