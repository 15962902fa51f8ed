import CLinux
import Glibc
import Histogram
import LoadClient
import VoiceWire

// voice: --channels N × --speakers M UDP clients; each speaker sends a frame of --size bytes
// (default 160: 20 ms of 64 kbit/s audio) --rate times a second (default 50), or with --flood as
// fast as the sender thread can. Every other member of the channel should receive each frame.
//   --wire voice: tcpserver-voice; tokens minted here with --secret (the coordinator's job,
//                 skipped so the load is the relay's alone); one datagram per frame.
//   --wire turn:  coturn (turnserver --use-auth-secret); each speaker allocates, ChannelBinds
//                 every other member's relayed address, and sends one ChannelData per peer
//                 (TURN relays point to point: no fan-out).
// Reports delivered copies, loss, copies per relay CPU-second (--server-pid) and the
// send → receive latency (the stamp in each frame; same clock, same host).

/// One client socket, connected to the relay.
private func udpClient(_ host: String, _ port: Int) -> (Int32, sockaddr_in) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { die("socket: \(errno)") }
    var sz: Int32 = 4 << 20
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, socklen_t(MemoryLayout<Int32>.size))
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = in_port_t(UInt16(port)).bigEndian
    inet_pton(AF_INET, host, &a.sin_addr)
    let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard r == 0 else { die("connect udp \(host):\(port): \(errno)") }
    return (fd, a)
}

private final class VoiceLoad: @unchecked Sendable {
    let o: Options
    let fds: [Int32]
    /// Per speaker: the bytes to send per frame (voice: one packet; turn: one ChannelData per
    /// peer), with the stamp at `stampOffset` of each.
    var frames: [[[UInt8]]] = []
    let stampOffset: Int
    var sent = 0
    var received = 0
    var hist = newHistogram()
    var stop = false
    let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ o: Options, fds: [Int32], stampOffset: Int) {
        self.o = o
        self.fds = fds
        self.stampOffset = stampOffset
        lock.initialize(to: pthread_mutex_t())
        pthread_mutex_init(lock, nil)
    }
}

private func voiceSetup(_ o: Options) -> VoiceLoad {
    let n = o.channels * o.speakers
    let clients = (0..<n).map { _ in udpClient(o.host, o.port) }
    let fds = clients.map(\.0)
    let payload = [UInt8](repeating: 0x61, count: max(8, o.size))
    if o.voiceWire == "turn" {
        let turn = clients.enumerated().map { i, c in TURNClient(fd: c.0, server: c.1, secret: o.secret, name: "bench\(i)") }
        for (i, t) in turn.enumerated() {
            t.allocate()
            progress(o, "allocated \(i + 1)/\(n)")
        }
        let load = VoiceLoad(o, fds: fds, stampOffset: 4 + VoicePacket.headerBytes)
        for ch in 0..<o.channels {
            let members = (0..<o.speakers).map { ch * o.speakers + $0 }
            for i in members {
                var perPeer: [[UInt8]] = []
                for j in members where j != i {
                    let number = UInt16(0x4000 + (j - ch * o.speakers))
                    turn[i].bind(channel: number, peer: turn[j].relayed)
                    // The peer's client receives this as ChannelData on the number it bound
                    // for us; what we send is ChannelData on the number we bound for it.
                    let data = VoicePacket.make(type: VoicePacket.audio, channel: UInt32(ch + 1), seq: 0, payload: payload)
                    perPeer.append([UInt8(number >> 8), UInt8(number & 0xff), UInt8(data.count >> 8), UInt8(data.count & 0xff)] + data)
                }
                load.frames.append(perPeer)
            }
            progress(o, "bound channel \(ch + 1)/\(o.channels)")
        }
        return load
    }
    let load = VoiceLoad(o, fds: fds, stampOffset: VoicePacket.headerBytes)
    let secret = Array(o.secret.utf8)
    let expiry = UInt64(time(nil) + 3600) * 1000
    let base = UInt32.random(in: 1...(UInt32.max / 2))
    for (i, fd) in fds.enumerated() {
        let channel = base + UInt32(i / o.speakers)
        let token = VoiceToken.issue(secret: secret, channel: channel, user: "bench\(i)", expiryMillis: expiry)
        let join = VoicePacket.make(type: VoicePacket.join, channel: channel, seq: 0, payload: Array(token.utf8))
        var acked = false
        for _ in 0..<5 where !acked {
            _ = join.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 500) > 0 {
                var b = [UInt8](repeating: 0, count: 64)
                let r = b.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                acked = r == VoicePacket.headerBytes && b[1] == VoicePacket.ack
            }
        }
        if !acked { die("voice: no join ack from the relay (is --secret the relay's?)") }
        load.frames.append([VoicePacket.make(type: VoicePacket.audio, channel: channel, seq: 0, payload: payload)])
    }
    return load
}

