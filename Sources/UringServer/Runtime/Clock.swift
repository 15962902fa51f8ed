import Glibc

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
