// A small blocking test client for the integration tests: POSIX sockets, every receive bounded
// by a deadline (so a server bug fails a test instead of hanging it), a line reader for JSON
// lines and a frame reader for the binary framing.
//
// Not thread-safe: one client is used by one thread at a time (`@unchecked Sendable` only so a
// client can be handed to a helper thread).

import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

typealias JSONObject = [String: Any]

enum ClientError: Error, CustomStringConvertible {
    case connectFailed(Int32)
    case timeout(String)
    case closed(String)            // orderly EOF
    case reset(String)             // ECONNRESET / EPIPE
    case io(String, Int32)
    case badJSON(String)
    case protocolViolation(String)

    var description: String {
        switch self {
        case .connectFailed(let e): return "connect failed: \(String(cString: strerror(e)))"
        case .timeout(let w): return "timed out waiting for \(w)"
        case .closed(let w): return "connection closed (EOF) while waiting for \(w)"
        case .reset(let w): return "connection reset while waiting for \(w)"
        case .io(let w, let e): return "\(w): \(String(cString: strerror(e)))"
        case .badJSON(let s): return "server sent invalid JSON: \(s)"
        case .protocolViolation(let s): return "protocol violation: \(s)"
        }
    }
}

enum Framing: String, Sendable, CustomStringConvertible {
    case jsonLines, binary
    var description: String { rawValue }
}

final class TestClient: @unchecked Sendable {
    private(set) var fd: Int32
    var framing: Framing
    /// Seconds each receive may wait.
    var timeout: Double
    private var buf: [UInt8] = []
    private var pos = 0
    /// Every message decoded so far (for diagnostics).
    private(set) var received: [JSONObject] = []

    /// `receiveBuffer`: SO_RCVBUF set before connecting (a small window makes the server's
    /// sends to this client go out in pieces).
    init(port: Int, host: String = "127.0.0.1", framing: Framing = .jsonLines, timeout: Double = 5,
         receiveBuffer: Int32? = nil) throws {
        self.framing = framing
        self.timeout = timeout
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError.io("socket", errno) }
        if var size = receiveBuffer {
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = inet_pton(AF_INET, host, &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 {
            let e = errno
            Glibc.close(fd)
            fd = -1
            throw ClientError.connectFailed(e)
        }
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close() }

    /// Orderly close (FIN).
    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    /// Abortive close: SO_LINGER 0 makes close() send a RST.
    func closeAbruptly() {
        guard fd >= 0 else { return }
        var l = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    // MARK: sending

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { p in
                Glibc.send(fd, p.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == ECONNRESET || e == EPIPE { throw ClientError.reset("send") }
                throw ClientError.io("send", e)
            }
            off += n
        }
    }

    func send(_ s: String) throws { try send(Array(s.utf8)) }

    /// Send one message (a JSON object text without a newline) in the client's framing.
    func send(message json: String) throws {
        switch framing {
        case .jsonLines: try send(Array((json + "\n").utf8))
        case .binary: try send(Frame.encode(codec: 0, payload: Array(json.utf8)))
        }
    }

    /// Convenience: build with `J.obj` and send.
    func send(_ pairs: KeyValuePairs<String, Any>) throws {
        try send(message: J.obj(pairs))
    }

    // MARK: receiving

    /// Read more bytes into the buffer. Throws on timeout, EOF or reset.
    private func fill(deadline: Date, what: String) throws {
        if pos > 0 && pos == buf.count { buf.removeAll(keepingCapacity: true); pos = 0 }
        while true {
            let remainingMs = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, remainingMs)
            if r < 0 {
                if errno == EINTR { continue }
                throw ClientError.io("poll", errno)
            }
            if r == 0 { throw ClientError.timeout(what) }
            var tmp = [UInt8](repeating: 0, count: 65536)
            let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 {
                let e = errno
                if e == EINTR || e == EAGAIN { continue }
                if e == ECONNRESET { throw ClientError.reset(what) }
                throw ClientError.io("recv", e)
            }
            if n == 0 { throw ClientError.closed(what) }
            buf.append(contentsOf: tmp[0..<n])
            return
        }
    }

