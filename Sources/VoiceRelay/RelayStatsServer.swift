import Glibc
import Synchronization

/// What /stats and /metrics show.
public struct RelayStatsSnapshot: Sendable {
    public let channels: Int
    public let members: Int
    public let packetsIn: UInt64
    public let packetsOut: UInt64
    public let bytesIn: UInt64
    public let bytesOut: UInt64
    public let joins: UInt64
    public let rebinds: UInt64
    public let acks: UInt64
    public let revocations: UInt64
    public let idleUnbinds: UInt64
    /// By `DropReason.name`.
    public let drops: [String: UInt64]
    /// Receive → send hand-off inside the relay.
    public let latencyP50Micros: Double
    public let latencyP99Micros: Double
    /// The relay process's CPU time (user + system).
    public let cpuSeconds: Double
    public let kernel: KernelUDPCounters

    public var dropsTotal: UInt64 { drops.values.reduce(0, &+) }

    func json(io: String, threads: Int, port: Int) -> String {
        let d = DropReason.allCases.map { "\"\($0.name)\":\(drops[$0.name] ?? 0)" }.joined(separator: ",")
        return """
            {"io":"\(io)","threads":\(threads),"port":\(port),"channels":\(channels),"members":\(members),\
            "packets_in":\(packetsIn),"packets_out":\(packetsOut),"bytes_in":\(bytesIn),"bytes_out":\(bytesOut),\
            "joins":\(joins),"rebinds":\(rebinds),"acks":\(acks),"revocations":\(revocations),"idle_unbinds":\(idleUnbinds),\
            "drops":{\(d)},"drops_total":\(dropsTotal),\
            "latency_us":{"p50":\(latencyP50Micros),"p99":\(latencyP99Micros)},"cpu_seconds":\(cpuSeconds),\
            "kernel_udp":{"in_errors":\(kernel.inErrors),"rcvbuf_errors":\(kernel.rcvbufErrors),"sndbuf_errors":\(kernel.sndbufErrors)}}

            """
    }

    func prometheus() -> String {
        var s = ""
        func metric(_ name: String, _ type: String, _ help: String, _ v: String) {
            s += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(v)\n"
        }
        metric("voice_channels", "gauge", "Channels with bound members", "\(channels)")
        metric("voice_members", "gauge", "Bound members", "\(members)")
        metric("voice_packets_in_total", "counter", "Datagrams received", "\(packetsIn)")
        metric("voice_packets_out_total", "counter", "Copies relayed to members", "\(packetsOut)")
        metric("voice_bytes_in_total", "counter", "Bytes received", "\(bytesIn)")
        metric("voice_bytes_out_total", "counter", "Bytes relayed", "\(bytesOut)")
        metric("voice_joins_total", "counter", "Accepted joins", "\(joins)")
        metric("voice_revocations_total", "counter", "Accepted revocations", "\(revocations)")
        s += "# HELP voice_drops_total Datagrams dropped, by reason\n# TYPE voice_drops_total counter\n"
        for r in DropReason.allCases { s += "voice_drops_total{reason=\"\(r.name)\"} \(drops[r.name] ?? 0)\n" }
        s += "# HELP voice_relay_latency_us Receive to send hand-off\n# TYPE voice_relay_latency_us gauge\n"
        s += "voice_relay_latency_us{quantile=\"0.5\"} \(latencyP50Micros)\nvoice_relay_latency_us{quantile=\"0.99\"} \(latencyP99Micros)\n"
        metric("voice_cpu_seconds_total", "counter", "Relay process CPU time", "\(cpuSeconds)")
        return s
    }
}

/// /stats and /metrics on 127.0.0.1: one plain thread (not a relay thread, so a slow client
/// only delays the next stats request), one request per connection.
final class RelayStatsServer: @unchecked Sendable {
    let port: Int
    private let fd: Int32
    private let stopFlag = RelayFlag()
    private var thread: pthread_t?

    init(port: Int, render: @escaping (String) -> (status: Int, type: String, body: String)?) throws(SocketError) {
        fd = try UDPSocket.listenTCP(port: port)
        self.port = UDPSocket.localPort(fd)
        let fd = self.fd, stop = stopFlag
        thread = startThread {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            while !stop.isSet {
                guard poll(&pfd, 1, 100) > 0 else { continue }
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                Self.serve(c, render)
                close(c)
            }
        }
    }

    func stop() {
        stopFlag.set()
        if let t = thread { pthread_join(t, nil) }
        thread = nil
        close(fd)
    }

    private static func serve(_ c: Int32, _ render: (String) -> (status: Int, type: String, body: String)?) {
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buf = [UInt8](repeating: 0, count: 4096)
        var got = 0
        while got < buf.count {
            let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress! + got, $0.count - got, 0) }
            if n <= 0 { break }
            got += n
            if buf[..<got].withUnsafeBytes({ String(decoding: $0, as: UTF8.self) }).contains("\r\n\r\n") { break }
        }
        let head = String(decoding: buf[..<got], as: UTF8.self)
        let parts = head.split(separator: " ", maxSplits: 2)
        var path = parts.count >= 2 ? String(parts[1]) : "/"
        if let q = path.firstIndex(of: "?") { path = String(path[..<q]) }
        let r = parts.first == "GET" ? render(path) : nil
        let status = r?.status ?? 404
        let body = r?.body ?? "not found\n"
        let reply = "HTTP/1.1 \(status) \(status == 200 ? "OK" : "Not Found")\r\nContent-Type: \(r?.type ?? "text/plain")\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        var bytes = Array(reply.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { send(c, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            off += n
        }
    }
}
