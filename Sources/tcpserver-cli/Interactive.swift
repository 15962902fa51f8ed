import Glibc

// The interactive session: lines from stdin (a terminal with a prompt, or a pipe), commands
// starting with `/`, everything else sent as chat to the current room; the server's messages
// printed as they arrive.

final class Interactive {
    private let session: Session
    private let tty = Terminal.stdinIsTTY && Terminal.stdoutIsTTY
    /// Rooms joined (in order) and their member counts as last heard.
    private var rooms: [(name: String, members: Int?)] = []
    private var current: String?
    /// join_room request id → the room, the current room before it and whether the room was
    /// joined already: restored if the join fails.
    private var joinsInFlight: [Int: (room: String, before: String?, wasJoined: Bool)] = [:]
    /// ping request id → when it was sent.
    private var pingSent: [Int: UInt64] = [:]
    private var promptShown = false
    /// Any `error:` line printed (the exit code is then 1).
    private var failed = false

    private init(_ session: Session) { self.session = session }

    static func run(_ o: Options) -> ExitCode {
        let session: Session
        do { session = try Session.start(o, echo: true) } catch { return error }
        let me = Interactive(session)
        if me.tty {
            Terminal.err("connected to \(session.socket.address) as \(session.user) — /help lists the commands\n")
        }
        if let room = o.room { _ = me.command("/join " + room) }
        return me.loop()
    }

    private var prompt: String { (current.map { Terminal.sanitize($0) } ?? "") + "> " }

    /// Prints a line (to stdout or stderr) without mangling the prompt on a terminal.
    private func show(_ line: String, fd: Int32 = 1) {
        if tty && promptShown { Terminal.out("\r\u{1B}[K") }
        Terminal.write(line + "\n", to: fd)
        if tty && promptShown { Terminal.out(prompt) }
    }

    private func showPrompt() {
        guard tty && !promptShown else { return }
        Terminal.out(prompt)
        promptShown = true
    }

    private func fail(_ message: String) {
        failed = true
        show("error: " + message, fd: 2)
    }

    private func loop() -> ExitCode {
        var input = LineBuffer()
        var quitting = false
        showPrompt()
        while !quitting {
            switch session.next(timeoutMs: -1, watching: 0) {
            case .input:
                switch readChunk(0, into: &input) {
                case .data:
                    promptShown = false
                    while !quitting, let line = input.nextLine() { quitting = !command(line) }
                    if !quitting { showPrompt() }
                case .eof, .failed:
                    if tty && promptShown { Terminal.out("\n"); promptShown = false }
                    if let last = input.takeRest() { _ = command(last) }
                    quitting = true
                }
            case .interrupted:
                if tty { Terminal.out("\n") }
                return .ok
            case .closed(let why):
                return closed(why)
            case let ev:
                handle(ev)
            }
        }
        // /quit or end of input: everything sent gets its ack (and replies) before we exit.
        promptShown = false
        switch session.drainAcks(timeoutMs: 10_000, { handle($0); return true }) {
        case .closed(let why)?: return closed(why)
        case .timeout?:
            fail("no ack from \(session.socket.address) within 10 s for \(session.pending.count) request(s)")
            return .connection
        default:
            return failed ? .serverError : .ok
        }
    }

    private func closed(_ why: String?) -> ExitCode {
        promptShown = false
        fail("\(session.socket.address) closed the connection" + (why.map { ": \($0)" } ?? ""))
        return session.errors > 0 ? .serverError : .connection
    }

    private func handle(_ ev: Event) {
        switch ev {
        case .message(let m, _):
            track(m)
            if m["type"]?.string == "pong", let (id, sent) = pingSent.min(by: { $0.key < $1.key }) {
                pingSent[id] = nil
                show("pong from \(session.socket.address): \(Terminal.millis(Terminal.monoNanos() - sent)) ms")
            } else if let line = Render.event(m) {
                show(line)
            }
        case .unparsed(let line):
            show("< " + Terminal.sanitize(line))
        case .error(let e):
            fail(Render.error(e))
            if let id = e.id, let join = joinsInFlight.removeValue(forKey: id) {
                // The join was refused: forget the room, go back to the room before it.
                if !join.wasJoined { rooms.removeAll { $0.name == join.room } }
                if current == join.room { current = join.before }
                if tty && promptShown { Terminal.out("\r\u{1B}[K" + prompt) }
            }
        case .ack(let id, _):
            joinsInFlight[id] = nil
        default:
            break
        }
    }

