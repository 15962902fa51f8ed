import Glibc
import LoadClient

// The run: the event loop, the wind-down, the server's fds/RSS and probe checks, the summary.

extension Soak {
    // MARK: run

    func run() -> Int32 {
        let pid = o.serverPid
        let fdBase = pid > 0 ? fdCount(pid: pid) : -1
        let rssBase = pid > 0 ? rssKiB(pid: pid) : -1
        var fdPeak = fdBase, rssPeak = rssBase

        let probe = Probe(host: o.host, port: o.port, intervalMs: 100)
        probe.start()

        started = monoNanos()
        let end = started + UInt64(o.seconds) * 1_000_000_000
        var members: [Client] = []
        for _ in 0..<o.members {
            guard let c = open(.member, now: started) else { continue }
            hello(c)
            for r in 0..<o.rooms where c.open.count < 2 || chance(0.3) {
                if chance(0.6) || c.open.isEmpty { join(c, r, now: started) }
            }
            members.append(c)
        }
        var nextChurn = started, nextGarbage = started, nextHalfOpen = started, nextSample = started
        var nextReport = started + 10_000_000_000
        var fds: [pollfd] = []

        // poll(2) over every open client (a few hundred at most).
        func pump(_ timeoutMs: Int32) {
            fds.removeAll(keepingCapacity: true)
            for c in clients.values {
                fds.append(pollfd(fd: c.fd, events: Int16(POLLIN) | (c.pollingOut ? Int16(POLLOUT) : 0), revents: 0))
            }
            let n = poll(&fds, nfds_t(fds.count), timeoutMs)
            let now = monoNanos()
            if n > 0 {
                for p in fds where p.revents != 0 {
                    guard let c = clients[p.fd], !c.gone else { continue }
                    if p.revents & Int16(POLLOUT) != 0 { flush(c) }
                    if p.revents & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 {
                        readable(c, now: now)
                    }
                }
            }
            if now >= nextSample && pid > 0 {
                nextSample = now + 500_000_000
                fdPeak = max(fdPeak, fdCount(pid: pid))
                rssPeak = max(rssPeak, rssKiB(pid: pid))
            }
        }

        while true {
            let now = monoNanos()
            if now >= end { break }
            let perSec = 1_000_000_000
            if o.churnPerSec > 0 && now >= nextChurn { startChurner(now: now); nextChurn += UInt64(perSec / o.churnPerSec) }
            if o.garbagePerSec > 0 && now >= nextGarbage { startGarbage(now: now); nextGarbage += UInt64(perSec / o.garbagePerSec) }
            if o.halfOpenPerSec > 0 && now >= nextHalfOpen { _ = open(.halfOpen, now: now); nextHalfOpen += UInt64(perSec / o.halfOpenPerSec) }
            for c in Array(clients.values) where !c.gone && c.nextAction <= now { act(c, now: now) }
            pump(5)
            if now >= nextReport {
                nextReport += 10_000_000_000
                warn("\(o.label.isEmpty ? "" : o.label + " ")\((now - started) / 1_000_000_000)s: open=\(clients.count) sent=\(counts["chat_sent", default: 0]) acked=\(counts["chat_acked", default: 0]) delivered=\(counts["chat_delivered", default: 0]) violations=\(violationCount)")
            }
        }

        // Wind down: the short-lived clients go; members finish their requests.
        stopping = true
        for c in Array(clients.values) where c.kind != .member { vanish(c, .clean) }
        var deadline = monoNanos() + 10_000_000_000
        while members.contains(where: { !$0.gone && !$0.pending.isEmpty }) && monoNanos() < deadline { pump(10) }
        for c in members where !c.gone && !c.pending.isEmpty {
            violation("member \(c.number): \(c.pending.count) requests never acked")
        }
        // Deliveries still on their way (other reactors' inboxes): wait for 1 s of quiet.
        lastChatAt = monoNanos()
        deadline = monoNanos() + 10_000_000_000
        while monoNanos() - lastChatAt < 1_000_000_000 && monoNanos() < deadline { pump(10) }

        let (owed, missing, unexpected) = verify(members)

        probe.stop()
        for (k, c) in members.enumerated() where !c.gone { vanish(c, k % 2 == 0 ? .clean : .reset) }

        // The server must let go of every socket.
        var fdEnd = -1, rssEnd = -1
        if pid > 0 {
            deadline = monoNanos() + 15_000_000_000
            while true {
                fdEnd = fdCount(pid: pid)
                if fdEnd <= fdBase + o.fdSlack || monoNanos() >= deadline { break }
                usleep(100_000)
            }
            usleep(500_000)
            fdEnd = fdCount(pid: pid)
            rssEnd = rssKiB(pid: pid)
            if fdEnd > fdBase + o.fdSlack { violation("server fds: \(fdEnd) at the end vs \(fdBase) at the start") }
            if rssEnd > rssBase + o.rssSlackMB * 1024 {
                violation("server RSS: \(rssEnd / 1024) MB at the end vs \(rssBase / 1024) MB at the start (slack \(o.rssSlackMB) MB)")
            }
            if fdEnd < 0 { violation("server process \(pid) is gone") }
        }

        // Probe figures.
        if let f = probe.failure { violation("probe: \(f)") }
        let rtts = probe.rtts.sorted()
        let p50 = percentile(rtts, 0.5), p99 = percentile(rtts, 0.99), pmax = rtts.last ?? 0
        if pmax > UInt64(o.maxPingMs) * 1_000_000 {
            violation("probe: ping round trip max \(fmtMs(pmax)) ms > \(o.maxPingMs) ms")
        }
        if rtts.count < o.seconds * 5 { violation("probe: only \(rtts.count) pings answered in \(o.seconds) s") }

        for v in violations { warn("VIOLATION: \(v)") }
        if violationCount > violations.count { warn("… \(violationCount - violations.count) more violations") }
        let elapsed = Double(monoNanos() - started) / 1e9
        var fields: [String] = []
        if !o.label.isEmpty { fields.append("mode=\(o.label)") }
        fields += [
            "seconds=\(o.seconds)", "elapsed=\(Int(elapsed))",
            "connections=\(nextNumber - 1)",
            "members=\(o.members)", "churners=\(counts["connections_churner", default: 0])",
            "garbage=\(counts["connections_garbage", default: 0])", "half_open=\(counts["connections_half-open", default: 0])",
            "half_open_closed_by_server=\(counts["half_open_closed_by_server", default: 0])",
            "closes_clean/rst/shutdown=\(counts["close_clean", default: 0])/\(counts["close_rst", default: 0])/\(counts["close_shutdown", default: 0])",
            "sent=\(counts["chat_sent", default: 0])", "large=\(counts["chat_sent_large", default: 0])",
            "acked=\(counts["chat_acked", default: 0])", "delivered=\(counts["chat_delivered", default: 0])",
            "owed=\(owed)", "missing=\(missing)", "unexpected=\(unexpected)",
            "duplicates=\(counts["duplicates", default: 0])", "out_of_order=\(counts["out_of_order", default: 0])",
            "ping_n=\(rtts.count)", "ping_p50_ms=\(fmtMs(p50))", "ping_p99_ms=\(fmtMs(p99))", "ping_max_ms=\(fmtMs(pmax))",
            "ping_lost=\(probe.lost)",
        ]
        if pid > 0 {
            fields += ["server_fds_base/peak/end=\(fdBase)/\(fdPeak)/\(fdEnd)",
                       "server_rss_mb_base/peak/end=\(fmtMB(rssBase))/\(fmtMB(rssPeak))/\(fmtMB(rssEnd))"]
        }
        fields.append("violations=\(violationCount)")
        fields.append(violationCount == 0 ? "result=OK" : "result=FAIL")
        say("soak: " + fields.joined(separator: " "))
        let errs = counts.filter { $0.key.hasPrefix("errors_") }.sorted { $0.key < $1.key }
        if !errs.isEmpty { say("soak: errors received: " + errs.map { "\($0.key.dropFirst(7))=\($0.value)" }.joined(separator: " ")) }
        return violationCount == 0 ? 0 : 1
    }

    func fmtMB(_ kib: Int) -> String {
        if kib < 0 { return "?" }
        let tenths = (kib * 10 + 512) / 1024
        return "\(tenths / 10).\(tenths % 10)"
    }
}
