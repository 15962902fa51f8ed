import Glibc

// Reading clients' lines and checking each: acks, joined/left, errors, chats (dups, order).

extension Soak {
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
}
