import CLinux
import Glibc

/// Thin typed wrappers over the socket calls the reactors need.
enum Socket {
    /// A TCP listening socket on host:port with SO_REUSEPORT, so every reactor can own one
    /// bound to the same port and the kernel spreads incoming connections across them.
    /// The socket is non-blocking: epoll needs it, and io_uring's accept does not mind.
    static func listen(host: String, port: Int, backlog: Int32 = 4096) throws(SyscallError) -> Int32 {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port)).bigEndian
        if inet_pton(AF_INET, host, &addr.sin_addr) != 1 {
            throw SyscallError(call: "inet_pton", errno: EINVAL)
        }
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let fd = try Sys.call("socket") { socket(AF_INET, type, 0) }
        do {
            try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            try setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1)
            _ = try Sys.call("bind") {
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            _ = try Sys.call("listen") { Glibc.listen(fd, backlog) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Binds host:port without SO_REUSEPORT and closes again: throws EADDRINUSE when another
    /// socket (another server) already holds the port.
    static func checkPortFree(host: String, port: Int) throws(SyscallError) {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port)).bigEndian
        inet_pton(AF_INET, host, &addr.sin_addr)
        let fd = try Sys.call("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        defer { close(fd) }
        try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)   // TIME_WAIT leftovers are fine
        _ = try Sys.call("bind") {
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    static func localPort(_ fd: Int32) -> Int {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// The peer's IPv4 address in host byte order (0 when unknown).
    static func peerIPv4(_ fd: Int32) -> UInt32 {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let r = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        guard r == 0, addr.sin_family == sa_family_t(AF_INET) else { return 0 }
        return UInt32(bigEndian: addr.sin_addr.s_addr)
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SyscallError) {
        var v = value
        _ = try Sys.call("setsockopt") {
            setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Per-connection options: no Nagle delay (chat messages are small and latency matters).
    static func configureAccepted(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Best-effort immediate write used only for one-off replies on sockets we are about to
    /// close (e.g. server_full). Never loops, never blocks the reactor (MSG_DONTWAIT).
    static func writeOnce(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
        _ = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
    }
}
