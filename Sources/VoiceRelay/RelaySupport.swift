import Glibc
import Synchronization

/// The few runtime pieces the relay needs and, being its own server target (no UringServer,
/// no Foundation), keeps to itself: clocks, a pthread mutex, threads.
enum RelayClock {
    @inline(__always) static func monoNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    @inline(__always) static func wallMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// CPU seconds this process has used (user + system): the bench's denominator.
    static func processCPUSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }
}

private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// Starts a joinable pthread running `body`.
func startThread(_ body: @escaping () -> Void) -> pthread_t {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var t = pthread_t()
    pthread_create(&t, nil, { arg in
        let b = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        b.run()
        return nil
    }, box)
    return t
}

/// An IPv4 address and port packed as one integer (ip << 16 | port, host order): the relay's
/// key for a client, and what it turns back into a sockaddr_in to send.
typealias AddrKey = UInt64

@inline(__always) func addrKey(ip: UInt32, port: UInt16) -> AddrKey { UInt64(ip) << 16 | UInt64(port) }

@inline(__always) func fillSockaddr(_ sa: UnsafeMutablePointer<sockaddr_in>, _ key: AddrKey) {
    sa.pointee = sockaddr_in()
    sa.pointee.sin_family = sa_family_t(AF_INET)
    sa.pointee.sin_port = in_port_t(UInt16(truncatingIfNeeded: key)).bigEndian
    sa.pointee.sin_addr.s_addr = UInt32(truncatingIfNeeded: key >> 16).bigEndian
}

/// A stop flag the relay threads poll (an Atomic is not copyable; threads share this box).
final class RelayFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

/// A counter shared with threads being started.
final class RelayCount: Sendable {
    private let value = Atomic<Int>(0)
    var current: Int { value.load(ordering: .acquiring) }
    func increment() { value.add(1, ordering: .releasing) }
}
