import CURing
import Glibc
import Optimizers
import Synchronization

/// One reactor thread: owns its listening socket, its ring (or epoll set), its connections and
/// its plugin instances. Nothing here is shared with other threads except the inbox and the
/// room directory.
///
/// A loop turn: the backend submits what the last turn queued and waits; completions are
/// dispatched (received bytes → frames → plugin chain → output appended to connections);
/// deliveries from other reactors are drained; then every connection with output gets one
/// send, and connections that finished are closed.
public final class Reactor: IOEventHandler {
    public let index: Int
    let shared: ServerShared
    var config: ServerConfig { shared.config }
    let listenFD: Int32
    let inbox: Inbox
    private var backend: IOBackend!
    private var connections: [Connection?] = []
    private var freeSlots: [Int] = []
    private var flushList: [Connection] = []
    private var plugins: [MessageProcessor] = []
    private let core = CoreHandler()
    private var fields = JSONFieldTable()
    /// Messages are rendered here once, then framed into each recipient's output.
    private var render = ByteBuffer()
    private var deliveries: [RoomDelivery] = []
    private(set) var liveConnections = 0

    init(index: Int, shared: ServerShared, listenFD: Int32) throws(SyscallError) {
        self.index = index
        self.shared = shared
        self.listenFD = listenFD
        inbox = try Inbox()
        let env = PluginEnvironment(config: shared.config, rooms: shared.rooms, reactorIndex: index)
        plugins = shared.factories.map { $0(env) }
    }

    // MARK: thread body

    /// Sets up the backend on this thread (io_uring rings are bound to their issuer thread).
    func setUp() throws(SyscallError) {
        switch shared.ioMode {
        case .uring:
            backend = try UringBackend(entries: config.ringEntries, recvBufferCount: config.recvBufferCount,
                                       recvBufferSize: config.recvBufferSize)
        case .epoll:
            backend = try EpollBackend(recvBufferSize: config.recvBufferSize)
        }
        try backend.addListener(fd: listenFD)
        try backend.addWakeup(fd: inbox.eventFD)
    }

    func run() {
        while !shared.stopping.load(ordering: .acquiring) {
            backend.poll(timeoutMillis: -1, handler: self)
            endTurn()
        }
        // Stop: drop every connection, then the backend.
        for case let c? in connections {
            for p in plugins { p.connectionClosed(c, self) }
            Glibc.close(c.fd)
            shared.connectionCount.subtract(1, ordering: .relaxed)
        }
        connections.removeAll()
        Glibc.close(listenFD)
        backend.shutdown()
    }