    /// Member counts from the server's replies and presence messages.
    private func track(_ m: JSON) {
        guard let room = m["room"]?.string, let i = rooms.firstIndex(where: { $0.name == room }) else { return }
        switch m["type"]?.string {
        case "joined", "presence": rooms[i].members = m["members"]?.int ?? rooms[i].members
        case "user_joined": rooms[i].members = rooms[i].members.map { $0 + 1 }
        case "user_left": rooms[i].members = rooms[i].members.map { max(1, $0 - 1) }
        default: break
        }
    }

    /// One input line. False when the session should end (/quit).
    private func command(_ raw: String) -> Bool {
        let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : raw
        if line.allSatisfy({ $0 == " " || $0 == "\t" }) { return true }
        guard line.hasPrefix("/") && !line.hasPrefix("//") else {
            let text = line.hasPrefix("//") ? String(line.dropFirst()) : line
            guard let room = current else {
                fail("not_in_room — no current room: /join ROOM first")
                return true
            }
            session.chat(room, text)
            return true
        }
        let (name, rest) = split(line)
        let arg = rest.trimmingSpaces
        switch name {
        case "/quit", "/exit", "/q":
            return false
        case "/join", "/j":
            guard !arg.isEmpty else { fail("usage: /join ROOM"); return true }
            let wasJoined = rooms.contains(where: { $0.name == arg })
            joinsInFlight[session.join(arg)] = (arg, current, wasJoined)
            if !wasJoined { rooms.append((arg, nil)) }
            current = arg
        case "/leave", "/part":
            guard let room = arg.isEmpty ? current : arg else { fail("usage: /leave ROOM (no current room)"); return true }
            session.leave(room)
            rooms.removeAll { $0.name == room }
            if current == room { current = rooms.last?.name }
        case "/room":
            guard rooms.contains(where: { $0.name == arg }) else {
                fail("not_in_room — join room '\(arg)' first: /join \(arg)")
                return true
            }
            current = arg
        case "/rooms":
            if rooms.isEmpty { show("(no rooms joined)") }
            for r in rooms {
                let mark = r.name == current ? " (current)" : ""
                let joining = joinsInFlight.values.contains { $0.room == r.name }
                show("\(r.name): " + (r.members.map { Render.members($0) } ?? (joining ? "joining…" : "members unknown")) + mark)
            }
        case "/msg":
            let (room, text) = split(arg)
            guard !room.isEmpty, !text.isEmpty else { fail("usage: /msg ROOM TEXT"); return true }
            session.chat(room, String(text.dropFirst(text.hasPrefix(" ") ? 1 : 0)))
        case "/ping":
            pingSent[session.request("ping")] = Terminal.monoNanos()
        case "/raw":
            session.send(arg)
        case "/help", "/h", "/?":
            let help = Options.usage.split(separator: "\n", omittingEmptySubsequences: false)
                .drop(while: { !$0.hasPrefix("interactive commands") }).prefix(while: { !$0.isEmpty })
            for l in help { show(String(l)) }
        default:
            fail("unknown command \(name) — /help lists the commands")
        }
        return true
    }

    /// `"/cmd rest of line"` → ("/cmd", " rest of line") (the rest keeps its spacing).
    private func split<S: StringProtocol>(_ s: S) -> (String, String) {
        guard let sp = s.firstIndex(where: { $0 == " " || $0 == "\t" }) else { return (String(s), "") }
        return (String(s[..<sp]), String(s[sp...]))
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let a = firstIndex(where: { !isSpace($0) }), let b = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[a...b])
    }
}
