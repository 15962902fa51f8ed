import Glibc

// What each kind of client does next: members, churners, garbage, half-open.

extension Soak {
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
}
