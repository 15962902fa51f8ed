// Clients that read slowly or never: they build up queued output on the server (slow consumers,
// stuck connections during a drain, backlog under load).

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A client socket whose receive buffer is shrunk before connecting (so little of what the
/// server sends fits in the kernel on our side) and which is never read by accident.
final class QuietClient: @unchecked Sendable {
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
func bigIdPings(_ n: Int, idBytes: Int = 30_000) -> String {
    let id = String(repeating: "x", count: idBytes)
    return String(repeating: "{\"type\":\"ping\",\"id\":\"\(id)\"}\n", count: n)
}

/// Reads every socket in `fds` as fast as it can (discarding) until `stop`; counts the bytes.
func drainSockets(_ fds: [Int32], stop: Locked<Bool>, bytes: Locked<Int>) {
    var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    var total = 0
    while !stop.value {
        let r = poll(&pfds, nfds_t(pfds.count), 50)
        if r <= 0 { continue }
        for i in pfds.indices where pfds[i].revents != 0 {
            if pfds[i].revents & Int16(POLLIN) == 0 {
                pfds[i].fd = -1      // hung up or failed: stop polling it
                continue
            }
            while true {
                let n = buf.withUnsafeMutableBytes { recv(pfds[i].fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 { total += n; if n < buf.count { break } else { continue } }
                if n == 0 { pfds[i].fd = -1 }
                break
            }
        }
        bytes.withLock { $0 = total }
    }
}
