import CLinux
import Glibc

/// A failed system call: the errno and the call's name. Every syscall wrapper in the IO folder
/// throws this, so errors are turned into messages in one place.
public struct SyscallError: Error, CustomStringConvertible {
    public let call: StaticString
    public let errno: Int32
    public var description: String { "\(call): \(errnoString(errno))" }
}

@inline(__always) func currentErrno() -> Int32 { clinux_errno() }

func errnoString(_ e: Int32) -> String {
    guard let s = strerror(e) else { return "errno \(e)" }
    return String(cString: s) + " (errno \(e))"
}

/// Runs `body`, retrying on EINTR; a -1 result becomes a SyscallError.
@inline(__always)
func syscall<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(SyscallError) -> T {
    while true {
        let r = body()
        if r != -1 { return r }
        let e = currentErrno()
        if e == EINTR { continue }
        throw SyscallError(call: name, errno: e)
    }
}

/// liburing returns -errno instead of setting errno.
@inline(__always)
func uringCall(_ name: StaticString, _ r: Int32) throws(SyscallError) -> Int32 {
    if r < 0 { throw SyscallError(call: name, errno: -r) }
    return r
}

enum Clock {
    /// Wall-clock milliseconds since the epoch (for the `ts` fields clients see).
    static func wallMillis() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in milliseconds: wall time = this + monotonic.
    static func wallOffsetMillis() -> Int { wallMillis() - Int(monoNanos() / 1_000_000) }
    /// Monotonic nanoseconds (for durations).
    static func monoNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

enum SystemInfo {
    static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Kernel release, e.g. "6.1.0-18-amd64".
    static var kernelRelease: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.release) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// (major, minor) of the running kernel.
    static var kernelVersion: (Int, Int) {
        let parts = kernelRelease.split(whereSeparator: { $0 == "." || $0 == "-" })
        let major = parts.count > 0 ? Int(parts[0]) ?? 0 : 0
        let minor = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        return (major, minor)
    }
}
