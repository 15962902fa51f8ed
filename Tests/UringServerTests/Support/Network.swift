// The machine's side of socket tests: free ports, local addresses, the descriptor limit.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Raise the soft RLIMIT_NOFILE to at least `wanted` (or the hard limit).
func raiseFileLimit(to wanted: UInt) -> UInt {
    var rl = rlimit()
    #if canImport(Glibc)
    let res = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    let res = RLIMIT_NOFILE
    #endif
    guard getrlimit(res, &rl) == 0 else { return 0 }
    if rl.rlim_cur < rlim_t(wanted) {
        rl.rlim_cur = min(rl.rlim_max, rlim_t(wanted))
        _ = setrlimit(res, &rl)
        _ = getrlimit(res, &rl)
    }
    return UInt(rl.rlim_cur)
}

/// A port that was free a moment ago (bind to 0, read it back, close).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    _ = inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    _ = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The first non-loopback IPv4 address of this machine, if any.
func nonLoopbackIPv4() -> String? {
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
