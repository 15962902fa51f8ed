import CLinux
import Glibc
import LoadClient
import Histogram
import Primitives

// tcpserver-bench: drives a pub/sub server over real sockets and measures it.
//   fanout: N subscribers in one room, M publishers, payload S bytes. Either a closed window (at
//           most W messages not yet delivered to every subscriber: maximum throughput) or, with
//           --rate R, R messages/s paced on a fixed schedule. Every payload carries its publish
//           time (see Stamp); subscribers parse it, so every delivery is counted and timed:
//           publish→deliver p50/p99/p999 (with --rate, from the scheduled send time, so a
//           stall of the tool or the server is not hidden by coordinated omission).
//   ping:   C connections with K pings in flight each; round-trip percentiles.
//   hold:   opens N subscribed connections that then stay idle, and reads the server's RSS at 0
//           connections (before connecting) and after each step of --conns 500,10000.
// --wire tcpserver|redis|nats picks the protocol; --server-pid reads the server's CPU and RSS.
// Output: progress on stderr, one `RESULT key=value …` line on stdout (and a JSON object with
// --json). Exit 3 when deliveries are missing or a connection was closed by the server.

struct Options {
    var mode = "fanout"
    var wire = Wire.tcpserver
    var host = "127.0.0.1"
    var port = 4000
    /// Cluster fan-out: subscribers spread round-robin over these ports (publishers use `port`).
    var subscriberPorts: [Int] = []
    var subs = 50
    var pubs = 1
    var size = 64
    var duration = 5.0
    var window = 256
    var batch = 32
    var rate = 0.0
    var conns = 100
    var connSteps: [Int] = [100]
    var inflight = 8
    var serverPid: Int32 = 0
    var room = "bench"
    var settle = 1.0
    var drain = 3.0
    var quiet = false
    var json = false
    /// tcpserver only: subscribers ask for this codec ("lz4", "zstd") and get binary frames.
    var compress: String? = nil
    /// Payload filler: "x" (repeated 'x') or "text" (English-like words, compressible).
    var payload = "x"
}

let usage = """
usage: tcpserver-bench [fanout|ping|hold] --wire tcpserver|redis|nats --port N [options]
  fanout: --subs N --pubs M --size S [--window W --batch B | --rate MSGS_PER_SEC] [--drain SEC]
          [--sub-ports P1,P2,…]  (cluster: subscribers spread over several nodes)
          [--payload x|text]  (filler: 'x' repeated, or English-like words)
          [--compress lz4|zstd]  (tcpserver: subscribers receive compressed binary frames)
  ping:   --conns C --inflight K
  hold:   --conns N[,N2,…] [--settle SEC]   (needs --server-pid)
  common: --host H --duration SEC --server-pid PID --room NAME --quiet --json
"""

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
    func double(_ s: String) -> Double { guard let v = Double(s) else { die("not a number: \(s)") }; return v }
    while i < args.count {
        switch args[i] {
        case "--wire": guard let w = Wire(rawValue: value()) else { die("--wire: tcpserver, redis or nats") }; o.wire = w
        case "--host": o.host = value()
        case "--port": o.port = int(value())
        case "--sub-ports": o.subscriberPorts = value().split(separator: ",").map { int(String($0)) }
        case "--subs": o.subs = int(value())
        case "--pubs": o.pubs = max(1, int(value()))
        case "--size": o.size = int(value())
        case "--duration": o.duration = double(value())
        case "--window": o.window = int(value())
        case "--batch": o.batch = max(1, int(value()))
        case "--rate": o.rate = double(value())
        case "--conns":
            o.connSteps = value().split(separator: ",").map { int(String($0)) }
            guard let first = o.connSteps.first else { die("--conns needs a number") }
            o.conns = first
        case "--inflight": o.inflight = int(value())
        case "--server-pid": o.serverPid = Int32(int(value()))
        case "--room": o.room = value()
        case "--settle": o.settle = double(value())
        case "--drain": o.drain = double(value())
        case "--quiet": o.quiet = true
        case "--json": o.json = true
        case "--compress":
            let c = value().lowercased()
            guard c == "lz4" || c == "zstd" else { die("--compress: lz4 or zstd") }
            o.compress = c
        case "--payload":
            o.payload = value()
            guard o.payload == "x" || o.payload == "text" else { die("--payload: x or text") }
        case "--help", "-h": print(usage); exit(0)
        default: die("unknown option \(args[i])")
        }
        i += 1
    }
    if o.compress != nil && o.wire != .tcpserver { die("--compress needs --wire tcpserver") }
    return o
}

