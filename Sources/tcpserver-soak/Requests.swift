// The requests clients send: hello, join, leave, chat (with ids, acked).

extension Soak {
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
}
