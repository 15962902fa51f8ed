import CURing
import Glibc

// tcpserver-bench: drives a pub/sub server over real sockets and measures it.
//   fanout: N subscribers in one room, M publishers, payload S bytes, a closed window (at most
//           W messages not yet delivered to every subscriber), every delivery counted.
//   ping:   C connections with K pings in flight each; round-trip percentiles.
// --wire tcpserver|redis|nats picks the protocol; --server-pid reads the server's CPU and RSS.

struct Options {
    var mode = "fanout"
    var wire = Wire.tcpserver
    var host = "127.0.0.1"
    var port = 4000
    var subs = 50
    var pubs = 1
    var size = 64
    var duration = 5.0
    var window = 256
    var batch = 32
    var conns = 100
    var inflight = 8
    var serverPid: Int32 = 0
    var room = "bench"
    var quiet = false
}

func parseOptions() -> Options {
    var o = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    if let m = args.first, !m.hasPrefix("--") { o.mode = m; args.removeFirst() }
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { die("\(args[i - 1]) needs a value") }
        return args[i]
    }
    func int(_ s: String) -> Int { guard let v = Int(s) else { die("not a number: \(s)") }; return v }
    while i < args.count {
        switch args[i] {
        case "--wire": guard let w = Wire(rawValue: value()) else { die("--wire: tcpserver, redis or nats") }; o.wire = w
        case "--host": o.host = value()
        case "--port": o.port = int(value())
        case "--subs": o.subs = int(value())
        case "--pubs": o.pubs = int(value())
        case "--size": o.size = int(value())
        case "--duration": guard let d = Double(value()) else { die("bad --duration") }; o.duration = d
        case "--window": o.window = int(value())
        case "--batch": o.batch = int(value())
        case "--conns": o.conns = int(value())
        case "--inflight": o.inflight = int(value())
        case "--server-pid": o.serverPid = Int32(int(value()))
        case "--room": o.room = value()
        case "--quiet": o.quiet = true
        case "--help", "-h":
            print("usage: tcpserver-bench [fanout|ping] --wire tcpserver|redis|nats --port N [--subs N --pubs M --size S --window W --batch B] [--conns C --inflight K] [--duration SEC] [--server-pid PID]")
            exit(0)
        default: die("unknown option \(args[i])")
        }
        i += 1
    }
    return o
}

func progress(_ o: Options, _ text: String) {
    if o.quiet { return }
    let s = "\r\(text)   "
    s.withCString { _ = write(2, $0, strlen($0)) }
}

func percentile(_ sorted: [UInt64], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let idx = min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)
    return Double(sorted[max(0, idx)]) / 1000.0   // microseconds
}

func fmt(_ v: Double, _ digits: Int = 2) -> String {
    var m = 1.0
    for _ in 0..<digits { m *= 10 }
    let r = (v * m).rounded() / m
    return String(r)
}

// MARK: fan-out

func runFanout(_ o: Options) {
    let payload = String(repeating: "x", count: o.size)
    let ep = epoll_create1(0)
    var subs: [Int32] = []
    for s in 0..<o.subs {
        let fd = connectTCP(o.host, o.port)
        o.wire.subscribe(user: "sub\(s)", room: o.room).withUnsafeBytes { writeAll(fd, $0) }
        subs.append(fd)
    }
    for fd in subs {
        awaitMarker(fd, o.wire.subscribedMarker)
        setNonBlocking(fd)
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = fd
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)
    }
    var pubs: [Int32] = []
    for p in 0..<o.pubs {
        let fd = connectTCP(o.host, o.port)
        let setup = o.wire.publisherSetup(user: "pub\(p)", room: o.room)
        if !setup.isEmpty {
            setup.withUnsafeBytes { writeAll(fd, $0) }
            awaitMarker(fd, o.wire == .tcpserver ? o.wire.subscribedMarker : Array("PONG".utf8))
        }
        setNonBlocking(fd)
        // Publishers' sockets are drained (tcpserver publishers are room members, Redis
        // answers each PUBLISH with a count) but what they get is not counted.
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = fd
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)
        pubs.append(fd)
    }
    let pubSet = Set(pubs)
    var counters = [Int32: PatternCounter]()
    for fd in subs { counters[fd] = PatternCounter(o.wire.deliveryMarker) }

    let one = o.wire.publish(room: o.room, payload: payload)
    var batchBytes: [UInt8] = []
    for _ in 0..<o.batch { batchBytes += one }

    let before = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    var peakRSS = before?.rssBytes ?? 0
    let start = monoNanos()
    let end = start + UInt64(o.duration * 1e9)
    var sent = 0
    var delivered = 0
    var nextPub = 0
    var events = [epoll_event](repeating: epoll_event(), count: 256)
    var buf = [UInt8](repeating: 0, count: 1 << 18)
    var lastProgress = start
    var publishing = true
    var drainDeadline: UInt64 = 0
    let subCount = o.subs
    while true {
        let now = monoNanos()
        if publishing && now >= end {
            publishing = false
            drainDeadline = now + 3_000_000_000
        }
        if !publishing && (delivered >= sent * subCount || now >= drainDeadline) { break }
        // Closed window: publish only while fewer than `window` messages are outstanding.
        if publishing {
            let outstanding = sent - delivered / max(1, subCount)
            if outstanding + o.batch <= o.window {
                batchBytes.withUnsafeBytes { writeAll(pubs[nextPub], $0) }
                sent += o.batch
                nextPub = (nextPub + 1) % pubs.count
                continue
            }
        }
        let n = epoll_wait(ep, &events, Int32(events.count), 1)
        if n > 0 {
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                while true {
                    let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                    if r <= 0 {
                        if r == 0 { die("server closed a connection") }
                        break
                    }
                    if !pubSet.contains(fd) {
                        delivered += buf.withUnsafeBytes { counters[fd]!.count(UnsafeRawBufferPointer(rebasing: $0[0..<r])) }
                    }
                    if r < buf.count { break }
                }
            }
        }
        if now - lastProgress > 1_000_000_000 {
            lastProgress = now
            let secs = Double(now - start) / 1e9
            if o.serverPid > 0, let s = ProcSample.read(pid: o.serverPid) { peakRSS = max(peakRSS, s.rssBytes) }
            progress(o, "[\(o.wire.rawValue)] \(fmt(secs, 1))s sent=\(sent) delivered=\(delivered) rate=\(Int(Double(delivered) / secs))/s")
        }
    }
    let elapsed = Double(monoNanos() - start) / 1e9
    let after = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    if let a = after { peakRSS = max(peakRSS, a.rssBytes) }
    progress(o, "")
    if !o.quiet { print("") }
    let expected = sent * subCount
    let cpu = (before != nil && after != nil) ? after!.cpuSeconds - before!.cpuSeconds : 0
    let user = (before != nil && after != nil) ? after!.userSeconds - before!.userSeconds : 0
    let rate = Double(delivered) / elapsed
    var fields: [(String, String)] = [
        ("mode", "fanout"), ("wire", o.wire.rawValue), ("subs", "\(o.subs)"), ("pubs", "\(o.pubs)"),
        ("size", "\(o.size)"), ("sent", "\(sent)"), ("delivered", "\(delivered)"),
        ("missing", "\(expected - delivered)"), ("seconds", fmt(elapsed, 3)),
        ("deliveries_per_sec", fmt(rate, 0)),
    ]
    if cpu > 0 {
        fields.append(("server_cpu_s", fmt(cpu, 3)))
        fields.append(("deliveries_per_cpu_s", fmt(Double(delivered) / cpu, 0)))
        fields.append(("user_share", fmt(user / cpu, 3)))
    }
    if peakRSS > 0 { fields.append(("server_rss_mb", fmt(Double(peakRSS) / 1048576, 2))) }
    print("RESULT " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    if expected != delivered { exit(3) }
}

