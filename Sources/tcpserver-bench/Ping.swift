import CLinux
import Glibc
import Histogram
import LoadClient

// The ping load: C connections with K pings in flight each.

func runPing(_ o: Options) {
    let ep = epoll_create1(0)
    var fds: [Int32] = []
    for _ in 0..<o.conns {
        let fd = connectTCP(o.host, o.port)
        let hello = o.wire.hello
        if !hello.isEmpty {
            hello.withUnsafeBytes { writeAll(fd, $0) }
            if o.wire == .tcpserver { awaitMarker(fd, Array("welcome".utf8)) }
        }
        setNonBlocking(fd)
        addToEpoll(ep, fd)
        fds.append(fd)
    }
    let ping = o.wire.ping
    // Per connection, indexed by fd (no dictionary lookups per pong): a ring of the send
    // times of the pings in flight (answers come back in order), and the pong counter.
    let maxFd = Int(fds.max() ?? 0)
    let slots = max(1, o.inflight)
    var sendTimes = [UInt64](repeating: 0, count: (maxFd + 1) * slots)
    var heads = [Int](repeating: 0, count: maxFd + 1)
    var inFlight = [Int](repeating: 0, count: maxFd + 1)
    var counters = [PatternCounter](repeating: PatternCounter(o.wire.pong), count: maxFd + 1)
    var hist = newHistogram()
    let toolCPU0 = selfCPUSeconds()
    let before = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    let start = monoNanos()
    let end = start + UInt64(o.duration * 1e9)
    // Up to `inflight` pings back to back, written from one prebuilt buffer.
    var burst: [UInt8] = []
    for _ in 0..<slots { burst += ping }
    func issue(_ fd: Int32, _ count: Int, at t: UInt64) {
        let f = Int(fd)
        for _ in 0..<count {
            sendTimes[f * slots + (heads[f] + inFlight[f]) % slots] = t
            inFlight[f] += 1
        }
        burst.withUnsafeBytes { writeAll(fd, UnsafeRawBufferPointer(rebasing: $0[0..<(count * ping.count)])) }
    }
    for fd in fds { issue(fd, o.inflight, at: monoNanos()) }
    var events = [epoll_event](repeating: epoll_event(), count: 256)
    var buf = [UInt8](repeating: 0, count: 65536)
    var outstanding = o.conns * o.inflight
    var lastProgress = start
    while outstanding > 0 {
        let now = monoNanos()
        if now > end + 5_000_000_000 { die("pings unanswered at the end: \(outstanding)") }
        let n = epoll_wait(ep, &events, Int32(events.count), 10)
        if n <= 0 { continue }
        for i in 0..<Int(n) {
            let fd = events[i].data.fd
            let f = Int(fd)
            let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if r == 0 { die("server closed a connection") }
            if r < 0 { continue }
            let got = buf.withUnsafeBytes { counters[f].count(UnsafeRawBufferPointer(rebasing: $0[0..<r])) }
            if got == 0 { continue }
            guard got <= inFlight[f] else { die("more pongs than pings on a connection") }
            let t = monoNanos()
            for _ in 0..<got {
                hist.record(t - sendTimes[f * slots + heads[f]])
                heads[f] = (heads[f] + 1) % slots
                inFlight[f] -= 1
                outstanding -= 1
            }
            // Send as many pings as came back.
            if t < end {
                issue(fd, got, at: t)
                outstanding += got
            }
        }
        if now - lastProgress > 1_000_000_000 {
            lastProgress = now
            progress(o, "[\(o.wire.rawValue)] \(fmt(Double(now - start) / 1e9, 1))s pongs=\(hist.totalCount)")
        }
    }
    let elapsed = Double(monoNanos() - start) / 1e9
    let after = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    endProgress(o)
    let requests = Int(hist.totalCount)
    var fields: [(String, String)] = [
        ("mode", "ping"), ("wire", o.wire.rawValue), ("conns", "\(o.conns)"), ("inflight", "\(o.inflight)"),
        ("requests", "\(requests)"), ("seconds", fmt(elapsed, 3)),
        ("requests_per_sec", fmt(Double(requests) / elapsed, 0)),
    ]
    fields += latencyFields(hist)
    fields += cpuFields(before, after, work: requests, name: "requests")
    if let a = after { fields.append(("server_rss_mb", fmt(Double(a.rssBytes) / 1048576, 2))) }
    fields.append(("tool_cpu_s", fmt(selfCPUSeconds() - toolCPU0, 3)))
    report(o, fields)
}
