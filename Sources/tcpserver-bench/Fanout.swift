import CLinux
import Glibc
import Histogram
import LoadClient

// The fanout load: N subscribers, M publishers, closed window or paced (--rate).

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
            WebSocketWire.writeSetup(o, fd: fd, port: o.port, setup)
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
    var one = o.wire.publish(room: o.room, payload: Stamp.payload(size: o.size, text: o.payload == "text"))
    if o.ws { one = WebSocketWire.wrap(o.wire, one) }
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
    if o.ws { fields.append(("transport", "websocket")) }
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

func findSubsequence(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
    guard needle.count <= hay.count else { return nil }
    for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
        if Array(hay[i..<(i + needle.count)]) == needle { return i }
    }
    return nil
}
