// Helpers for the "Ops: …" and "Limits: …" suites: an in-process server that hands the test
// the `Server` itself (drain, connection count, plugins), /stats and /metrics readers, admin
// requests, polling, and clients that never read (to build up queued output on the server).
//
// Everything here is prefixed `ops` so it cannot collide with the Integration helpers, which
// are reused as they are (`allIOModes`, `TestClient`, `httpRequest`, `expectError`,
// `stopWithWatchdog`, `HelperThread`, `Locked`, `ChildServer`, `logField`, `addressPort`).

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

/// The performance monitor's defaults (RSS 15 MB, p99 1 ms) are for the lean binary; the test
/// runner's own RSS is far above 15 MB, so an in-process server would shed presence a second
/// after it starts. Tests that are not about the monitor get thresholds it cannot cross.
func opsQuietMonitor(_ c: inout ServerConfig) {
    c.maxMemoryMB = 1_000_000
    c.maxLatencyMs = 1_000_000
    c.minThroughput = 0
    c.maxErrorRate = 1_000_000
}

/// Sets a config key through the public key table (`flag_…`, `beta_…`, `flags`, …).
func opsSet(_ c: inout ServerConfig, _ key: String, _ value: String) {
    do {
        try c.set(key, value)
    } catch {
        Issue.record("config \(key)=\(value) rejected: \(error)")
    }
}

/// Like `withServer`, but hands `body` the `Server` (for `drainAndStop`, `connectionCount`) and
/// lets the test register plugins. Monitor thresholds are relaxed first (`opsQuietMonitor`);
/// `configure` runs after and may set them again.
func withOpsServer<R>(
    _ mode: IOModeSetting,
    threads: Int = 2,
    sourceLocation: SourceLocation = #_sourceLocation,
    configure: (inout ServerConfig) -> Void = { _ in },
    register: [ProcessorFactory] = [],
    _ body: (_ server: Server) throws -> R
) throws -> R {
    var c = ServerConfig()
    c.host = "127.0.0.1"
    c.port = 0
    c.io = mode
    c.threads = threads
    c.logFile = ""
    opsQuietMonitor(&c)
    configure(&c)
    let server = Server(config: c)
    for f in register { server.register(f) }
    try server.start()
    defer { stopWithWatchdog(server, sourceLocation: sourceLocation) }
    try #require(server.port > 0, "server.port after start() should be the bound port", sourceLocation: sourceLocation)
    return try body(server)
}

// MARK: HTTP

func opsGet(_ port: Int, _ path: String, host: String = "127.0.0.1") throws -> HTTPResponse {
    try httpRequest(port: port, "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n")
}

/// GET /stats, parsed. Fails the test (throws) unless the answer is 200 with a JSON object.
func opsStats(_ port: Int, sourceLocation: SourceLocation = #_sourceLocation) throws -> JSONObject {
    let r = try opsGet(port, "/stats")
    try #require(r.statusLine.hasPrefix("HTTP/1.1 200"), "GET /stats: \(r.statusLine) \(r.body)",
                 sourceLocation: sourceLocation)
    #expect(r.headers["content-type"] == "application/json", "content-type: \(r.headers)", sourceLocation: sourceLocation)
    return try J.parse(Array(r.body.utf8))
}

/// Polls /stats (every 100 ms) until `ok` holds; returns the last stats read and whether `ok`
/// held. A failed request (e.g. refused by a connection limit) just counts as "not yet".
func opsStatsEventually(_ port: Int, timeout: Double = 3, _ ok: (JSONObject) -> Bool) -> (stats: JSONObject, ok: Bool) {
    let deadline = Date().addingTimeInterval(timeout)
    var last: JSONObject = [:]
    while true {
        if let r = try? opsGet(port, "/stats"), r.statusLine.hasPrefix("HTTP/1.1 200"),
           let s = try? J.parse(Array(r.body.utf8)) {
            last = s
            if ok(s) { return (s, true) }
        }
        if Date() > deadline { return (last, false) }
        Thread.sleep(forTimeInterval: 0.1)
    }
}

/// POST to an admin route with an optional bearer token.
func opsAdmin(_ port: Int, _ pathAndQuery: String, token: String?, method: String = "POST") throws -> HTTPResponse {
    var req = "\(method) \(pathAndQuery) HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
    if let token { req += "Authorization: Bearer \(token)\r\n" }
    req += "Connection: close\r\n\r\n"
    return try httpRequest(port: port, req)
}

// MARK: reading /stats

