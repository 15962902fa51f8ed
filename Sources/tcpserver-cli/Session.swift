// One protocol session: hello, requests with ids, and the server's messages decoded into events.

/// What a request was, to explain an error about it.
struct Request {
    let type: String
    let room: String?
}

/// An `error` message from the server, with the request it answers when it carried our id.
struct ServerError {
    let code: String
    let message: String
    /// Our id for the failed request, and what it was.
    let id: Int?
    let request: Request?
}

enum Event {
    /// Any message but ack/error (chat, presence, joined, pong, …) and its line as received.
    case message(JSON, raw: String)
    /// A line that is not a JSON object.
    case unparsed(String)
    case ack(id: Int, request: Request?)
    case error(ServerError)
    /// The other fd passed to `next` is readable.
    case input
    /// The server closed the connection (or it broke: the reason).
    case closed(String?)
    case timeout
    case interrupted
}

final class Session {
    let socket: LineSocket
    let user: String
    private var nextID = 1
    /// Requests sent with an id and not acknowledged yet.
    private(set) var pending: [Int: Request] = [:]
    /// Error replies received.
    private(set) var errors = 0
    /// Pongs that answer our replies to the server's keepalive pings: not shown.
    private var pongsToSwallow = 0

    private init(socket: LineSocket, user: String) {
        self.socket = socket
        self.user = user
    }

    /// Connects and says hello. Prints the reason and throws the exit code on failure.
    static func start(_ o: Options, echo: Bool = false) throws(ExitCode) -> Session {
        let socket: LineSocket
        do {
            socket = try LineSocket.connect(host: o.host, port: o.port)
        } catch {
            Terminal.error(error.message)
            throw .connection
        }
        let s = Session(socket: socket, user: o.user)
        var hello: [(String, JSONText.Value)] = [("type", .s("hello")), ("user", .s(o.user))]
        if let t = o.token { hello.append(("token", .s(t))) }
        if echo { hello.append(("echo", .b(true))) }
        s.send(JSONText.object(hello))
        while true {
            switch s.next(timeoutMs: 5000) {
            case .message(let m, _) where m["type"]?.string == "welcome":
                return s
            case .error(let e):
                Terminal.error(Render.error(e))
                throw .serverError
            case .closed(let why):
                Terminal.error("\(socket.address) closed the connection before the welcome" + (why.map { ": \($0)" } ?? ""))
                throw .connection
            case .timeout:
                Terminal.error("no welcome from \(socket.address) within 5 s (is it a tcpserver?)")
                throw .connection
            case .interrupted:
                throw .ok
            default:
                continue
            }
        }
    }

    /// Sends one line as is.
    func send(_ line: String) { socket.send(line: line) }

    /// Sends `{"type":type,…fields,"id":N}` and remembers it until its ack. Returns N.
    @discardableResult
    func request(_ type: String, _ fields: [(String, JSONText.Value)] = [], room: String? = nil) -> Int {
        let id = nextID
        nextID += 1
        pending[id] = Request(type: type, room: room)
        send(JSONText.object([("type", .s(type))] + fields + [("id", .i(id))]))
        return id
    }

    /// join_room / leave_room / send_chat with the room remembered for error hints.
    @discardableResult
    func join(_ room: String) -> Int { request("join_room", [("room", .s(room))], room: room) }

    @discardableResult
    func leave(_ room: String) -> Int { request("leave_room", [("room", .s(room))], room: room) }

    @discardableResult
    func chat(_ room: String, _ text: String) -> Int {
        request("send_chat", [("room", .s(room)), ("text", .s(text))], room: room)
    }

    /// The next event: a server message, `extra` readable, timeout (`timeoutMs` < 0: none),
    /// SIGINT, or the connection closing. Lines already received come first.
    func next(timeoutMs: Int, watching extra: Int32? = nil) -> Event {
        let deadline = timeoutMs < 0 ? UInt64.max : Terminal.monoNanos() + UInt64(timeoutMs) * 1_000_000
        while true {
            if let line = socket.bufferedLine() {
                if let ev = decode(line) { return ev }
                continue
            }
            if socket.closed { return .closed(nil) }
            if Signals.interrupted { return .interrupted }
            var wait = -1
            if deadline != .max {
                let now = Terminal.monoNanos()
                if now >= deadline { return .timeout }
                wait = Int((deadline - now + 999_999) / 1_000_000)
            }
            let fds = extra.map { [socket.fd, $0] } ?? [socket.fd]
            guard let ready = waitReadable(fds, timeoutMs: wait) else { continue }
            if ready[0] {
                switch socket.fill() {
                case .data: continue
                case .eof: return .closed(nil)
                case .failed(let why): return .closed(why)
                }
            }
            if ready.count > 1 && ready[1] { return .input }
        }
    }

    /// Waits until every request sent has been acknowledged, passing other events to `handle`
    /// (which may end the wait by returning false). Returns the event that stopped the wait
    /// early (closed, timeout, interrupted), or nil.
    func drainAcks(timeoutMs: Int, _ handle: (Event) -> Bool) -> Event? {
        let deadline = Terminal.monoNanos() + UInt64(timeoutMs) * 1_000_000
        while !pending.isEmpty {
            let now = Terminal.monoNanos()
            let ev = next(timeoutMs: now >= deadline ? 0 : Int((deadline - now) / 1_000_000))
            switch ev {
            case .closed, .timeout, .interrupted: return ev
            default: if !handle(ev) { return nil }
            }
        }
        return nil
    }

    private func decode(_ line: String) -> Event? {
        if line.allSatisfy({ $0 == " " || $0 == "\t" }) { return nil }
        guard let m = JSON.parse(line), case .object = m else { return .unparsed(line) }
        switch m["type"]?.string {
        case "ack":
            guard let id = m["id"]?.int else { return nil }
            return .ack(id: id, request: pending.removeValue(forKey: id))
        case "error":
            errors += 1
            let id = m["id"]?.int
            return .error(ServerError(code: m["code"]?.string ?? "unknown", message: m["message"]?.string ?? "",
                                      id: id, request: id.flatMap { pending[$0] }))
        case "ping":
            // The server's keepalive: any traffic answers it; our ping's pong is not shown.
            pongsToSwallow += 1
            send(#"{"type":"ping"}"#)
            return nil
        case "pong" where pongsToSwallow > 0:
            pongsToSwallow -= 1
            return nil
        default:
            return .message(m, raw: line)
        }
    }
}