// MARK: ping

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
        var ev = epoll_event()
        ev.events = EPOLLIN.rawValue
        ev.data.fd = fd
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)
        fds.append(fd)
    }
    let ping = o.wire.ping
    var sendTimes = [Int32: [UInt64]]()
    var heads = [Int32: Int]()
    var counters = [Int32: PatternCounter]()
    var samples: [UInt64] = []
    samples.reserveCapacity(1 << 20)
    let before = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    let start = monoNanos()
    let end = start + UInt64(o.duration * 1e9)
    for fd in fds {
        var burst: [UInt8] = []
        for _ in 0..<o.inflight { burst += ping }
        let t = monoNanos()
        burst.withUnsafeBytes { writeAll(fd, $0) }
        sendTimes[fd] = Array(repeating: t, count: o.inflight)
        heads[fd] = 0
        counters[fd] = PatternCounter(o.wire.pong)
    }
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
            let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if r == 0 { die("server closed a connection") }
            if r < 0 { continue }
            let got = buf.withUnsafeBytes { counters[fd]!.count(UnsafeRawBufferPointer(rebasing: $0[0..<r])) }
            if got == 0 { continue }
            let t = monoNanos()
            var reissue = 0
            for _ in 0..<got {
                let h = heads[fd]!
                samples.append(t - sendTimes[fd]![h])
                heads[fd] = h + 1
                outstanding -= 1
                if t < end { reissue += 1 }
            }
            // Compact the FIFO of send times, then send as many pings as came back.
            if heads[fd]! > 1024 {
                sendTimes[fd]!.removeFirst(heads[fd]!)
                heads[fd] = 0
            }
            if reissue > 0 {
                var burst: [UInt8] = []
                for _ in 0..<reissue { burst += ping }
                burst.withUnsafeBytes { writeAll(fd, $0) }
                sendTimes[fd]! += Array(repeating: t, count: reissue)
                outstanding += reissue
            }
        }
        if now - lastProgress > 1_000_000_000 {
            lastProgress = now
            progress(o, "[\(o.wire.rawValue)] \(fmt(Double(now - start) / 1e9, 1))s pongs=\(samples.count)")
        }
    }
    let elapsed = Double(monoNanos() - start) / 1e9
    let after = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    progress(o, "")
    if !o.quiet { print("") }
    samples.sort()
    let cpu = (before != nil && after != nil) ? after!.cpuSeconds - before!.cpuSeconds : 0
    var fields: [(String, String)] = [
        ("mode", "ping"), ("wire", o.wire.rawValue), ("conns", "\(o.conns)"), ("inflight", "\(o.inflight)"),
        ("requests", "\(samples.count)"), ("seconds", fmt(elapsed, 3)),
        ("requests_per_sec", fmt(Double(samples.count) / elapsed, 0)),
        ("p50_us", fmt(percentile(samples, 0.50), 1)), ("p99_us", fmt(percentile(samples, 0.99), 1)),
        ("p999_us", fmt(percentile(samples, 0.999), 1)),
    ]
    if cpu > 0 {
        fields.append(("server_cpu_s", fmt(cpu, 3)))
        fields.append(("requests_per_cpu_s", fmt(Double(samples.count) / cpu, 0)))
    }
    print("RESULT " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
}

let options = parseOptions()
signal(SIGPIPE, SIG_IGN)
switch options.mode {
case "fanout": runFanout(options)
case "ping": runPing(options)
default: die("unknown mode \(options.mode) (fanout or ping)")
}