func progress(_ o: Options, _ text: String) {
    if o.quiet { return }
    let s = "\r\(text)   "
    s.withCString { _ = write(2, $0, strlen($0)) }
}

func endProgress(_ o: Options) {
    if o.quiet { return }
    "\r\u{1B}[K".withCString { _ = write(2, $0, strlen($0)) }
}

func fmt(_ v: Double, _ digits: Int = 2) -> String {
    var m = 1.0
    for _ in 0..<digits { m *= 10 }
    let r = (v * m).rounded() / m
    if digits == 0 { return String(Int(r)) }
    return String(r)
}

/// Latencies in nanoseconds, 1 ns to 10 min, 3 significant digits.
func newHistogram() -> Histogram<UInt64> {
    var h = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
    h.autoResize = true
    return h
}

func latencyFields(_ h: Histogram<UInt64>) -> [(String, String)] {
    func us(_ p: Double) -> String { fmt(Double(h.valueAtPercentile(p)) / 1000.0, 1) }
    return [
        ("p50_us", us(50)), ("p99_us", us(99)), ("p999_us", us(99.9)),
        ("max_us", fmt(Double(h.max) / 1000.0, 1)), ("latency_samples", "\(h.totalCount)"),
    ]
}

func jsonValue(_ v: String) -> String {
    if Double(v) != nil, !v.hasPrefix("+"), v.lowercased() != "nan", v.lowercased() != "inf" { return v }
    var s = "\""
    for c in v.unicodeScalars {
        switch c {
        case "\"": s += "\\\""
        case "\\": s += "\\\\"
        default: s.unicodeScalars.append(c)
        }
    }
    return s + "\""
}