func opsNum(_ v: Any?) -> Double? { (v as? NSNumber)?.doubleValue }
func opsInt(_ v: Any?) -> Int? { (v as? NSNumber)?.intValue }

/// `limits.<name>` from /stats (0 when the limit was never hit).
func opsLimit(_ stats: JSONObject, _ name: String) -> Int {
    opsInt((stats["limits"] as? JSONObject)?[name]) ?? 0
}

func opsTotal(_ stats: JSONObject, _ name: String) -> Int {
    opsInt((stats["totals"] as? JSONObject)?[name]) ?? -1
}

/// The flag object named `name` in /stats `flags`.
func opsFlag(_ stats: JSONObject, _ name: String) -> JSONObject? {
    (stats["flags"] as? [JSONObject])?.first { $0["name"] as? String == name }
}

// MARK: Prometheus text

/// Sample lines of a Prometheus text exposition: `name{labels} value` → value, keyed by
/// `name` or `name{labels}` exactly as written.
func opsParseMetrics(_ text: String) -> [String: Double] {
    var out: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let sp = line.lastIndex(of: " "), let v = Double(line[line.index(after: sp)...]) else { continue }
        out[String(line[..<sp])] = v
    }
    return out
}

// MARK: time

/// Polls `f` until it returns true (every 20 ms) or time runs out.
func opsEventually(_ timeout: Double, _ f: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try f() { return true }
        if Date() > deadline { return false }
        Thread.sleep(forTimeInterval: 0.02)
    }
}

// MARK: clients

/// Reads until EOF or reset; returns the messages (lines that do not parse are skipped: a cut
/// slow consumer may see a message truncated mid-way). Throws only on timeout.
@discardableResult
func opsReadToEOF(_ c: TestClient, timeout: Double) throws -> [JSONObject] {
    let deadline = Date().addingTimeInterval(timeout)
    var msgs: [JSONObject] = []
    while true {
        do {
            let line = try c.readLineBytes(timeout: max(0, deadline.timeIntervalSinceNow))
            if let m = try? J.parse(line) { msgs.append(m) }
        } catch ClientError.closed, ClientError.reset {
            return msgs
        } catch ClientError.timeout {
            throw ClientError.timeout("EOF (got \(msgs.count) messages, last: \(msgs.suffix(2)))")
        }
    }
}

/// A client socket whose receive buffer is shrunk before connecting (so little of what the
/// server sends fits in the kernel on our side) and which is never read by accident.
final class OpsQuietClient: @unchecked Sendable {
    let fd: Int32

    init(port: Int, rcvbuf: Int32 = 4096) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError.io("socket", errno) }
        var size = rcvbuf
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            throw ClientError.connectFailed(e)
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ s: String) throws {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClientError.io("send", errno)
            }
            off += n
        }
    }

    /// Reads and discards everything until EOF / reset; returns the bytes read (tail kept).
    func drainToEOF(timeout: Double) throws -> (bytes: Int, tail: String) {
        let deadline = Date().addingTimeInterval(timeout)
        var total = 0
        var tail: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            let r = poll(&p, 1, ms)
            if r == 0 { throw ClientError.timeout("EOF after \(total) bytes") }
            if r < 0 { if errno == EINTR { continue }; throw ClientError.io("poll", errno) }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == ECONNRESET { break }
                throw ClientError.io("recv", errno)
            }
            total += n
            tail += buf[0..<n]
            if tail.count > 4096 { tail.removeFirst(tail.count - 4096) }
        }
        return (total, String(decoding: tail, as: UTF8.self))
    }
}

/// `n` pings whose `id` is a string of `idBytes` bytes: each is answered by a pong and an ack
/// echoing the id, so a client that does not read makes the server queue ~n × idBytes bytes.
func opsBigIdPings(_ n: Int, idBytes: Int = 30_000) -> String {
    let id = String(repeating: "x", count: idBytes)
    return String(repeating: "{\"type\":\"ping\",\"id\":\"\(id)\"}\n", count: n)
}

/// The first non-loopback IPv4 address of this machine, if any.
func opsNonLoopbackIPv4() -> String? {
    var ifap: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&ifap) == 0, let first = ifap else { return nil }
    defer { freeifaddrs(ifap) }
    var p: UnsafeMutablePointer<ifaddrs>? = first
    while let ifa = p {
        defer { p = ifa.pointee.ifa_next }
        guard let sa = ifa.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET),
              ifa.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
        let addr = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        if UInt32(bigEndian: addr.s_addr) >> 24 == 127 { continue }
        var a = addr
        var buf = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count)) != nil else { continue }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    return nil
}