private func sender(_ load: VoiceLoad, until end: UInt64) {
    let o = load.o
    let n = load.fds.count
    let period = o.flood ? 0 : UInt64(1e9 / (o.rate > 0 ? o.rate : 50))
    // Speakers spread evenly over the frame period, as independent clients would be.
    var due = (0..<n).map { monoNanosBench() + (period == 0 ? 0 : period * UInt64($0) / UInt64(n)) }
    var seq: UInt32 = 0
    var sent = 0
    while true {
        let now = monoNanosBench()
        if now >= end { break }
        var next = UInt64.max
        for i in 0..<n {
            if due[i] > now { next = min(next, due[i]); continue }
            seq &+= 1
            for f in 0..<load.frames[i].count {
                load.frames[i][f].withUnsafeMutableBytes { b in
                    let p = b.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    let at = load.stampOffset
                    writeBE(p + at - 4, UInt64(seq), bytes: 4)   // the voice header's seq
                    writeBE(p + at, monoNanosBench(), bytes: 8)
                    _ = send(load.fds[i], b.baseAddress, b.count, Int32(MSG_DONTWAIT))
                }
            }
            sent += 1
            due[i] = period == 0 ? now : due[i] + period
            next = min(next, due[i])
        }
        if period > 0, next > now {
            let t = monoNanosBench()
            if next > t {
                let wait = next - t
                var ts = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
                nanosleep(&ts, nil)
            }
        }
    }
    pthread_mutex_lock(load.lock)
    load.sent = sent
    pthread_mutex_unlock(load.lock)
}

private func receiver(_ load: VoiceLoad, until end: UInt64) {
    let ep = epoll_create1(0)
    for fd in load.fds {
        var flags = fcntl(fd, F_GETFL)
        flags |= O_NONBLOCK
        _ = fcntl(fd, F_SETFL, flags)
        addToEpoll(ep, fd)
    }
    var events = [epoll_event](repeating: epoll_event(), count: 256)
    var buf = [UInt8](repeating: 0, count: 2048)
    var got = 0
    var h = newHistogram()
    while monoNanosBench() < end {
        let n = epollWait(ep, &events, timeoutNs: 50_000_000)
        guard n > 0 else { continue }
        for e in 0..<Int(n) {
            let fd = events[e].data.fd
            while true {
                let r = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if r <= 0 { break }
                let at = load.stampOffset
                guard r >= at + 8 else { continue }
                let now = monoNanosBench()
                let stamp = buf.withUnsafeBufferPointer { readBE($0.baseAddress! + at, bytes: 8) }
                if stamp > 0 && stamp <= now { h.record(now - stamp) }
                got += 1
            }
        }
    }
    close(ep)
    pthread_mutex_lock(load.lock)
    load.received = got
    load.hist = h
    pthread_mutex_unlock(load.lock)
}

func runVoice(_ o: Options) {
    if o.secret.isEmpty { die("voice: --secret (the relay's secret, or turnserver's static-auth-secret)") }
    tightenTimerSlack()
    let load = voiceSetup(o)
    endProgress(o)
    let start = monoNanosBench()
    let sendEnd = start + UInt64(o.duration * 1e9)
    let recvEnd = sendEnd + UInt64(o.drain * 1e9)
    let before = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    let selfBefore = selfCPUSeconds()
    let r = startBenchThread { receiver(load, until: recvEnd) }
    let s = startBenchThread { sender(load, until: sendEnd) }
    pthread_join(s, nil)
    pthread_join(r, nil)
    let after = o.serverPid > 0 ? ProcSample.read(pid: o.serverPid) : nil
    let peers = o.speakers - 1
    let expected = load.sent * peers
    let loss = expected > 0 ? Double(expected - min(expected, load.received)) / Double(expected) * 100 : 0
    var fields: [(String, String)] = [
        ("mode", "voice"), ("wire", o.voiceWire), ("channels", "\(o.channels)"), ("speakers", "\(o.speakers)"),
        ("rate", o.flood ? "flood" : fmt(o.rate > 0 ? o.rate : 50, 0)), ("size", "\(o.size)"),
        ("duration_s", fmt(o.duration, 1)), ("frames_sent", "\(load.sent)"), ("expected", "\(expected)"),
        ("received", "\(load.received)"), ("loss_pct", fmt(loss, 3)),
        ("relayed_per_s", fmt(Double(load.received) / o.duration, 0)),
        ("client_cpu_s", fmt(selfCPUSeconds() - selfBefore, 3)),
    ]
    fields += cpuFields(before, after, work: load.received, name: "relayed")
    fields += latencyFields(load.hist)
    report(o, fields)
}

private final class BenchThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func startBenchThread(_ body: @escaping () -> Void) -> pthread_t {
    let box = Unmanaged.passRetained(BenchThreadBody(body)).toOpaque()
    var t = pthread_t()
    pthread_create(&t, nil, { arg in
        Unmanaged<BenchThreadBody>.fromOpaque(arg!).takeRetainedValue().run()
        return nil
    }, box)
    return t
}
