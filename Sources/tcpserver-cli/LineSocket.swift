import Glibc

// A TCP connection that reads and writes text lines (Glibc sockets, poll; no Foundation).

struct ConnectError: Error {
    let message: String
}

/// Reads `\n`-terminated lines out of whatever `read` returns from an fd.
struct LineBuffer {
    private var bytes: [UInt8] = []
    /// Where the next line starts; consumed bytes are dropped once they are most of the buffer.
    private var start = 0
    /// Bytes from `start` up to here hold no `\n`.
    private var scanned = 0

    mutating func append(_ chunk: UnsafeRawBufferPointer) {
        if start > 0 && start * 2 >= bytes.count {
            bytes.removeSubrange(0..<start)
            scanned -= start
            start = 0
        }
        bytes.append(contentsOf: chunk)
    }

    /// The next complete line without its `\n` (and a trailing `\r`), or nil.
    mutating func nextLine() -> String? {
        guard let nl = bytes[max(start, scanned)...].firstIndex(of: 0x0A) else {
            scanned = bytes.count
            return nil
        }
        var end = nl
        if end > start, bytes[end - 1] == 0x0D { end -= 1 }
        let line = String(decoding: bytes[start..<end], as: UTF8.self)
        start = nl + 1
        scanned = start
        return line
    }

    /// What is left after the last `\n` (a last line without a newline, at EOF).
    mutating func takeRest() -> String? {
        defer { bytes.removeAll(); start = 0; scanned = 0 }
        return start >= bytes.count ? nil : String(decoding: bytes[start...], as: UTF8.self)
    }
}

/// What waiting for input produced.
enum ReadResult {
    case data
    case eof
    case failed(String)
}

/// Reads what is there on `fd` into `buffer` (the fd must be readable, or this blocks).
func readChunk(_ fd: Int32, into buffer: inout LineBuffer) -> ReadResult {
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            chunk.withUnsafeBytes { buffer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            return .data
        }
        if n == 0 { return .eof }
        if errno == EINTR { if Signals.interrupted { return .data }; continue }
        return .failed(String(cString: strerror(errno)))
    }
}

/// Waits until some of `fds` are readable (or hung up); nil on timeout or interruption.
/// `timeoutMs` < 0 waits forever.
func waitReadable(_ fds: [Int32], timeoutMs: Int) -> [Bool]? {
    var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    let rc = poll(&pfds, nfds_t(pfds.count), Int32(clamping: timeoutMs))
    if rc <= 0 { return nil }
    return pfds.map { $0.revents != 0 }
}

final class LineSocket {
    let fd: Int32
    let address: String
    private var input = LineBuffer()
    private(set) var closed = false

    private init(fd: Int32, address: String) {
        self.fd = fd
        self.address = address
    }

    deinit { Glibc.close(fd) }

    /// Connects to host:port (a name or an IPv4/IPv6 address), giving up after `timeoutMs`.
    static func connect(host: String, port: Int, timeoutMs: Int = 5000) throws(ConnectError) -> LineSocket {
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let gai = getaddrinfo(host, String(port), &hints, &list)
        guard gai == 0, let first = list else {
            throw ConnectError(message: "cannot connect to \(address): \(String(cString: gai_strerror(gai)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = String(cString: strerror(errno)); continue }
            if let e = connectWithTimeout(fd, a.pointee.ai_addr, a.pointee.ai_addrlen, timeoutMs) {
                lastError = e
                Glibc.close(fd)
                continue
            }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            return LineSocket(fd: fd, address: address)
        }
        throw ConnectError(message: "cannot connect to \(address): \(lastError)")
    }

    /// Non-blocking connect, poll for completion, back to blocking. nil on success, else why.
    private static func connectWithTimeout(_ fd: Int32, _ addr: UnsafeMutablePointer<sockaddr>?,
                                           _ len: socklen_t, _ timeoutMs: Int) -> String? {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        if Glibc.connect(fd, addr, len) == 0 { return nil }
        guard errno == EINPROGRESS else { return String(cString: strerror(errno)) }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let rc = poll(&p, 1, Int32(timeoutMs))
        if rc == 0 { return "timed out after \(timeoutMs / 1000) s" }
        if rc < 0 { return String(cString: strerror(errno)) }
        var soErr: Int32 = 0
        var l = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soErr, &l)
        return soErr == 0 ? nil : String(cString: strerror(soErr))
    }

    /// Sends `line` plus `\n`. False if the connection is gone.
    @discardableResult
    func send(line: String) -> Bool { send(raw: line + "\n") }

    @discardableResult
    func send(raw: String) -> Bool {
        var bytes = Array(raw.utf8)
        return bytes.withUnsafeMutableBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.send(fd, buf.baseAddress! + off, buf.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    closed = true
                    return false
                }
                off += n
            }
            return true
        }
    }

    /// The next line already received, without waiting.
    func bufferedLine() -> String? { input.nextLine() }

    /// Reads once (the socket should be readable). On EOF marks the connection closed.
    func fill() -> ReadResult {
        let r = readChunk(fd, into: &input)
        if case .data = r { return r }
        closed = true
        return r
    }

    /// Everything until the peer closes (an HTTP response), within `timeoutMs`.
    func readToEnd(timeoutMs: Int) -> String? {
        let deadline = Terminal.monoNanos() + UInt64(timeoutMs) * 1_000_000
        while true {
            let now = Terminal.monoNanos()
            if now >= deadline || Signals.interrupted { return nil }
            guard waitReadable([fd], timeoutMs: Int((deadline - now) / 1_000_000) + 1) != nil else { continue }
            switch fill() {
            case .data: continue
            case .eof: return input.takeRest() ?? ""
            case .failed: return nil
            }
        }
    }
}
