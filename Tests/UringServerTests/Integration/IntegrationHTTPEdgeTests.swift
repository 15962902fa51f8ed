// HTTP edges found by outside test suites: request lines whose method the first-byte detection
// did not know (they got JSON), Allow on 405, Host, absolute-form targets, and slowloris heads
// (held for the idle timeout, with JSON pings written into them).

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Integration: HTTP edges")
struct IntegrationHTTPEdgeTests {

    @Test("any request line gets an HTTP answer (405 with Allow, 501), never JSON", arguments: allIOModes)
    func otherMethods(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.adminToken = "adm1n" }) { port in
            let cases: [(request: String, status: Int, allow: String?)] = [
                ("TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET, HEAD"),
                ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, "GET, HEAD, POST"),
                ("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET, HEAD, POST"),
                ("OPTIONS /health HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET, HEAD"),
                ("PUT /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "GET, HEAD"),
                ("DELETE /stats HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET, HEAD"),
                ("PATCH /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET, HEAD"),
                ("POST /dashboard HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "GET, HEAD"),
                ("GET /admin/features/enable_presence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer adm1n\r\n\r\n",
                 405, "POST"),
                ("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501, nil),
                ("get /health HTTP/1.1\r\nHost: x\r\n\r\n", 501, nil),   // methods are case-sensitive
                ("M-SEARCH * HTTP/1.1\r\nHost: x\r\n\r\n", 501, nil),
                ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, nil),          // HTTP/2 prior-knowledge preface
            ]
            for (request, status, allow) in cases {
                let r = try rawExchange(port, Array(request.utf8))
                let what = String(reflecting: request.prefix(40))
                #expect(!r.bytes.contains(UInt8(ascii: "{")), "\(what): JSON in the answer: \(r.text)")
                #expect(r.closed, "\(what): the connection should close after the answer")
                guard let head = parseHead(r.bytes) else {
                    Issue.record("\(what): not an HTTP response: \(String(reflecting: r.text.prefix(80)))")
                    continue
                }
                #expect(head.status == status, "\(what): \(head.statusLine)")
                #expect(head.headers["allow"] == allow, "\(what): Allow \(head.headers["allow"] ?? "missing")")
            }

            // The first line split across receives: undecided until it is complete.
            let split = try TestClient(port: port)
            for chunk in ["F", "OO", " /x", " HTT", "P/1.1\r", "\nHost: x\r\n\r\n"] {
                try split.send(chunk)
                Thread.sleep(forTimeInterval: 0.02)
            }
            let status = try split.readLine()
            #expect(status.hasPrefix("HTTP/1.1 501"), "FOO sent in pieces: \(status)")
        }
    }

    @Test("lines that cannot be request lines still get the JSON bad_frame and a close", arguments: allIOModes)
    func notRequestLines(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            // A whole non-HTTP line; a bad byte in the method (decided before any newline);
            // a request-line shape with a version that is not HTTP's.
            for junk in ["GARBAGE\r\n\r\n", "hello world\n", "Zz\u{1}", "FOO / FTP/1.0\r\n"] {
                let r = try rawExchange(port, Array(junk.utf8))
                #expect(r.closed, "\(String(reflecting: junk)): should be closed")
                let line = r.text.split(separator: "\n").first.map(String.init) ?? ""
                #expect(line.hasPrefix("{\"type\":\"error\",\"code\":\"bad_frame\""),
                        "\(String(reflecting: junk)): \(String(reflecting: r.text))")
            }
        }
    }

    @Test("Host: required by HTTP/1.1 (400), optional in HTTP/1.0, one at most", arguments: allIOModes)
    func hostHeader(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let noHost = try httpRequest(port: port, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            #expect(noHost.statusLine.hasPrefix("HTTP/1.1 400"), "HTTP/1.1 without Host: \(noHost.statusLine)")
            let twoHosts = try httpRequest(port: port, "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            #expect(twoHosts.statusLine.hasPrefix("HTTP/1.1 400"), "two Host headers: \(twoHosts.statusLine)")
            let old = try httpRequest(port: port, "GET /health HTTP/1.0\r\n\r\n")
            #expect(old.statusLine.hasPrefix("HTTP/1.1 200") && old.body == "ok", "HTTP/1.0 without Host: \(old)")
            let lower = try httpRequest(port: port, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            #expect(lower.statusLine.hasPrefix("HTTP/1.1 200"), "header names are case-insensitive: \(lower.statusLine)")
        }
    }

    @Test("absolute-form targets are served by their path", arguments: allIOModes)
    func absoluteForm(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let h = try httpRequest(port: port,
                                    "GET http://127.0.0.1:\(port)/health HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n\r\n")
            #expect(h.statusLine.hasPrefix("HTTP/1.1 200") && h.body == "ok", "absolute /health: \(h)")
            let s = try httpRequest(port: port, "GET HTTP://localhost/stats?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            #expect(s.statusLine.hasPrefix("HTTP/1.1 200") && s.headers["content-type"] == "application/json",
                    "absolute /stats with a query, upper-case scheme: \(s.statusLine)")
            let nf = try httpRequest(port: port, "GET http://127.0.0.1:\(port)/nope HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(nf.statusLine.hasPrefix("HTTP/1.1 404"), "absolute unknown path: \(nf.statusLine)")
            let bad = try httpRequest(port: port, "GET ftp://h/health HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(bad.statusLine.hasPrefix("HTTP/1.1 400"), "not an http(s) URI: \(bad.statusLine)")
        }
    }

    /// http_header_timeout_ms=300 with idle_timeout_ms=100: before the fix the partial request
    /// got a JSON ping at 100 ms and was held for twice the idle timeout.
    @Test("slowloris: unfinished heads get 408, undecided first lines a silent close, no JSON",
          arguments: allIOModes)
    func headerTimeout(mode: IOModeSetting) throws {
        try withServer(mode, configure: {
            $0.httpHeaderTimeoutMs = 300
            $0.idleTimeoutMs = 100
        }) { port in
            let started = Date()
            let partial = try TestClient(port: port)
            try partial.send("GET /health HTTP/1.1\r\nHost: x\r\n")     // no blank line
            let lone = try TestClient(port: port)
            try lone.send("G")                                          // HTTP or not: undecided
            let unknown = try TestClient(port: port)
            try unknown.send("FOO /slow")                               // still shaped like a request line

            let p = try readToEOF(partial, timeout: 3)
            let elapsed = Date().timeIntervalSince(started)
            #expect(String(decoding: p, as: UTF8.self).hasPrefix("HTTP/1.1 408 Request Timeout\r\n"),
                    "partial head: \(String(reflecting: String(decoding: p, as: UTF8.self)))")
            #expect(!p.contains(UInt8(ascii: "{")), "JSON written into an HTTP connection")
            #expect(elapsed >= 0.28 && elapsed < 2, "partial head closed after \(elapsed) s (timeout 0.3 s)")
            for (name, c) in [("lone G", lone), ("FOO /slow", unknown)] {
                let got = try readToEOF(c, timeout: 3)
                #expect(got.isEmpty, "\(name): should close silently, got \(String(decoding: got, as: UTF8.self))")
            }
            #expect(Date().timeIntervalSince(started) < 2.5)
            let (stats, ok) = statsEventually(port) { statsLimit($0, "http_header_timeout") >= 3 }
            #expect(ok, "limits.http_header_timeout: \(stats["limits"] ?? "")")
        }
    }

    @Test("http_header_timeout_ms parses and is validated")
    func headerTimeoutConfig() throws {
        var c = ServerConfig()
        #expect(c.httpHeaderTimeoutMs == 5000)
        try c.set("http-header-timeout-ms", "750")
        #expect(c.httpHeaderTimeoutMs == 750)
        for bad in ["0", "-1", "abc", "3600001"] {
            #expect(throws: ConfigError.self, "http_header_timeout_ms=\(bad)") { try c.set("http_header_timeout_ms", bad) }
        }
    }
}

// MARK: helpers

private struct RawReply {
    var bytes: [UInt8]
    var closed: Bool
    var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Sends `request` on a new connection and reads everything until the server closes it (or
/// `timeout` passes: `closed` false).
private func rawExchange(_ port: Int, _ request: [UInt8], timeout: Double = 3) throws -> RawReply {
    let c = try TestClient(port: port)
    try c.send(request)
    var out: [UInt8] = []
    let closed = readAll(c.fd, into: &out, timeout: timeout)
    return RawReply(bytes: out, closed: closed)
}

/// Everything `c` receives until EOF; throws when it is still open after `timeout`.
private func readToEOF(_ c: TestClient, timeout: Double) throws -> [UInt8] {
    var out: [UInt8] = []
    guard readAll(c.fd, into: &out, timeout: timeout) else {
        throw ClientError.timeout("EOF (got \(String(reflecting: String(decoding: out, as: UTF8.self))))")
    }
    return out
}

/// Reads until EOF or reset (true) or until `timeout` (false).
private func readAll(_ fd: Int32, into out: inout [UInt8], timeout: Double) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let ms = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, ms) <= 0 { return false }
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 {
            out += chunk[..<n]
        } else if n == 0 || errno == ECONNRESET {
            return true
        } else if errno != EINTR && errno != EAGAIN {
            return true
        }
    }
}

/// Status and headers (names lower-cased) of an HTTP/1.x response, nil when it is not one.
private func parseHead(_ bytes: [UInt8]) -> (status: Int, statusLine: String, headers: [String: String])? {
    let text = String(decoding: bytes, as: UTF8.self)
    guard text.hasPrefix("HTTP/1."), let end = text.range(of: "\r\n\r\n") else { return nil }
    let lines = text[..<end.lowerBound].components(separatedBy: "\r\n")
    let parts = lines[0].split(separator: " ")
    guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
    var headers: [String: String] = [:]
    for l in lines.dropFirst() {
        guard let colon = l.firstIndex(of: ":") else { continue }
        headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return (status, lines[0], headers)
}
