import Glibc
import LoadClient

// tcpserver-soak: many clients against a running tcpserver for N seconds, then checks.
//
//   members   stay connected the whole run; join and leave rooms, send small and large (up to
//             ~30 KB) chat messages with an id (acked), now and then a malformed line
//   churners  hello, join, send a few messages, then vanish: clean close, RST (SO_LINGER 0),
//             or shutdown(SHUT_WR) and close, at random points (before or after their acks)
//   half-open connect and never send (the server's hello timeout must close them)
//   garbage   junk first bytes, junk JSON lines, absurd binary frame headers, partial lines
//   probe     its own thread and connection: a ping every 100 ms, round trips recorded
//
// Every chat text is "m<sender>.<seq>.<padding>", seq counting per sender. At the end:
//   - every message a surviving member should have got arrived exactly once, in order per
//     sender: a message is owed to member R when it was sent after R saw "joined" and acked
//     before R sent leave_room (so the server surely handled it while R was in the room);
//   - nothing arrived that the server handled surely outside R's membership, or twice, or out
//     of order, or to its own sender;
//   - members got no errors but the bad_json they provoked, and were never disconnected;
//   - the server's fd count (/proc/PID/fd) is back to its baseline, RSS near it;
//   - probe round trips: max <= --max-ping-ms.
// Prints one summary line; exit 1 on any violation, 2 on a usage or set-up error.

struct Options {
    var host = "127.0.0.1"
    var port = 0
    var seconds = 30
    var serverPid: Int32 = 0
    var seed: UInt64 = 0
    var members = 24
    var rooms = 4
    var churnPerSec = 20
    var garbagePerSec = 5
    var halfOpenPerSec = 2
    var maxPingMs = 200
    var rssSlackMB = 32
    var fdSlack = 0
    var label = ""
}

func parseOptions() -> Options {
    var o = Options()
    o.seed = monoNanos()
    let args = Array(CommandLine.arguments.dropFirst())
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { die("\(args[i - 1]) needs a value") }
        return args[i]
    }
    func int(_ s: String) -> Int { guard let v = Int(s) else { die("not a number: \(s)") }; return v }
    while i < args.count {
        switch args[i] {
        case "--host": o.host = value()
        case "--port": o.port = int(value())
        case "--seconds": o.seconds = int(value())
        case "--server-pid": o.serverPid = Int32(int(value()))
        case "--seed": o.seed = UInt64(int(value()))
        case "--members": o.members = int(value())
        case "--rooms": o.rooms = int(value())
        case "--churn": o.churnPerSec = int(value())
        case "--garbage": o.garbagePerSec = int(value())
        case "--half-open": o.halfOpenPerSec = int(value())
        case "--max-ping-ms": o.maxPingMs = int(value())
        case "--rss-slack-mb": o.rssSlackMB = int(value())
        case "--fd-slack": o.fdSlack = int(value())
        case "--label": o.label = value()
        case "--help", "-h":
            say("usage: tcpserver-soak --port P --seconds N [--server-pid PID] [--host H] [--seed S] [--members N] [--rooms N] [--churn N/s] [--garbage N/s] [--half-open N/s] [--max-ping-ms MS] [--rss-slack-mb MB] [--fd-slack N] [--label TEXT]")
            exit(0)
        default: die("unknown option \(args[i]) (see --help)")
        }
        i += 1
    }
    if o.port <= 0 { die("--port is required") }
    if o.rooms < 1 || o.rooms > 200 { die("--rooms: 1…200") }
    return o
}

enum Kind: String { case member, churner, halfOpen = "half-open", garbage }

/// One membership of a client in a room, with the client-side times that bound the server's.
struct Interval {
    var room: Int
    var joinSent: UInt64
    var joinedRecv: UInt64 = 0          // 0: "joined" not seen yet
    var leaveSent: UInt64 = .max
    var leftRecv: UInt64 = .max
}

struct Message {
    var sender: Int
    var room: Int
    var sentAt: UInt64
    var ackAt: UInt64 = 0               // 0: never acked
}

enum Pending { case chat(Int), join(Int), leave(Int), ping }