    /// Next `\n`-terminated line, without the newline (and without a trailing `\r`).
    func readLineBytes(timeout t: Double? = nil) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(t ?? timeout)
        var scanned = 0  // bytes after `pos` already known to hold no newline
        while true {
            if let nl = buf[(pos + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buf[pos..<nl])
                pos = nl + 1
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                return line
            }
            scanned = buf.count - pos
            try fill(deadline: deadline, what: "a line")
        }
    }

    func readLine(timeout t: Double? = nil) throws -> String {
        String(decoding: try readLineBytes(timeout: t), as: UTF8.self)
    }

    /// Wait until at least one unread byte is buffered.
    func waitForData(timeout t: Double? = nil) throws {
        let deadline = Date().addingTimeInterval(t ?? timeout)
        while buf.count - pos == 0 { try fill(deadline: deadline, what: "data") }
    }

    /// Exactly `n` bytes.
    func readExactly(_ n: Int, timeout t: Double? = nil, what: String = "bytes") throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(t ?? timeout)
        while buf.count - pos < n { try fill(deadline: deadline, what: what) }
        let out = Array(buf[pos..<(pos + n)])
        pos += n
        return out
    }

    /// One binary frame: `[u32 BE length N][u8 codec][N-1 payload bytes]`.
    func readFrame(timeout t: Double? = nil) throws -> (codec: UInt8, payload: [UInt8]) {
        let deadline = Date().addingTimeInterval(t ?? timeout)
        let hdr = try readExactly(4, timeout: max(0, deadline.timeIntervalSinceNow), what: "a frame header")
        let n = Int(hdr[0]) << 24 | Int(hdr[1]) << 16 | Int(hdr[2]) << 8 | Int(hdr[3])
        guard n >= 1 else { throw ClientError.protocolViolation("server sent a zero-length frame") }
        guard n <= 64 << 20 else { throw ClientError.protocolViolation("server sent a frame of \(n) bytes (header \(hdr))") }
        let body = try readExactly(n, timeout: max(0, deadline.timeIntervalSinceNow), what: "a frame body")
        return (body[0], Array(body[1...]))
    }

    /// The raw bytes of the next message (line without newline, or frame payload).
    func readMessageBytes(timeout t: Double? = nil) throws -> [UInt8] {
        switch framing {
        case .jsonLines:
            return try readLineBytes(timeout: t)
        case .binary:
            let f = try readFrame(timeout: t)
            guard f.codec == 0 else {
                throw ClientError.protocolViolation("server frame with codec \(f.codec), expected 0")
            }
            return f.payload
        }
    }

    /// Next message, parsed as a JSON object.
    func read(timeout t: Double? = nil) throws -> JSONObject {
        let bytes = try readMessageBytes(timeout: t)
        let obj = try J.parse(bytes)
        received.append(obj)
        return obj
    }

    /// Read until a message of `type` arrives; messages of other types go to `skipped`.
    func read(until type: String, timeout t: Double? = nil, skipped: inout [JSONObject]) throws -> JSONObject {
        let deadline = Date().addingTimeInterval(t ?? timeout)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { throw ClientError.timeout("a \(type) message (skipped \(skipped.count): \(skipped.prefix(5)))") }
            let m = try read(timeout: remaining)
            if m.type == type { return m }
            skipped.append(m)
        }
    }

    func read(until type: String, timeout t: Double? = nil) throws -> JSONObject {
        var skipped: [JSONObject] = []
        return try read(until: type, timeout: t, skipped: &skipped)
    }

    /// Wait for the server to close the connection. Returns any messages that arrived first.
    /// Throws `timeout` if the connection is still open after `t` seconds.
    @discardableResult
    func readUntilClosed(timeout t: Double? = nil) throws -> [JSONObject] {
        let deadline = Date().addingTimeInterval(t ?? timeout)
        var msgs: [JSONObject] = []
        while true {
            do {
                msgs.append(try read(timeout: max(0, deadline.timeIntervalSinceNow)))
            } catch ClientError.closed, ClientError.reset {
                return msgs
            } catch ClientError.timeout {
                throw ClientError.timeout("the server to close the connection (got \(msgs))")
            }
        }
    }

    // MARK: protocol conveniences

    /// hello → welcome. Returns the welcome.
    @discardableResult
    func hello(_ user: String, echo: Bool? = nil) throws -> JSONObject {
        if let echo {
            try send(["type": "hello", "user": user, "echo": echo])
        } else {
            try send(["type": "hello", "user": user])
        }
        let m = try read()
        guard m.type == "welcome" else { throw ClientError.protocolViolation("expected welcome, got \(m)") }
        return m
    }

    /// join_room → joined. Returns the joined message. Skips presence events.
    @discardableResult
    func join(_ room: String) throws -> JSONObject {
        try send(["type": "join_room", "room": room])
        let m = try read(until: "joined")
        guard m["room"] as? String == room else { throw ClientError.protocolViolation("joined for wrong room: \(m)") }
        return m
    }

    /// `count` new clients, client i said hello as "\(user)\(i)" and joined `room`.
    static func members(_ count: Int, port: Int, user: String, room: String,
                        receiveBuffer: Int32? = nil) throws -> [TestClient] {
        try (0..<count).map { i in
            let c = try TestClient(port: port, receiveBuffer: receiveBuffer)
            try c.hello("\(user)\(i)")
            try c.join(room)
            return c
        }
    }

    /// ping → next message must be pong (skipping presence events if `skipPresence`).
    /// Throws a protocol violation naming the unexpected message otherwise.
    func pingExpectingPongNext(skipPresence: Bool = false) throws {
        try send(["type": "ping"])
        while true {
            let m = try read()
            if m.type == "pong" { return }
            if skipPresence, m.type == "user_joined" || m.type == "user_left" { continue }
            throw ClientError.protocolViolation("expected pong next, got \(m)")
        }
    }
}

