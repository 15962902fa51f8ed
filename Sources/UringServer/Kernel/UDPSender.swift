import CLinux
import Glibc

/// One non-blocking UDP socket for the few datagrams the server itself sends (the voice
/// coordinator's revocations to its relays). A full socket buffer drops the datagram instead of
/// waiting: a reactor never blocks, and the caller counts the failure.
final class UDPSender {
    private let fd: Int32

    init() throws(SyscallError) {
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        fd = try Sys.call("socket") { socket(AF_INET, type, 0) }
    }

    deinit { close(fd) }

    /// Sends `bytes` to `to`; false when the kernel refused it (counted by the caller).
    func send(_ bytes: [UInt8], to: VoiceRelayAddress) -> Bool {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(to.port).bigEndian
        addr.sin_addr.s_addr = to.ipv4.bigEndian
        let n = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, b.baseAddress, b.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        return n == bytes.count
    }
}