final class Client {
    let number: Int
    let fd: Int32
    let kind: Kind
    var inbuf: [UInt8] = []
    var out: [UInt8] = []
    var outOff = 0
    var pollingOut = false
    var nextId = 1
    var pending: [Int: Pending] = [:]
    var intervals: [Interval] = []
    /// Index into `intervals` of the open membership per room, if any.
    var open: [Int: Int] = [:]
    var seq = 0
    var gone = false
    var nextAction: UInt64
    var vanishAt: UInt64 = .max
    var sendsLeft = 0
    var expectedBadJSON = 0
    // Receiving side.
    var seen: Set<UInt64> = []
    var lastSeq: [Int: Int] = [:]       // (sender << 8 | room) → last seq
    var helloSent = false

    init(number: Int, fd: Int32, kind: Kind, now: UInt64) {
        self.number = number
        self.fd = fd
        self.kind = kind
        nextAction = now
    }

    func openMembership(_ room: Int) -> Interval? { open[room].map { intervals[$0] } }
}

final class Soak {
    let o: Options
    var rng: SplitMix
    var clients: [Int32: Client] = [:]
    var nextNumber = 1
    var messages: [Message] = []
    var messageIndex: [UInt64: Int] = [:]   // sender << 32 | seq
    var violations: [String] = []
    var violationCount = 0
    var counts: [String: Int] = [:]
    var recvBuf = [UInt8](repeating: 0, count: 1 << 16)
    var lastChatAt: UInt64 = 0
    var stopping = false
    var started: UInt64 = 0

    init(_ o: Options) {
        self.o = o
        rng = SplitMix(seed: o.seed)
    }

    func violation(_ s: String) {
        violationCount += 1
        if violations.count < 20 { violations.append(s) }
    }

    func bump(_ k: String, _ n: Int = 1) { counts[k, default: 0] += n }

    func roomName(_ r: Int) -> String { "soak-r\(r)" }

    func random(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }

    // MARK: connections

    func open(_ kind: Kind, now: UInt64) -> Client? {
        let fd = connectTCP(o.host, o.port)
        if fd < 0 {
            if kind == .member { violation("member connect failed: errno \(errno_())") }
            bump("connect_failed")
            return nil
        }
        setNonBlocking(fd)
        let c = Client(number: nextNumber, fd: fd, kind: kind, now: now)
        nextNumber += 1
        clients[fd] = c
        bump("connections_\(kind.rawValue)")
        return c
    }

    enum Vanish { case clean, reset, shutdown }

    func vanish(_ c: Client, _ how: Vanish) {
        if c.gone { return }
        c.gone = true
        switch how {
        case .clean: close(c.fd); bump("close_clean")
        case .reset: closeWithReset(c.fd); bump("close_rst")
        case .shutdown: Glibc.shutdown(c.fd, Int32(SHUT_WR)); close(c.fd); bump("close_shutdown")
        }
        clients[c.fd] = nil
        if c.kind == .member && !stopping { violation("member \(c.number) vanished during the run") }
        // Members' receive records are kept for the final check.
        if c.kind == .member { finished.append(c) }
    }
    var finished: [Client] = []

    func queue(_ c: Client, _ bytes: [UInt8]) {
        if c.gone { return }
        if c.out.count - c.outOff == 0 {
            c.out.removeAll(keepingCapacity: true)
            c.outOff = 0
        }
        c.out += bytes
        flush(c)
    }

    func flush(_ c: Client) {
        while c.outOff < c.out.count {
            let n = c.out.withUnsafeBytes { send(c.fd, $0.baseAddress! + c.outOff, $0.count - c.outOff, Int32(MSG_NOSIGNAL)) }
            if n > 0 { c.outOff += n; continue }
            let e = errno_()
            if e == EINTR { continue }
            if e == EAGAIN {
                c.pollingOut = true
                return
            }
            // The server closed on us (expected for garbage; never for members).
            if c.kind == .member { violation("send to member \(c.number) failed: errno \(e)") }
            peerClosed(c)
            return
        }
        c.out.removeAll(keepingCapacity: true)
        c.outOff = 0
        c.pollingOut = false
    }

    func peerClosed(_ c: Client) {
        if c.gone { return }
        switch c.kind {
        case .member: if !stopping { violation("server closed member \(c.number)") }
        case .halfOpen: bump("half_open_closed_by_server")
        case .garbage: bump("garbage_closed_by_server")
        case .churner: bump("churner_closed_by_server")
        }
        vanish(c, .clean)
    }

    // MARK: protocol

