// The in-process server every socket-level suite uses (Integration, Operations, Dashboard):
// started on 127.0.0.1, port 0, in either io mode, stopped with a watchdog.

import Foundation
import Testing
import UringServer

/// Both io modes, for `@Test(arguments:)`.
let allIOModes: [IOModeSetting] = [.uring, .epoll]

/// The performance monitor's defaults (RSS 15 MB, p99 1 ms) are for the lean binary; the test
/// runner's own RSS is far above 15 MB (it holds many servers, on a loaded box), so an
/// in-process server would shed presence a second after it starts. Tests that are not about
/// the monitor get thresholds it cannot cross; the monitor's own tests set them again.
func quietMonitor(_ c: inout ServerConfig) {
    c.maxMemoryMB = 1_000_000
    c.maxLatencyMs = 1_000_000
    c.minThroughput = 0
    c.maxErrorRate = 1_000_000
}

/// Sets a config key through the public key table (`flag_…`, `beta_…`, `flags`, …).
func setConfig(_ c: inout ServerConfig, _ key: String, _ value: String) {
    do {
        try c.set(key, value)
    } catch {
        Issue.record("config \(key)=\(value) rejected: \(error)")
    }
}

/// Starts an in-process server on 127.0.0.1, port 0, `threads` reactors, in `mode`, logging to
/// stderr only (parallel servers must not share one rotating file); registers the `register`
/// plugins; runs `body` with the running `Server` (for its port, `drainAndStop`,
/// `connectionCount`); stops the server with a watchdog, so a hanging `stop()` is reported
/// rather than hanging the suite. Monitor thresholds are relaxed first (`quietMonitor`);
/// `configure` runs after and may set them again.
func withRunningServer<R>(
    _ mode: IOModeSetting,
    threads: Int = 2,
    sourceLocation: SourceLocation = #_sourceLocation,
    configure: (inout ServerConfig) -> Void = { _ in },
    register: [ProcessorFactory] = [],
    _ body: (_ server: Server) throws -> R
) throws -> R {
    var c = ServerConfig()
    c.host = "127.0.0.1"
    c.port = 0
    c.io = mode
    c.threads = threads
    c.logFile = ""
    quietMonitor(&c)
    configure(&c)
    let server = Server(config: c)
    for f in register { server.register(f) }
    try server.start()
    defer { stopWithWatchdog(server, sourceLocation: sourceLocation) }
    let port = server.port
    try #require(port > 0 && port < 65536, "server.port after start() should be the bound port, got \(port)",
                 sourceLocation: sourceLocation)
    return try body(server)
}

/// `withRunningServer` for the many tests that only need the bound port.
func withServer<R>(
    _ mode: IOModeSetting,
    sourceLocation: SourceLocation = #_sourceLocation,
    configure: (inout ServerConfig) -> Void = { _ in },
    _ body: (_ port: Int) throws -> R
) throws -> R {
    try withRunningServer(mode, sourceLocation: sourceLocation, configure: configure) { try body($0.port) }
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
