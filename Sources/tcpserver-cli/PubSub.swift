// `pub ROOM TEXT…` and `sub ROOM… [--count N] [--json]`.

enum PubSub {
    static func pub(_ o: Options) -> ExitCode {
        let s: Session
        do { s = try Session.start(o) } catch { return error }
        let room = o.args[0]
        let text = o.args.dropFirst().joined(separator: " ")
        s.join(room)
        s.chat(room, text)
        var members: Int?
        var failed = false
        let stopped = s.drainAcks(timeoutMs: 10_000) { ev in
            switch ev {
            case .message(let m, _) where m["type"]?.string == "joined":
                members = m["members"]?.int
            case .error(let e):
                Terminal.error(Render.error(e))
                failed = true
                // Without our id the server could not read the request: no ack will come.
                return e.id != nil
            default:
                break
            }
            return true
        }
        if let code = stopEarly(stopped, s, failed: failed, waiting: "the server's ack") { return code }
        if failed { return .serverError }
        Terminal.line("published to \(Terminal.sanitize(room))" + (members.map { " (\(Render.members($0)) in the room)" } ?? ""))
        return .ok
    }

    static func sub(_ o: Options) -> ExitCode {
        let s: Session
        do { s = try Session.start(o) } catch { return error }
        var failed = false
        var chats = 0
        var members: [String] = []
        /// Prints one event; true once `--count` chat messages have arrived.
        func show(_ ev: Event) -> Bool {
            switch ev {
            case .message(let m, let raw):
                let type = m["type"]?.string
                if type == "joined" {
                    members.append("\(Terminal.sanitize(m["room"]?.string ?? "?")) (\(Render.members(m["members"]?.int ?? 0)))")
                    return false
                }
                if o.json {
                    if type != "pong" && type != "left" { Terminal.line(raw) }
                } else if let line = Render.event(m) {
                    Terminal.line(line)
                }
                if type == "chat" { chats += 1 }
            case .unparsed(let raw):
                Terminal.line(o.json ? raw : "< " + Terminal.sanitize(raw))
            case .error(let e):
                Terminal.error(Render.error(e))
                failed = true
            default:
                break
            }
            return o.count.map { chats >= $0 } ?? false
        }
        for room in o.args { s.join(room) }
        var done = false
        let stopped = s.drainAcks(timeoutMs: 10_000) { ev in
            done = show(ev) || done
            if case .error(let e) = ev, e.id == nil { return false }
            return true
        }
        if let code = stopEarly(stopped, s, failed: failed, waiting: "the joins to be acknowledged") { return code }
        if failed { return .serverError }
        Terminal.err("subscribed to " + members.joined(separator: ", ") + (o.count.map { "; waiting for \($0) message(s)" } ?? "; ^C to stop") + "\n")
        while !done {
            switch s.next(timeoutMs: -1) {
            case .interrupted:
                return failed ? .serverError : .ok
            case .closed(let why):
                Terminal.error("\(s.socket.address) closed the connection" + (why.map { ": \($0)" } ?? ""))
                return failed ? .serverError : .connection
            case let ev:
                done = show(ev)
            }
        }
        return failed ? .serverError : .ok
    }

    /// The exit code for a wait for acks that ended early, or nil if it did not.
    static func stopEarly(_ ev: Event?, _ s: Session, failed: Bool, waiting what: String) -> ExitCode? {
        switch ev {
        case .closed(let why)?:
            Terminal.error("\(s.socket.address) closed the connection" + (why.map { ": \($0)" } ?? ""))
            return failed ? .serverError : .connection
        case .timeout?:
            Terminal.error("timed out waiting for \(what) from \(s.socket.address)")
            return .connection
        case .interrupted?:
            Terminal.error("interrupted while waiting for \(what)")
            return failed ? .serverError : .connection
        default:
            return nil
        }
    }
}