extension Dictionary where Key == String, Value == Any {
    var type: String? { self["type"] as? String }
}

// MARK: - JSON helpers

enum J {
    /// Builds a JSON object with keys in the given order. Values: String, Int, Bool, Double,
    /// `J.Raw` (inserted verbatim).
    static func obj(_ pairs: KeyValuePairs<String, Any>) -> String {
        var s = "{"
        var first = true
        for (k, v) in pairs {
            if !first { s += "," }
            first = false
            s += quote(k) + ":" + value(v)
        }
        return s + "}"
    }

    struct Raw { let text: String; init(_ t: String) { text = t } }

    static func value(_ v: Any) -> String {
        switch v {
        case let r as Raw: return r.text
        case let b as Bool: return b ? "true" : "false"
        case let i as Int: return String(i)
        case let d as Double: return String(d)
        case let s as String: return quote(s)
        default: fatalError("unsupported JSON value \(v)")
        }
    }

    /// Minimal correct JSON string escaping: `"`, `\`, control characters; everything else as
    /// raw UTF-8.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    static func parse(_ bytes: [UInt8]) throws -> JSONObject {
        let text = String(decoding: bytes.prefix(400), as: UTF8.self)
        guard let any = try? JSONSerialization.jsonObject(with: Data(bytes), options: []),
              let obj = any as? JSONObject else {
            throw ClientError.badJSON(text)
        }
        return obj
    }
}

enum Frame {
    static func encode(codec: UInt8, payload: [UInt8]) -> [UInt8] {
        header(length: UInt32(payload.count + 1)) + [codec] + payload
    }

    static func header(length n: UInt32) -> [UInt8] {
        [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)]
    }
}