    func request(_ c: Client, _ json: String, _ p: Pending) {
        let id = c.nextId
        c.nextId += 1
        c.pending[id] = p
        queue(c, bytes(json.dropLast() + ",\"id\":\(id)}\n"))
    }

    func hello(_ c: Client) {
        c.helloSent = true
        queue(c, bytes("{\"type\":\"hello\",\"user\":\"soak\(c.number)\"}\n"))
    }

    func join(_ c: Client, _ room: Int, now: UInt64) {
        c.open[room] = c.intervals.count
        c.intervals.append(Interval(room: room, joinSent: now))
        request(c, "{\"type\":\"join_room\",\"room\":\"\(roomName(room))\"}", .join(room))
    }

    func leave(_ c: Client, _ room: Int, now: UInt64) {
        guard let k = c.open[room] else { return }
        c.intervals[k].leaveSent = now
        c.open[room] = nil
        request(c, "{\"type\":\"leave_room\",\"room\":\"\(roomName(room))\"}", .leave(k))
    }

    func sendChat(_ c: Client, _ room: Int, now: UInt64) {
        c.seq += 1
        let size: Int
        if chance(0.05) { size = random(5_000...30_000) }
        else { size = random(0...200) }
        let text = "m\(c.number).\(c.seq)." + String(repeating: "x", count: size)
        let idx = messages.count
        messages.append(Message(sender: c.number, room: room, sentAt: now))
        messageIndex[UInt64(c.number) << 32 | UInt64(c.seq)] = idx
        request(c, "{\"type\":\"send_chat\",\"room\":\"\(roomName(room))\",\"text\":\"\(text)\"}", .chat(idx))
        bump("chat_sent")
        if size >= 5000 { bump("chat_sent_large") }
    }

    /// A room the client has fully joined (saw "joined") and not left.
    func joinedRoom(_ c: Client) -> Int? {
        let ready = c.open.filter { c.intervals[$0.value].joinedRecv != 0 }.map(\.key).sorted()
        return ready.isEmpty ? nil : ready[random(0...(ready.count - 1))]
    }

    func inFlight(_ c: Client) -> Int { c.pending.count }

    // MARK: receiving

    func readable(_ c: Client, now: UInt64) {
        while !c.gone {
            let n = recvBuf.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 {
                c.inbuf.append(contentsOf: recvBuf[0..<n])
                if n < recvBuf.count { break }
                continue
            }
            if n == 0 { processLines(c, now: now); peerClosed(c); return }
            let e = errno_()
            if e == EINTR { continue }
            if e == EAGAIN { break }
            processLines(c, now: now)
            if c.kind == .member && !stopping { violation("recv on member \(c.number): errno \(e)") }
            peerClosed(c)
            return
        }
        processLines(c, now: now)
    }

    func processLines(_ c: Client, now: UInt64) {
        var start = 0
        let buf = c.inbuf
        var i = 0
        while let nl = buf[i...].firstIndex(of: 0x0A) {
            handleLine(c, buf[start..<nl], now: now)
            start = nl + 1
            i = start
        }
        if start > 0 { c.inbuf.removeFirst(start) }
    }

    static let kType = bytes("\"type\":\"")
    static let kRoom = bytes("\"room\":\"")
    static let kText = bytes("\"text\":\"m")
    static let kId = bytes("\"id\":")
    static let kCode = bytes("\"code\":\"")

    func handleLine(_ c: Client, _ line: ArraySlice<UInt8>, now: UInt64) {
        if c.kind == .garbage || c.kind == .halfOpen { return }
        guard let type = stringField(line, Self.kType) else {
            if c.kind == .member { violation("member \(c.number) got a line without a type: \(String(decoding: line.prefix(120), as: UTF8.self))") }
            return
        }
        switch String(decoding: type, as: UTF8.self) {
        case "chat": chat(c, line, now: now)
        case "ack":
            guard let id = intField(line, Self.kId), let p = c.pending.removeValue(forKey: id) else {
                violation("client \(c.number): ack for an unknown id: \(String(decoding: line, as: UTF8.self))")
                return
            }
            if case .chat(let idx) = p { messages[idx].ackAt = now; bump("chat_acked") }
        case "joined":
            if let r = stringField(line, Self.kRoom), let room = roomNumber(r), let k = c.open[room] {
                if c.intervals[k].joinedRecv == 0 { c.intervals[k].joinedRecv = now }
            }
        case "left":
            if let r = stringField(line, Self.kRoom), let room = roomNumber(r) {
                for k in c.intervals.indices where c.intervals[k].room == room && c.intervals[k].leaveSent != .max && c.intervals[k].leftRecv == .max {
                    c.intervals[k].leftRecv = now
                    break
                }
            }
        case "error":
            let code = stringField(line, Self.kCode).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            bump("errors_\(c.kind.rawValue)_\(code)")
            if code == "bad_json" && c.expectedBadJSON > 0 {
                c.expectedBadJSON -= 1
            } else if c.kind == .member || (c.kind == .churner && code != "bad_json") {
                violation("\(c.kind.rawValue) \(c.number) got an error: \(String(decoding: line.prefix(200), as: UTF8.self))")
            }
        case "welcome", "user_joined", "user_left", "pong", "ping": break
        case "shutdown": if !stopping { violation("server sent shutdown") }
        default:
            violation("client \(c.number): unexpected message \(String(decoding: line.prefix(120), as: UTF8.self))")
        }
    }

