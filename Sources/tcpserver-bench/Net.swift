import CLinux
import Glibc
import LoadClient

func memchrOffset(_ p: UnsafeRawPointer, _ byte: UInt8, _ n: Int) -> Int? {
    guard let r = memchr(p, Int32(byte), n) else { return nil }
    return p.distance(to: UnsafeRawPointer(r))
}

func die(_ msg: String) -> Never {
    let s = "tcpserver-bench: \(msg)\n"
    s.withCString { _ = write(2, $0, strlen($0)) }
    exit(1)
}

func connectTCP(_ host: String, _ port: Int) -> Int32 {
    let fd = tryConnectTCP(host, port)
    if fd < 0 { die("connect \(host):\(port) failed: errno \(clinux_errno())") }
    return fd
}

/// Blocking write of all bytes (used during set-up and by publishers with a closed window).
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
    var off = 0
    while off < bytes.count {
        let n = send(fd, bytes.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL))
        if n > 0 { off += n; continue }
        let e = clinux_errno()
        if e == EINTR { continue }
        if e == EAGAIN {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 100)
            continue
        }
        die("write failed: errno \(e)")
    }
}

/// Reads until `marker` has been seen `times` times (set-up handshakes), with a deadline.
func awaitMarker(_ fd: Int32, _ marker: [UInt8], times: Int = 1, timeoutMs: Int32 = 10000) {
    var counter = PatternCounter(marker)
    var seen = 0
    var buf = [UInt8](repeating: 0, count: 65536)
    while seen < times {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, timeoutMs) <= 0 { die("timed out waiting for subscription confirmation") }
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { die("connection closed during set-up") }
        seen += buf.withUnsafeBytes { counter.count(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    }
}


/// utime+stime (seconds) and RSS (bytes) of a process, from /proc.
struct ProcSample {
    var cpuSeconds: Double
    var userSeconds: Double
    var rssBytes: Int

    static func read(pid: Int32) -> ProcSample? {
        guard let stat = readText("/proc/\(pid)/stat") else { return nil }
        // Fields after the ")" that closes the command name.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is state (field 3); utime is field 14, stime 15, rss 24.
        guard fields.count > 22, let ut = Double(fields[11]), let st = Double(fields[12]),
              let rss = Int(fields[21]) else { return nil }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ProcSample(cpuSeconds: (ut + st) / hz, userSeconds: ut / hz, rssBytes: rss * Int(sysconf(Int32(_SC_PAGESIZE))))
    }
}


/// Raises the soft RLIMIT_NOFILE to the hard limit (hold mode opens thousands of sockets).
/// Returns the soft limit now in force.
@discardableResult
func raiseNoFileLimit() -> Int {
    var rl = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return 0 }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    }
    return Int(rl.rlim_cur)
}

/// The default 50 µs timer slack would delay paced publishes (and so inflate latency);
/// 1 ns asks the kernel to wake us as close to the deadline as it can.
func tightenTimerSlack() {
    guard let f = fopen("/proc/self/timerslack_ns", "w") else { return }
    fputs("1", f)
    fclose(f)
}

typealias EpollPwait2 = @convention(c) (Int32, UnsafeMutablePointer<epoll_event>?, Int32, UnsafePointer<timespec>?, UnsafeRawPointer?) -> Int32

/// epoll_pwait2 (nanosecond timeout, glibc ≥ 2.35, Linux ≥ 5.11) looked up at run time: Swift's
/// Glibc module does not import it. Nil where it is missing; callers then round up to ms.
nonisolated(unsafe) let epollPwait2: EpollPwait2? = {
    guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "epoll_pwait2") else { return nil }
    return unsafeBitCast(sym, to: EpollPwait2.self)
}()

/// epoll_wait with a timeout in nanoseconds.
func epollWait(_ ep: Int32, _ events: inout [epoll_event], timeoutNs: UInt64) -> Int32 {
    if let f = epollPwait2 {
        var ts = timespec(tv_sec: Int(timeoutNs / 1_000_000_000), tv_nsec: Int(timeoutNs % 1_000_000_000))
        let r = events.withUnsafeMutableBufferPointer { f(ep, $0.baseAddress, Int32($0.count), &ts, nil) }
        if r >= 0 || clinux_errno() != ENOSYS { return r }
    }
    let ms = Int32(min(UInt64(Int32.max), (timeoutNs + 999_999) / 1_000_000))
    return epoll_wait(ep, &events, Int32(events.count), ms)
}

func addToEpoll(_ ep: Int32, _ fd: Int32) {
    var ev = epoll_event()
    ev.events = EPOLLIN.rawValue
    ev.data.fd = fd
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)
}

func sleepSeconds(_ s: Double) {
    var ts = timespec(tv_sec: Int(s), tv_nsec: Int((s - Double(Int(s))) * 1e9))
    var rest = timespec()
    while nanosleep(&ts, &rest) != 0 && clinux_errno() == EINTR { ts = rest }
}

/// CPU seconds (user + system) this process has used: the load tool shares the machine's CPUs
/// with the server, so a tool near 1 CPU-second per second is itself the bottleneck.
func selfCPUSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return s(ru.ru_utime) + s(ru.ru_stime)
}
