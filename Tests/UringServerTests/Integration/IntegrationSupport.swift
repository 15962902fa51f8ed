// Shared helpers for the integration tests: an in-process server per test, helper threads for
// concurrent blocking clients, RLIMIT_NOFILE, free ports.

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

/// Both io modes, for `@Test(arguments:)`.
let allIOModes: [IOModeSetting] = [.uring, .epoll]

/// Starts an in-process server on 127.0.0.1, port 0, `threads = 2`, in `mode`; runs `body` with
/// the bound port; stops the server (with a watchdog so a hanging `stop()` is reported rather
/// than hanging the suite).
func withServer<R>(
    _ mode: IOModeSetting,
    sourceLocation: SourceLocation = #_sourceLocation,
    configure: (inout ServerConfig) -> Void = { _ in },
    _ body: (_ port: Int) throws -> R
) throws -> R {
    var c = ServerConfig()
    c.host = "127.0.0.1"
    c.port = 0
    c.io = mode
    c.threads = 2
    c.logFile = ""   // stderr only: parallel servers must not share one rotating file
    // The test process holds many servers (RSS far over 15 MB) on a loaded box: with the
    // default thresholds the monitor would shed presence mid-test. Its own tests set them.
    c.maxMemoryMB = 1_000_000
    c.maxLatencyMs = 1_000_000
    c.maxErrorRate = 1_000_000
    c.minThroughput = 0
    configure(&c)
    let server = Server(config: c)
    try server.start()
    defer { stopWithWatchdog(server, sourceLocation: sourceLocation) }
    let port = server.port
    try #require(port > 0 && port < 65536, "server.port after start() should be the bound port, got \(port)",
                 sourceLocation: sourceLocation)
    return try body(port)
}

private final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}

func stopWithWatchdog(_ server: Server, seconds: Double = 10, sourceLocation: SourceLocation = #_sourceLocation) {
    let box = UncheckedBox(server)
    let done = DispatchSemaphore(value: 0)
    let t = Thread {
        box.value.stop()
        done.signal()
    }
    t.start()
    if done.wait(timeout: .now() + seconds) == .timedOut {
        Issue.record("Server.stop() did not return within \(seconds) s", sourceLocation: sourceLocation)
    }
}

/// A value shared between helper threads and the test.
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ v: T) { _value = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return _value }
    func withLock<R>(_ f: (inout T) throws -> R) rethrows -> R {
        lock.lock(); defer { lock.unlock() }
        return try f(&_value)
    }
}

/// Runs `body` on a new OS thread (blocking socket work must not sit on the Swift concurrency
/// pool). `join(timeout:)` returns false if it has not finished in time.
final class HelperThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var finished = false
    init(_ body: @escaping @Sendable () -> Void) {
        let t = Thread { [done] in
            body()
            done.signal()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    func join(timeout: Double) -> Bool {
        if finished { return true }
        finished = done.wait(timeout: .now() + timeout) == .success
        return finished
    }
}

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

/// Milliseconds since the epoch, for sanity-checking `ts` fields.
func nowMillis() -> Double { Date().timeIntervalSince1970 * 1000 }

/// `ts` must be a number of milliseconds close to now.
func isPlausibleTimestamp(_ v: Any?) -> Bool {
    guard let n = v as? NSNumber else { return false }
    return abs(n.doubleValue - nowMillis()) < 10 * 60 * 1000
}

/// Index of the first position where `a` and `b` differ (including a length difference).
func firstMismatch(_ a: [String], _ b: [String]) -> Int? {
    for i in 0..<min(a.count, b.count) where a[i] != b[i] { return i }
    return a.count == b.count ? nil : min(a.count, b.count)
}