    func roomNumber(_ r: ArraySlice<UInt8>) -> Int? {
        let s = String(decoding: r, as: UTF8.self)
        guard s.hasPrefix("soak-r") else { return nil }
        return Int(s.dropFirst(6))
    }

    func chat(_ c: Client, _ line: ArraySlice<UInt8>, now: UInt64) {
        lastChatAt = now
        bump("chat_delivered")
        guard let r = stringField(line, Self.kRoom), let room = roomNumber(r),
              let t = find(line, Self.kText) else {
            violation("client \(c.number): malformed chat \(String(decoding: line.prefix(120), as: UTF8.self))")
            return
        }
        // "m<sender>.<seq>."
        var i = t
        var sender = 0, seq = 0
        while i < line.endIndex, line[i] != UInt8(ascii: ".") { sender = sender * 10 + Int(line[i] &- 48); i += 1 }
        i += 1
        while i < line.endIndex, line[i] != UInt8(ascii: ".") { seq = seq * 10 + Int(line[i] &- 48); i += 1 }
        let key = UInt64(sender) << 32 | UInt64(seq)
        guard let idx = messageIndex[key] else { violation("client \(c.number): chat m\(sender).\(seq) was never sent"); return }
        let m = messages[idx]
        if m.room != room { violation("m\(sender).\(seq) sent to room \(m.room) arrived as room \(room)") }
        if sender == c.number { violation("client \(c.number) got its own message m\(sender).\(seq) (no echo asked)") }
        if !c.seen.insert(key).inserted { violation("client \(c.number) got m\(sender).\(seq) twice"); bump("duplicates"); return }
        let ok = sender << 8 | room
        if let last = c.lastSeq[ok], last >= seq {
            violation("client \(c.number): m\(sender).\(seq) in room \(room) after m\(sender).\(last)")
            bump("out_of_order")
        }
        c.lastSeq[ok] = seq
    }

    // MARK: behaviour

    func act(_ c: Client, now: UInt64) {
        switch c.kind {
        case .member:
            c.nextAction = now + UInt64(random(40...250)) * 1_000_000
            if stopping { return }
            let x = random(0...99)
            if x < 70 {
                if inFlight(c) < 8, let room = joinedRoom(c) { sendChat(c, room, now: now) }
            } else if x < 84 {
                let notIn = (0..<o.rooms).filter { c.open[$0] == nil }
                if !notIn.isEmpty { join(c, notIn[random(0...(notIn.count - 1))], now: now) }
            } else if x < 96 {
                if c.open.count > 1, let room = joinedRoom(c) { leave(c, room, now: now) }
            } else if x < 98 {
                c.expectedBadJSON += 1
                queue(c, bytes("{\"type\":\"send_chat\",\"room\":oops}\n"))
            } else {
                request(c, "{\"type\":\"ping\"}", .ping)
            }
        case .churner:
            if now >= c.vanishAt {
                let how: Vanish = [.clean, .reset, .shutdown][random(0...2)]
                vanish(c, how)
                return
            }
            c.nextAction = now + UInt64(random(10...120)) * 1_000_000
            if c.sendsLeft > 0, let room = joinedRoom(c) {
                sendChat(c, room, now: now)
                c.sendsLeft -= 1
                if c.sendsLeft == 0 {
                    // Vanish right away (acks possibly unseen), or once everything is acked.
                    c.vanishAt = chance(0.5) ? now : now + 300_000_000
                }
            } else if c.sendsLeft == 0 && c.pending.isEmpty && c.vanishAt > now + 300_000_000 {
                c.vanishAt = now
            }
            if chance(0.03) { queue(c, bytes("{\"type\":\n")) ; c.expectedBadJSON += 1 }
        case .garbage:
            if now >= c.vanishAt { vanish(c, chance(0.5) ? .reset : .clean); return }
            c.nextAction = now + 100_000_000
        case .halfOpen:
            c.nextAction = .max
        }
    }

