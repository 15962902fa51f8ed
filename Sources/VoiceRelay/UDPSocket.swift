import Glibc

struct SocketError: Error, CustomStringConvertible {
    let call: String
    let errno: Int32
    var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// The relay's socket calls: UDP sockets sharing a port (SO_REUSEPORT), and the stats
/// listener's TCP socket.
enum UDPSocket {
    private static func address(_ host: String, _ port: Int) throws(SocketError) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port)).bigEndian
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw SocketError(call: "inet_pton(\(host))", errno: EINVAL)
        }
        return addr
    }

    private static func bind(_ fd: Int32, _ addr: sockaddr_in) -> Int32 {
        var a = addr
        return withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    private static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ v: Int32) -> Int32 {
        var v = v
        return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A non-blocking UDP socket on host:port with SO_REUSEPORT and large buffers (a burst of
    /// a few hundred channels' frames should wait in the socket, not be dropped by the kernel).
    static func bind(host: String, port: Int) throws(SocketError) -> Int32 {
        let addr = try address(host, port)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(call: "socket", errno: errno) }
        _ = setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1)
        for (force, plain) in [(SO_RCVBUFFORCE, SO_RCVBUF), (SO_SNDBUFFORCE, SO_SNDBUF)] where setInt(fd, SOL_SOCKET, force, 4 << 20) != 0 {
            _ = setInt(fd, SOL_SOCKET, plain, 4 << 20)   // unprivileged: capped at net.core.[rw]mem_max
        }
        guard bind(fd, addr) == 0 else {
            let e = errno
            close(fd)
            throw SocketError(call: "bind", errno: e)
        }
        return fd
    }

    /// Fails with EADDRINUSE when another socket already holds the UDP port.
    static func checkPortFree(host: String, port: Int) throws(SocketError) {
        let addr = try address(host, port)
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(call: "socket", errno: errno) }
        defer { close(fd) }
        guard bind(fd, addr) == 0 else { throw SocketError(call: "bind", errno: errno) }
    }

    static func localPort(_ fd: Int32) -> Int {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// A TCP listener on 127.0.0.1:port (the stats port).
    static func listenTCP(port: Int) throws(SocketError) -> Int32 {
        let addr = try address("127.0.0.1", port)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(call: "socket", errno: errno) }
        _ = setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        guard bind(fd, addr) == 0, listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw SocketError(call: "bind/listen", errno: e)
        }
        return fd
    }
}

/// The kernel's own UDP drop counters (/proc/net/snmp, the whole host): a datagram the relay
/// never saw because its socket buffer was full shows up here, not in the relay's drops.
public struct KernelUDPCounters: Sendable {
    public var inErrors: UInt64 = 0
    public var rcvbufErrors: UInt64 = 0
    public var sndbufErrors: UInt64 = 0

    static func read() -> KernelUDPCounters {
        var k = KernelUDPCounters()
        let fd = open("/proc/net/snmp", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return k }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 8192)
        let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return k }
        let lines = String(decoding: buf[..<n], as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix("Udp: ") }
        guard lines.count >= 2 else { return k }
        let names = lines[0].split(separator: " "), values = lines[1].split(separator: " ")
        for (name, value) in zip(names, values) {
            switch name {
            case "InErrors": k.inErrors = UInt64(value) ?? 0
            case "RcvbufErrors": k.rcvbufErrors = UInt64(value) ?? 0
            case "SndbufErrors": k.sndbufErrors = UInt64(value) ?? 0
            default: break
            }
        }
        return k
    }
}