func report(_ o: Options, _ fields: [(String, String)]) {
    print("RESULT " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    if o.json {
        print("{" + fields.map { "\"\($0.0)\":\(jsonValue($0.1))" }.joined(separator: ",") + "}")
    }
}

func cpuFields(_ before: ProcSample?, _ after: ProcSample?, work: Int, name: String) -> [(String, String)] {
    guard let b = before, let a = after else { return [] }
    let cpu = a.cpuSeconds - b.cpuSeconds
    let user = a.userSeconds - b.userSeconds
    guard cpu > 0 else { return [("server_cpu_s", "0")] }
    return [
        ("server_cpu_s", fmt(cpu, 3)),
        ("\(name)_per_cpu_s", fmt(Double(work) / cpu, 0)),
        ("user_share", fmt(user / cpu, 3)),
    ]
}

/// Opens `count` connections that subscribe to the room, `batch` at a time (so the listen
/// backlog never overflows), each confirmed before the next batch. Confirmed sockets are made
/// non-blocking and added to `ep`; `drainAll` runs between batches so earlier connections never
/// leave unread bytes piling up in the server (presence notices, for instance).
/// With `o.compress`, the set-up reads the (binary-framed) replies exactly and hands each
/// subscriber's bytes past its join reply to `leftover`.
func openSubscribers(_ o: Options, count: Int, firstIndex: Int, ep: Int32, batch: Int = 200,
                     drainAll: () -> Void = {}, leftover: (Int32, [UInt8]) -> Void = { _, _ in }) -> [Int32] {
    var out: [Int32] = []
    out.reserveCapacity(count)
    while out.count < count {
        let n = min(batch, count - out.count)
        var fresh: [Int32] = []
        for k in 0..<n {
            let i = firstIndex + out.count + k
            let port = o.subscriberPorts.isEmpty ? o.port : o.subscriberPorts[i % o.subscriberPorts.count]
            let fd = connectTCP(o.host, port)
            o.wire.subscribe(user: "sub\(firstIndex + out.count + k)", room: o.room, compress: o.compress).withUnsafeBytes { writeAll(fd, $0) }
            fresh.append(fd)
        }
        for fd in fresh {
            if let codec = o.compress {
                leftover(fd, awaitJoinedBinary(fd, codec: codec))
            } else {
                awaitMarker(fd, o.wire.subscribedMarker)
            }
            setNonBlocking(fd)
            addToEpoll(ep, fd)
        }
        out += fresh
        drainAll()
        if count > batch {
            progress(o, "[\(o.wire.rawValue)] connected \(firstIndex + out.count)")
        }
    }
    return out
}

// MARK: fan-out

func runFanout(_ o: Options) {
    tightenTimerSlack()
    let ep = epoll_create1(0)
    var pendingBytes: [Int32: [UInt8]] = [:]
    let subs = openSubscribers(o, count: o.subs, firstIndex: 0, ep: ep, leftover: { fd, rest in pendingBytes[fd] = rest })
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
        addToEpoll(ep, fd)
        pubs.append(fd)
    }
    let maxFd = Int((subs + pubs).max() ?? 0)
    var isSub = [Bool](repeating: false, count: maxFd + 1)
    var perSub = [Int](repeating: 0, count: maxFd + 1)
    var scanners = [StampScanner](repeating: StampScanner(), count: maxFd + 1)
    for fd in subs { isSub[Int(fd)] = true }
    // Compressed mode: deliveries are counted from binary frames (see CompressedStats).
    let compressed = o.compress != nil
    var readers = [FrameReader](repeating: FrameReader(), count: compressed ? maxFd + 1 : 0)
    var verifiedPerSub = [Int](repeating: 0, count: compressed ? maxFd + 1 : 0)
    let cs = CompressedStats()
    var subBytes = 0  // everything subscribers received after set-up

    // One publish with a zero stamp, and where its digits sit.
    let one = o.wire.publish(room: o.room, payload: Stamp.payload(size: o.size, text: o.payload == "text"))
    guard let stampAt = findSubsequence(one, Stamp.prefix).map({ $0 + Stamp.prefix.count }) else {
        die("stamp not found in the publish bytes")
    }
    let paced = o.rate > 0
    let perWrite = paced ? 1 : o.batch
    var batchBytes: [UInt8] = []
    for _ in 0..<perWrite { batchBytes += one }

    var hist = newHistogram()
    let toolCPU0 = selfCPUSeconds()
    let before = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    var peakRSS = before?.rssBytes ?? 0
    let start = monoNanos()
    let end = start + UInt64(o.duration * 1e9)
    let interval = paced ? max(1, UInt64(1e9 / o.rate)) : 0
    var sent = 0
    var delivered = 0          // by every subscriber, closed ones included
    var deliveredByClosed = 0  // by subscribers the server has since closed
    // Bytes the set-up read past each join reply (normally none: nothing is published yet).
    for (fd, rest) in pendingBytes where !rest.isEmpty {
        let got = rest.withUnsafeBytes {
            consumeFrames(cs, &readers[Int(fd)], &verifiedPerSub[Int(fd)], $0, now: monoNanos(), hist: &hist)
        }
        delivered += got
        perSub[Int(fd)] += got
    }
    var liveSubs = subs.count
    var nextPub = 0
    var events = [epoll_event](repeating: epoll_event(), count: 256)
    var buf = [UInt8](repeating: 0, count: 1 << 18)
    var pacedBuf: [[UInt8]] = Array(repeating: [], count: pubs.count)
    var lastProgress = start
    var publishing = true
    var drainDeadline: UInt64 = 0
    while true {
        var now = monoNanos()
        if publishing && now >= end {
            publishing = false
            drainDeadline = now + UInt64(o.drain * 1e9)
        }
        let liveDelivered = delivered - deliveredByClosed
        if !publishing && (liveDelivered >= sent * liveSubs || now >= drainDeadline) { break }
        var timeoutNs: UInt64 = 1_000_000
        if publishing && !paced {
            // Closed window: publish only while fewer than `window` messages are outstanding.
            let outstanding = sent - liveDelivered / max(1, liveSubs)
            if outstanding + o.batch <= o.window {
                batchBytes.withUnsafeMutableBytes { b in
                    for k in 0..<o.batch { Stamp.write(now, into: b, at: k * one.count + stampAt) }
                }
                batchBytes.withUnsafeBytes { writeAll(pubs[nextPub], $0) }
                sent += o.batch
                nextPub = (nextPub + 1) % pubs.count
                continue
            }
        } else if publishing {
            // Paced: every message due by now goes out, stamped with its scheduled time, each
            // to the next publisher in turn.
            let due = min(Int((now - start) / interval) + 1, sent + 4096)
            if due > sent {
                for k in sent..<due {
                    let p = k % pubs.count
                    let at = pacedBuf[p].count + stampAt
                    pacedBuf[p] += one
                    pacedBuf[p].withUnsafeMutableBytes { Stamp.write(start + UInt64(k) * interval, into: $0, at: at) }
                }
                for p in 0..<pubs.count where !pacedBuf[p].isEmpty {
                    pacedBuf[p].withUnsafeBytes { writeAll(pubs[p], $0) }
                    pacedBuf[p].removeAll(keepingCapacity: true)
                }
                sent = due
                now = monoNanos()
            }
            let next = start + UInt64(sent) * interval
            timeoutNs = next > now ? min(next - now, 10_000_000) : 0
        }
        let n = epollWait(ep, &events, timeoutNs: timeoutNs)
        if n > 0 {
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                let slot = Int(fd)
                while true {
                    let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                    if r <= 0 {
                        let e = r < 0 ? clinux_errno() : 0
                        if r < 0 && (e == EAGAIN || e == EINTR) { break }
                        // Closed by the server (NATS cuts slow consumers, Redis past its
                        // output-buffer limit): count it, keep going; the missing deliveries
                        // show in the result.
                        guard isSub[slot] else { die("server closed a publisher connection (errno \(e))") }
                        epoll_ctl(ep, EPOLL_CTL_DEL, fd, nil)
                        close(fd)
                        isSub[slot] = false
                        liveSubs -= 1
                        deliveredByClosed += perSub[slot]
                        break
                    }
                    if isSub[slot] && compressed {
                        subBytes += r
                        let t = monoNanos()
                        let got = buf.withUnsafeBytes { b in
                            consumeFrames(cs, &readers[slot], &verifiedPerSub[slot], UnsafeRawBufferPointer(rebasing: b[0..<r]),
                                          now: t, hist: &hist)
                        }
                        delivered += got
                        perSub[slot] += got
                    } else if isSub[slot] {
                        subBytes += r
                        let t = monoNanos()
                        let got = buf.withUnsafeBytes { b in
                            scanners[slot].scan(UnsafeRawBufferPointer(rebasing: b[0..<r])) { stamp in
                                hist.record(t > stamp ? t - stamp : 0)
                            }
                        }
                        delivered += got
                        perSub[slot] += got
                    }
                    if r < buf.count { break }
                }
            }
        }
        if now - lastProgress > 1_000_000_000 {
            lastProgress = now
            let secs = Double(now - start) / 1e9
            if o.serverPid > 0, let s = ProcSample.read(pid: o.serverPid) { peakRSS = max(peakRSS, s.rssBytes) }
            progress(o, "[\(o.wire.rawValue)] \(fmt(secs, 1))s sent=\(sent) delivered=\(delivered) rate=\(Int(Double(delivered) / secs))/s p99=\(fmt(Double(hist.valueAtPercentile(99)) / 1000, 0))us")
        }
    }
    let elapsed = Double(monoNanos() - start) / 1e9
    let after = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    if let a = after { peakRSS = max(peakRSS, a.rssBytes) }
    endProgress(o)
    let expected = sent * subs.count
    let rate = Double(delivered) / elapsed
    var fields: [(String, String)] = [
        ("mode", "fanout"), ("wire", o.wire.rawValue), ("subs", "\(o.subs)"), ("pubs", "\(o.pubs)"),
        ("size", "\(max(o.size, Stamp.length))"),
        ("sent", "\(sent)"), ("delivered", "\(delivered)"),
        ("missing", "\(expected - delivered)"), ("closed_subs", "\(subs.count - liveSubs)"),
        ("seconds", fmt(elapsed, 3)), ("deliveries_per_sec", fmt(rate, 0)),
    ]
    if paced { fields.append(("rate_target", fmt(o.rate, 0))) }
    fields.append(("sent_per_sec", fmt(Double(sent) / min(elapsed, o.duration), 0)))
    fields.append(("payload", o.payload))
    if let codec = o.compress {
        // Chat frames only (5-byte header included); raw = the JSON they carry, uncompressed.
        fields += [
            ("compress", codec),
            ("wire_bytes_per_delivery", fmt(Double(cs.wireBytes) / Double(max(delivered, 1)), 1)),
            ("raw_bytes_per_delivery", fmt(Double(cs.rawBytes) / Double(max(delivered, 1)), 1)),
            ("wire_ratio", fmt(Double(cs.rawBytes) / Double(max(cs.wireBytes, 1)), 3)),
            ("wire_mb", fmt(Double(cs.wireBytes) / 1e6, 2)), ("raw_mb", fmt(Double(cs.rawBytes) / 1e6, 2)),
            ("frames_compressed", "\(cs.compressedFrames)"), ("frames_raw", "\(cs.rawFrames)"),
            ("frames_other", "\(cs.otherFrames)"),
            ("verified", "\(cs.verified)"), ("verify_failed", "\(cs.verifyFailed)"),
        ]
        if cs.undeclared > 0 { fields.append(("size_unreadable", "\(cs.undeclared)")) }
    } else {
        // Everything subscribers read (framing and any presence notices included).
        fields.append(("wire_bytes_per_delivery", fmt(Double(subBytes) / Double(max(delivered, 1)), 1)))
    }
    fields += latencyFields(hist)
    fields += cpuFields(before, after, work: delivered, name: "deliveries")
    if peakRSS > 0 { fields.append(("server_rss_mb", fmt(Double(peakRSS) / 1048576, 2))) }
    fields.append(("tool_cpu_s", fmt(selfCPUSeconds() - toolCPU0, 3)))
    report(o, fields)
    if expected != delivered || cs.verifyFailed > 0 { exit(3) }
}

