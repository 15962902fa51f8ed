import CHiredis
import Glibc

/// A resolved socket address for the Redis server.
struct RedisAddress {
    var storage = sockaddr_storage()
    var length: socklen_t = 0
    var family: Int32 = 0

    /// getaddrinfo (runs on the link thread only: it may block on DNS, the reactors never wait).
    static func resolve(host: String, port: Int) -> Result<RedisAddress, RedisLinkError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            let why = rc == 0 ? "no address" : String(cString: gai_strerror(rc))
            return .failure(RedisLinkError("cannot resolve \(host): \(why)"))
        }
        defer { freeaddrinfo(res) }
        var a = RedisAddress()
        var cur: UnsafeMutablePointer<addrinfo>? = first
        // Prefer IPv4 (what a local redis-server listens on by default), else the first result.
        var pick = first
        while let c = cur {
            if c.pointee.ai_family == AF_INET { pick = c; break }
            cur = c.pointee.ai_next
        }
        let len = Int(pick.pointee.ai_addrlen)
        guard len <= MemoryLayout<sockaddr_storage>.size, let sa = pick.pointee.ai_addr else {
            return .failure(RedisLinkError("cannot resolve \(host): bad address"))
        }
        withUnsafeMutableBytes(of: &a.storage) { _ = memcpy($0.baseAddress!, sa, len) }
        a.length = socklen_t(len)
        a.family = pick.pointee.ai_family
        return .success(a)
    }
}

struct RedisLinkError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// One non-blocking TCP connection to Redis, driven by the link thread's poll loop: an output
/// pipeline buffer (everything appended since the last write goes out in one send) and hiredis'
/// RESP reader on the input side.
final class RedisConnection {
    enum State { case closed, connecting, up }

    let name: String
    private(set) var fd: Int32 = -1
    private(set) var state = State.closed
    /// Pipeline: bytes in `out[outOffset...]` are still to be written.
    var out: [UInt8] = []
    private(set) var outOffset = 0
    private var reader = RESPReader()

    init(name: String) { self.name = name }
    deinit { close() }

    var unwritten: Int { out.count - outOffset }
    var wantsWrite: Bool { state == .connecting || (state == .up && outOffset < out.count) }

    /// Starts a non-blocking connect. Throws on immediate failure (e.g. connection refused).
    func connect(_ addr: RedisAddress) throws(RedisLinkError) {
        close()
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let s = socket(addr.family, type, 0)
        guard s >= 0 else { throw RedisLinkError("socket: \(errnoString(Errno.current.rawValue))") }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = addr.storage
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, addr.length) }
        }
        fd = s
        reader = RESPReader()
        out.removeAll(keepingCapacity: true)
        outOffset = 0
        if rc == 0 {
            state = .up
            return
        }
        let e = Errno.current.rawValue
        if e == EINPROGRESS || e == EINTR {
            state = .connecting
            return
        }
        close()
        throw RedisLinkError("connect: \(errnoString(e))")
    }

    /// Called when a connecting socket polls writable (or errors): completes the connect.
    func finishConnect() throws(RedisLinkError) {
        guard state == .connecting else { return }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { err = Errno.current.rawValue }
        if err != 0 {
            close()
            throw RedisLinkError("connect: \(errnoString(err))")
        }
        state = .up
    }

    /// Writes as much of the pipeline as the socket takes now.
    func flush() throws(RedisLinkError) {
        guard state == .up else { return }
        while outOffset < out.count {
            let fd = fd, offset = outOffset
            let result: Result<Int?, Errno> = out.withUnsafeBytes { p in
                do throws(Errno) {
                    return .success(try Sys.nonBlocking { send(fd, p.baseAddress! + offset, p.count - offset, Int32(MSG_NOSIGNAL)) })
                } catch {
                    return .failure(error)
                }
            }
            do throws(Errno) {
                guard let n = try result.get() else { break }   // the socket is full: poll for POLLOUT
                if n == 0 { throw Errno(EPIPE) }
                outOffset += n
            } catch {
                throw RedisLinkError("\(name) write: \(error)")
            }
        }
        if outOffset == out.count {
            out.removeAll(keepingCapacity: out.capacity <= 4 << 20)
            outOffset = 0
        } else if outOffset >= 1 << 20 && outOffset * 2 >= out.count {
            out.removeFirst(outOffset)
            outOffset = 0
        }
    }

    /// Reads what is available (up to `maxReads` chunks), feeding every complete reply to
    /// `handle`. Throws on EOF, socket error or a malformed reply stream.
    func read(buffer: UnsafeMutableRawBufferPointer, maxReads: Int = 16,
              _ handle: (RedisReply) throws(RedisLinkError) -> Void) throws(RedisLinkError) {
        guard state == .up else { return }
        for _ in 0..<maxReads {
            let fd = fd
            let received: Int?
            do throws(Errno) {
                received = try Sys.nonBlocking { recv(fd, buffer.baseAddress, buffer.count, 0) }
            } catch {
                throw RedisLinkError("\(name) read: \(error)")
            }
            guard let n = received else { return }   // nothing more for now
            if n == 0 { throw RedisLinkError("\(name) connection closed by redis") }
            guard reader.feed(UnsafeRawBufferPointer(start: buffer.baseAddress, count: n)) else {
                throw RedisLinkError("\(name) protocol error: \(reader.error)")
            }
            while true {
                switch reader.next() {
                case .needMore:
                    break
                case .error(let why):
                    throw RedisLinkError("\(name) protocol error: \(why)")
                case .reply(let raw):
                    defer { chiredis_reply_free(raw) }
                    try handle(RedisReply(raw: raw))
                    continue
                }
                break
            }
            if n < buffer.count { return }
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        state = .closed
        out.removeAll(keepingCapacity: out.capacity <= 4 << 20)
        outOffset = 0
    }
}
