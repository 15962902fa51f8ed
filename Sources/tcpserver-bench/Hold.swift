import CLinux
import Glibc
import LoadClient

// The hold load: idle subscribed connections in steps, the server's RSS after each.

func runHold(_ o: Options) {
    guard o.serverPid > 0 else { die("hold needs --server-pid (it reports the server's RSS)") }
    let steps = o.connSteps.sorted()
    let limit = raiseNoFileLimit()
    if let top = steps.last, top + 64 > limit {
        die("--conns \(top) needs more file descriptors than RLIMIT_NOFILE allows (\(limit))")
    }
    guard let base = ProcSample.read(pid: o.serverPid) else { die("cannot read /proc/\(o.serverPid)") }
    let ep = epoll_create1(0)
    var fds: [Int32] = []
    var events = [epoll_event](repeating: epoll_event(), count: 1024)
    var buf = [UInt8](repeating: 0, count: 65536)
    var unsolicited = 0
    var closed = 0
    // Reads (and drops) whatever the server sends the idle connections: presence notices,
    // NATS PINGs. A connection the server closes is counted.
    func drain(timeoutNs: UInt64) {
        let n = epollWait(ep, &events, timeoutNs: timeoutNs)
        guard n > 0 else { return }
        for i in 0..<Int(n) {
            let fd = events[i].data.fd
            while true {
                let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if r > 0 {
                    unsolicited += r
                    if r < buf.count { break } else { continue }
                }
                if r < 0 && (clinux_errno() == EAGAIN || clinux_errno() == EINTR) { break }
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, nil)
                closed += 1
                break
            }
        }
    }
    var fields: [(String, String)] = [
        ("mode", "hold"), ("wire", o.wire.rawValue), ("conns", steps.map(String.init).joined(separator: ",")),
        ("rss_0_mb", fmt(Double(base.rssBytes) / 1048576, 2)),
    ]
    let start = monoNanos()
    var previous: (Int, Int)?
    for step in steps where step > fds.count {
        let t0 = monoNanos()
        let joining = step - fds.count
        fds += openSubscribers(o, count: joining, firstIndex: fds.count, ep: ep) { drain(timeoutNs: 0) }
        let connectSecs = Double(monoNanos() - t0) / 1e9
        // Let the server settle (lazy allocations, deferred frees), draining meanwhile.
        let settleEnd = monoNanos() + UInt64(o.settle * 1e9)
        while monoNanos() < settleEnd { drain(timeoutNs: 50_000_000) }
        guard let s = ProcSample.read(pid: o.serverPid) else { die("cannot read /proc/\(o.serverPid)") }
        let extra = Double(s.rssBytes - base.rssBytes) / Double(step)
        progress(o, "[\(o.wire.rawValue)] \(step) connections: RSS \(fmt(Double(s.rssBytes) / 1048576, 1)) MB, \(Int(extra)) B/conn")
        fields += [
            ("rss_\(step)_mb", fmt(Double(s.rssBytes) / 1048576, 2)),
            ("bytes_per_conn_\(step)", fmt(extra, 0)),
            ("connect_s_\(step)", fmt(connectSecs, 3)),
            // Connect + hello + join (subscribe) of this step's connections, 200 in flight.
            ("joins_per_sec_\(step)", fmt(Double(joining) / max(connectSecs, 1e-9), 0)),
        ]
        // The marginal cost: RSS added per connection since the previous step (the fixed
        // start-up and first-traffic costs cancel out).
        if let (prevStep, prevRSS) = previous {
            fields.append(("marginal_bytes_per_conn_\(step)",
                           fmt(Double(s.rssBytes - prevRSS) / Double(step - prevStep), 0)))
        }
        previous = (step, s.rssBytes)
    }
    endProgress(o)
    fields += [("unsolicited_bytes", "\(unsolicited)"), ("closed", "\(closed)"),
               ("seconds", fmt(Double(monoNanos() - start) / 1e9, 3))]
    report(o, fields)
    for fd in fds { close(fd) }
    if closed > 0 { exit(3) }
}
