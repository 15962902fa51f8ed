// `ping [--count N] [--interval MS]`: {"type":"ping"} → {"type":"pong","ts":…} round trips.

enum Ping {
    static func run(_ o: Options) -> ExitCode {
        let s: Session
        do { s = try Session.start(o) } catch { return error }
        let count = o.count ?? 4
        var rtts: [UInt64] = []
        var failed = false
        var sentCount = 0
        outer: for seq in 1...count {
            if seq > 1 { Terminal.sleepMillis(o.intervalMs) }
            if Signals.interrupted { break }
            let sent = Terminal.monoNanos()
            s.request("ping")
            sentCount += 1
            while true {
                switch s.next(timeoutMs: 5000) {
                case .message(let m, _) where m["type"]?.string == "pong":
                    let rtt = Terminal.monoNanos() - sent
                    rtts.append(rtt)
                    Terminal.line("pong from \(s.socket.address): seq=\(seq) time=\(Terminal.millis(rtt)) ms")
                    continue outer
                case .error(let e):
                    Terminal.error(Render.error(e))
                    failed = true
                    continue outer
                case .timeout:
                    Terminal.line("no pong from \(s.socket.address) for seq=\(seq) within 5 s")
                    continue outer
                case .interrupted:
                    break outer
                case .closed(let why):
                    Terminal.error("\(s.socket.address) closed the connection" + (why.map { ": \($0)" } ?? ""))
                    summary(sent: sentCount, rtts)
                    return failed ? .serverError : .connection
                default:
                    continue
                }
            }
        }
        summary(sent: sentCount, rtts)
        if failed { return .serverError }
        return rtts.count == sentCount || Signals.interrupted ? .ok : .connection
    }

    private static func summary(sent: Int, _ rtts: [UInt64]) {
        var line = "\(sent) ping\(sent == 1 ? "" : "s"), \(rtts.count) pong\(rtts.count == 1 ? "" : "s")"
        if let lo = rtts.min(), let hi = rtts.max() {
            let avg = rtts.reduce(0, +) / UInt64(rtts.count)
            line += ", rtt min/avg/max = \(Terminal.millis(lo))/\(Terminal.millis(avg))/\(Terminal.millis(hi)) ms"
        }
        Terminal.line(line)
    }
}