/// Compressed mode: parses `chunk` as binary frames for one subscriber and returns the chat
/// deliveries it completed (see CompressedStats). Stamps found in verified (decompressed) or
/// raw chat frames go to `hist`.
func consumeFrames(_ cs: CompressedStats, _ reader: inout FrameReader, _ verifiedHere: inout Int,
                   _ chunk: UnsafeRawBufferPointer, now t: UInt64, hist: inout Histogram<UInt64>) -> Int {
    var got = 0
    reader.feed(chunk, wantBody: { codec in
        if codec == 0 { return true }
        return verifiedHere < cs.verifyFirst || (cs.compressedFrames + 1) % cs.verifyEvery == 0
    }) { codec, wire, collected, head, body in
        func record(_ json: UnsafeRawBufferPointer) {
            var scanner = StampScanner()
            _ = scanner.scan(json) { stamp in hist.record(t > stamp ? t - stamp : 0) }
        }
        if codec == 0 {
            let isChat = body.withUnsafeBytes { startsWith($0, chatPrefix) }
            guard isChat else { cs.otherFrames += 1; return }
            got += 1
            cs.rawFrames += 1
            cs.wireBytes += wire
            cs.rawBytes += body.count
            body.withUnsafeBytes { record($0) }
            return
        }
        // A compressed frame: only chats are ever large enough to be compressed.
        got += 1
        cs.compressedFrames += 1
        cs.codecsSeen.insert(codec)
        cs.wireBytes += wire
        if let n = declaredSize(codec: codec, head: head) { cs.rawBytes += n } else { cs.undeclared += 1 }
        guard collected else { return }
        if let stamp = cs.verify(codec: codec, payload: body, declared: declaredSize(codec: codec, head: head)) {
            verifiedHere += 1
            if let stamp { hist.record(t > stamp ? t - stamp : 0) }
        }
    }
    return got
}

func findSubsequence(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
    guard needle.count <= hay.count else { return nil }
    for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
        if Array(hay[i..<(i + needle.count)]) == needle { return i }
    }
    return nil
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

// MARK: hold

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

let options = parseOptions()
signal(SIGPIPE, SIG_IGN)
raiseNoFileLimit()
switch options.mode {
case "fanout": runFanout(options)
case "ping": runPing(options)
case "hold": runHold(options)
default: die("unknown mode \(options.mode) (fanout, ping or hold)")
}
