import Glibc
import LoadClient
import Synchronization

// Small Foundation-free helpers for the soak tool: time, sockets, /proc, a seeded RNG.

func errno_() -> Int32 { errno }

func say(_ s: String) {
    let line = s + "\n"
    line.withCString { _ = write(1, $0, strlen($0)) }
}

func warn(_ s: String) {
    let line = "tcpserver-soak: " + s + "\n"
    line.withCString { _ = write(2, $0, strlen($0)) }
}

func die(_ s: String) -> Never {
    warn(s)
    exit(2)
}

/// Blocking connect to host:port; returns the fd or -1 (errno kept).
func connectTCP(_ host: String, _ port: Int) -> Int32 { tryConnectTCP(host, port) }

/// close() with SO_LINGER {on, 0}: the kernel sends RST instead of FIN.
func closeWithReset(_ fd: Int32) {
    var l = linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    close(fd)
}

/// Open file descriptors of a process (entries of /proc/PID/fd), or -1.
func fdCount(pid: Int32) -> Int {
    guard let d = opendir("/proc/\(pid)/fd") else { return -1 }
    defer { closedir(d) }
    var n = 0
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { n += 1 }
    }
    return n
}

/// Resident set size in KiB (VmRSS from /proc/PID/status), or -1.
func rssKiB(pid: Int32) -> Int {
    guard let s = readText("/proc/\(pid)/status") else { return -1 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.dropFirst(6).filter { $0 >= "0" && $0 <= "9" }
        return Int(String(digits)) ?? -1
    }
    return -1
}

/// SplitMix64: reproducible runs with --seed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func fmtMs(_ nanos: UInt64) -> String {
    let tenths = (nanos + 50_000) / 100_000
    return "\(tenths / 10).\(tenths % 10)"
}

/// Percentile of sorted values (nearest rank).
func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64 {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((Double(sorted.count) * p).rounded(.up))
    return sorted[min(sorted.count - 1, max(0, rank - 1))]
}

/// Finds `"key":"` in `line` and returns the string value up to the next quote (the soak's
/// names and texts never contain escapes).
func stringField(_ line: ArraySlice<UInt8>, _ key: [UInt8]) -> ArraySlice<UInt8>? {
    guard let start = find(line, key) else { return nil }
    var i = start
    while i < line.endIndex && line[i] != UInt8(ascii: "\"") { i += 1 }
    return line[start..<i]
}

/// Integer after `"key":`.
func intField(_ line: ArraySlice<UInt8>, _ key: [UInt8]) -> Int? {
    guard let start = find(line, key) else { return nil }
    var i = start
    var v = 0
    var any = false
    while i < line.endIndex, line[i] >= 0x30, line[i] <= 0x39 {
        v = v * 10 + Int(line[i] - 0x30)
        i += 1
        any = true
    }
    return any ? v : nil
}

/// Index just past the first occurrence of `needle` in `hay`.
func find(_ hay: ArraySlice<UInt8>, _ needle: [UInt8]) -> Int? {
    let n = needle.count
    guard n > 0, hay.count >= n else { return nil }
    let first = needle[0]
    var i = hay.startIndex
    let last = hay.endIndex - n
    while i <= last {
        if hay[i] == first {
            var k = 1
            while k < n && hay[i + k] == needle[k] { k += 1 }
            if k == n { return i + n }
        }
        i += 1
    }
    return nil
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

// MARK: probe thread

/// Pings on its own connection every `intervalMs` and records round trips, on a thread of its
/// own so the main loop's work never inflates the figures.
final class Probe: @unchecked Sendable {
    let host: String
    let port: Int
    let intervalMs: Int
    let stopFlag = Atomic<Bool>(false)
    // Written by the probe thread, read after join.
    var rtts: [UInt64] = []
    var lost = 0
    var failure: String?
    private var thread = pthread_t()

    init(host: String, port: Int, intervalMs: Int) {
        self.host = host
        self.port = port
        self.intervalMs = intervalMs
    }

    func start() {
        let arg = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { p in
            let probe = Unmanaged<Probe>.fromOpaque(p!).takeRetainedValue()
            probe.run()
            return nil
        }, arg)
        if rc != 0 { die("pthread_create failed: \(rc)") }
    }

    func stop() {
        stopFlag.store(true, ordering: .releasing)
        pthread_join(thread, nil)
    }

    private func run() {
        let fd = connectTCP(host, port)
        if fd < 0 { failure = "probe connect failed: errno \(errno_())"; return }
        defer { close(fd) }
        let hello = bytes("{\"type\":\"hello\",\"user\":\"soak-probe\"}\n")
        _ = hello.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        let ping = bytes("{\"type\":\"ping\"}\n")
        let pongMarker = bytes("\"type\":\"pong\"")
        var pending: [UInt64] = []          // send times of pings not yet answered (FIFO)
        var line: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var next = monoNanos()
        let interval = UInt64(intervalMs) * 1_000_000
        while !stopFlag.load(ordering: .acquiring) {
            let now = monoNanos()
            if now >= next {
                pending.append(now)
                let r = ping.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if r != ping.count { failure = "probe send failed: errno \(errno_())"; return }
                next += interval
                if next < now { next = now + interval }
            }
            let wait = next > now ? Int32((next - now) / 1_000_000) + 1 : 0
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, min(wait, 20)) <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n == 0 { failure = "server closed the probe connection"; return }
            if n < 0 { continue }
            let at = monoNanos()
            for b in buf[0..<n] {
                if b != 0x0A { line.append(b); continue }
                if find(line[...], pongMarker) != nil {
                    if pending.isEmpty { failure = "pong without a ping"; return }
                    rtts.append(at - pending.removeFirst())
                }
                line.removeAll(keepingCapacity: true)
            }
        }
        // Give the last pings up to a second; any still unanswered count with their age.
        let deadline = monoNanos() + 1_000_000_000
        while !pending.isEmpty && monoNanos() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 20) <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { break }
            let at = monoNanos()
            for b in buf[0..<n] {
                if b != 0x0A { line.append(b); continue }
                if find(line[...], pongMarker) != nil, !pending.isEmpty { rtts.append(at - pending.removeFirst()) }
                line.removeAll(keepingCapacity: true)
            }
        }
        let end = monoNanos()
        for t in pending { rtts.append(end - t); lost += 1 }
    }
}