    /// End of a turn: one send per connection with queued output, then pending closes.
    private func endTurn() {
        var i = 0
        while i < flushList.count {
            let c = flushList[i]
            i += 1
            c.inFlushList = false
            if c.closeStarted { continue }
            if !c.out.isEmpty && !c.sendInFlight {
                backend.send(c)
            }
            if c.closeAfterFlush && !c.sendInFlight && c.out.isEmpty && c.sending.isEmpty {
                startClose(c)
            }
        }
        flushList.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private func markForFlush(_ c: Connection) {
        if !c.inFlushList {
            c.inFlushList = true
            flushList.append(c)
        }
    }

    // MARK: IOEventHandler

    func connectionAccepted(fd: Int32) {
        let n = shared.connectionCount.add(1, ordering: .relaxed).newValue
        if n > config.maxConnections {
            shared.connectionCount.subtract(1, ordering: .relaxed)
            let msg: StaticString = "{\"type\":\"error\",\"code\":\"server_full\",\"message\":\"server is at max_connections\"}\n"
            Socket.writeOnce(fd, UnsafeRawBufferPointer(start: msg.utf8Start, count: msg.utf8CodeUnitCount))
            Glibc.close(fd)
            return
        }
        Socket.configureAccepted(fd)
        let slot = freeSlots.popLast() ?? {
            connections.append(nil)
            return connections.count - 1
        }()
        let c = Connection(fd: fd, slot: slot, reactorIndex: index)
        connections[slot] = c
        liveConnections += 1
        backend.startReceiving(c)
    }

    func connectionReceived(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        if c.closing { return }
        var rest = bytes
        if c.framing == .undetermined {
            let (ok, used) = FrameSplitter.detect(c, rest)
            if !ok {
                sendError(c, .badFrame, "unrecognized framing: start with '{' (JSON lines), a 0 byte (binary frames) or an HTTP request", id: nil)
                closeAfterFlush(c)
                return
            }
            rest = UnsafeRawBufferPointer(rebasing: rest[used...])
            if c.framing == .undetermined { return }
        }
        if c.framing == .http {
            handleHTTP(c, rest)
            return
        }
        let maxFrame = config.maxFrameBytes
        FrameSplitter.feed(c, rest, maxFrame: maxFrame) { event in
            switch event {
            case .frame(let body):
                if c.framing == .binary {
                    let codec = body[0]
                    if codec != 0 {
                        sendError(c, .badFrame, "codec \(codec) is not supported (0 = raw JSON)", id: nil)
                        return !c.closing
                    }
                    handleMessage(c, UnsafeRawBufferPointer(rebasing: body[1...]))
                } else {
                    handleMessage(c, body)
                }
            case .tooLarge:
                sendError(c, .frameTooLarge, "frame exceeds max_frame_bytes (\(maxFrame))", id: nil)
                closeAfterFlush(c)
            case .badFrame(let why):
                sendError(c, .badFrame, why, id: nil)
            }
            return !c.closing
        }
    }

    func connectionReceiveEnded(_ c: Connection, error: Int32) {
        // Peer closed or reset: flush what is queued (if the socket still takes it), then close.
        closeAfterFlush(c)
        if error != 0 {
            c.out.removeAll()
        }
        markForFlush(c)
    }

    func connectionSendCompleted(_ c: Connection, error: Int32) {
        if error != 0 {
            c.out.removeAll()
            closeAfterFlush(c)
        }
        if c.closeAfterFlush || !c.out.isEmpty { markForFlush(c) }
    }

    func connectionReleased(_ c: Connection) {
        connections[c.slot] = nil
        freeSlots.append(c.slot)
        liveConnections -= 1
        shared.connectionCount.subtract(1, ordering: .relaxed)
    }

    func wakeup() {
        inbox.drain(into: &deliveries)
        for d in deliveries {
            guard let local = d.room.locals[index] else { continue }
            deliverLocal(local, d.message.body.readable, excluding: nil)
        }
        deliveries.removeAll(keepingCapacity: true)
    }

    // MARK: closing

    /// No more input is processed; the connection closes once its output is sent.
    func closeAfterFlush(_ c: Connection) {
        if c.closing { return }
        c.closing = true
        c.closeAfterFlush = true
        for p in plugins { p.connectionClosed(c, self) }
        markForFlush(c)
    }

    private func startClose(_ c: Connection) {
        if c.closeStarted { return }
        c.input.removeAll()
        c.input.releaseIfEmpty()
        backend.close(c)
    }

    // MARK: messages

    private func handleMessage(_ c: Connection, _ payload: UnsafeRawBufferPointer) {
        do {
            try JSONReader.parse(payload, into: &fields)
        } catch {
            sendError(c, .badJSON, Self.describe(error), id: nil)
            return
        }
        let idField = fields.find("id", in: payload)
        let id = idField.map { f -> UnsafeRawBufferPointer in
            // Strings keep their quotes so the ack echoes the id exactly as sent.
            let start = f.kind == .string ? f.valueStart - 1 : f.valueStart
            let end = f.kind == .string ? f.valueEnd + 1 : f.valueEnd
            return UnsafeRawBufferPointer(rebasing: payload[start..<end])
        }
        guard let typeField = fields.find("type", in: payload), typeField.kind == .string else {
            sendError(c, .missingField, "field 'type' (a string) is required", id: id)
            return
        }
        let type = JSONReader.string(typeField, in: payload)
        do throws(ProtocolError) {
            try dispatch(c, type, payload)
            if let id {
                reply(to: c) { b in
                    b.append("{\"type\":\"ack\",\"id\":")
                    b.append(id)
                    b.append("}")
                }
            }
        } catch {
            sendError(c, error.code, error.message, id: id)
        }
    }

    /// Hello gate, then the plugin chain, then the core handler.
    private func dispatch(_ c: Connection, _ type: String, _ payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        if !c.isAuthenticated && type != "hello" {
            throw ProtocolError(.helloRequired, "send hello first")
        }
        let processor: MessageProcessor
        if let p = plugins.first(where: { $0.canHandle(type) }) {
            processor = p
        } else if core.canHandle(type) {
            processor = core
        } else {
            throw ProtocolError(.unsupportedType, "unsupported message type '\(type)'")
        }
        try withUnsafePointer(to: &fields) { (fp) throws(ProtocolError) in
            try processor.process(IncomingMessage(connection: c, type: type, bytes: payload, fields: fp), self)
        }
    }

    static func describe(_ e: JSONError) -> String {
        switch e {
        case .syntax(let at): "malformed JSON at byte \(at)"
        case .invalidUTF8(let at): "invalid UTF-8 at byte \(at)"
        case .notAnObject: "a message must be a JSON object"
        case .tooDeep: "JSON nested too deeply"
        case .tooManyFields: "too many fields in one message"
        }
    }

    // MARK: output (the API plugins use)

    /// Renders one message with `body` and queues it for `c`, framed for its connection.
    public func reply(to c: Connection, _ body: (inout ByteBuffer) -> Void) {
        render.removeAll()
        body(&render)
        enqueue(render.readable, to: c)
    }

    public func sendError(_ c: Connection, _ code: ErrorCode, _ message: String, id: UnsafeRawBufferPointer?) {
        reply(to: c) { b in
            b.append("{\"type\":\"error\",\"code\":\"")
            b.append(contentsOf: code.rawValue)
            b.append("\",\"message\":")
            b.appendJSONString(message)
            if let id {
                b.append(",\"id\":")
                b.append(id)
            }
            b.append("}")
        }
    }

    /// Renders a room message once and delivers it to every member of the room on every
    /// reactor, except `excluded`.
    public func broadcast(_ room: LocalRoom, excluding excluded: Connection?, _ body: (inout ByteBuffer) -> Void) {
        render.removeAll()
        body(&render)
        let bytes = render.readable
        deliverLocal(room, bytes, excluding: excluded)
        let others = room.shared.reactorMask.load(ordering: .acquiring) & ~(1 << UInt64(index))
        if others != 0 {
            let msg = RenderedMessage()
            msg.body.append(bytes)
            var mask = others
            while mask != 0 {
                let r = mask.trailingZeroBitCount
                mask &= mask - 1
                shared.reactors[r].inbox.post(RoomDelivery(room: room.shared, message: msg))
            }
        }
    }

    private func deliverLocal(_ room: LocalRoom, _ bytes: UnsafeRawBufferPointer, excluding excluded: Connection?) {
        for m in room.members where m !== excluded {
            enqueue(bytes, to: m)
        }
    }

    /// Appends one message to `c`'s output with its connection's framing.
    @inline(__always)
    private func enqueue(_ body: UnsafeRawBufferPointer, to c: Connection) {
        if c.closing && !c.closeAfterFlush { return }
        if c.closeStarted { return }
        switch c.framing {
        case .binary:
            let n = UInt32(body.count + 1)
            c.out.reserve(5 + body.count)
            c.out.append(UInt8(truncatingIfNeeded: n >> 24))
            c.out.append(UInt8(truncatingIfNeeded: n >> 16))
            c.out.append(UInt8(truncatingIfNeeded: n >> 8))
            c.out.append(UInt8(truncatingIfNeeded: n))
            c.out.append(0)
            c.out.append(body)
        default:
            c.out.reserve(body.count + 1)
            c.out.append(body)
            c.out.append(UInt8(ascii: "\n"))
        }
        markForFlush(c)
    }

    // MARK: HTTP

    private func handleHTTP(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        c.input.append(bytes)
        switch HTTPResponder.handle(c.input.readable) {
        case .needMore:
            return
        case let .respond(status, reason, body, contentType, headOnly):
            HTTPResponder.render(&c.out, status: status, reason: reason, body: body,
                                 contentType: contentType, headOnly: headOnly)
            c.input.removeAll()
            closeAfterFlush(c)
        }
    }
}