    func startChurner(now: UInt64) {
        guard let c = open(.churner, now: now) else { return }
        hello(c)
        join(c, random(0...(o.rooms - 1)), now: now)
        c.sendsLeft = random(0...6)
        // Some vanish early whatever happened (maybe before joining or with sends queued).
        c.vanishAt = chance(0.25) ? now + UInt64(random(0...200)) * 1_000_000 : now + 5_000_000_000
    }

    func startGarbage(now: UInt64) {
        guard let c = open(.garbage, now: now) else { return }
        var junk: [UInt8]
        switch random(0...5) {
        case 0: junk = (0..<random(1...64)).map { _ in UInt8(random(0...255)) }
                if let f = junk.first, f == 0x7B || f == 0 || f == 0x20 || (f >= 0x41 && f <= 0x50) { junk[0] = 0x7E }
        case 1: junk = bytes("{\"type\":\"hello\"") + (0..<random(1...200)).map { _ in UInt8(random(0...255)) } + [0x0A]
        case 2: junk = [0, 0x7F, 0xFF, 0xFF, 0xFF, 0] + (0..<random(0...100)).map { _ in UInt8(random(0...255)) }
        case 3: junk = [0, 0, 0, 0, 0, 0, 0, 9, 0] + bytes("{\"type\"")   // len-0 frame, then a partial one
        case 4: junk = bytes("{\"type\":\"hello\",\"user\":\"") + [UInt8](repeating: 0x61, count: random(100...70_000))   // no newline
        default: junk = bytes("GET /") + (0..<random(0...300)).map { _ in UInt8(random(0x20...0x7E)) } + bytes("\r\n\r\n")
        }
        queue(c, junk)
        c.vanishAt = now + UInt64(random(100...2000)) * 1_000_000
        c.nextAction = now + 100_000_000
    }

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

    /// Owed deliveries that are missing, and deliveries outside any membership.
    func verify(_ members: [Client]) -> (owed: Int, missing: Int, unexpected: Int) {
        var byRoom = [[Int]](repeating: [], count: o.rooms)
        for (i, m) in messages.enumerated() where m.ackAt != 0 { byRoom[m.room].append(i) }
        var owed = 0, missing = 0, unexpected = 0
        for r in members {
            for iv in r.intervals where iv.joinedRecv != 0 {
                for idx in byRoom[iv.room] {
                    let m = messages[idx]
                    if m.sender == r.number { continue }
                    if m.sentAt >= iv.joinedRecv && m.ackAt <= iv.leaveSent {
                        owed += 1
                        let seq = messageSeq(idx)
                        if !r.seen.contains(UInt64(m.sender) << 32 | UInt64(seq)) {
                            missing += 1
                            violation("member \(r.number) missed m\(m.sender).\(seq) in room \(iv.room)")
                        }
                    }
                }
            }
            for key in r.seen {
                guard let idx = messageIndex[key] else { continue }
                let m = messages[idx]
                let ok = r.intervals.contains { iv in
                    iv.room == m.room && !(m.ackAt != 0 && m.ackAt < iv.joinSent) && !(m.sentAt > iv.leftRecv)
                }
                if !ok {
                    unexpected += 1
                    violation("member \(r.number) got m\(key >> 32).\(key & 0xFFFF_FFFF) handled outside its membership of room \(m.room)")
                }
            }
        }
        return (owed, missing, unexpected)
    }

    lazy var seqOf: [Int: Int] = {
        var d: [Int: Int] = [:]
        for (k, v) in messageIndex { d[v] = Int(k & 0xFFFF_FFFF) }
        return d
    }()

    func messageSeq(_ idx: Int) -> Int { seqOf[idx] ?? -1 }
}

signal(SIGPIPE, SIG_IGN)
let options = parseOptions()
let soak = Soak(options)
exit(soak.run())
