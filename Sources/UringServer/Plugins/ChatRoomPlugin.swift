import Primitives

/// Rooms: join_room, leave_room, send_chat, and presence. The fan-out itself (local members,
/// hand-off to other reactors) is the context's `broadcast`; this plugin owns the semantics.
public final class ChatRoomPlugin: MessageProcessor {
    private let config: ServerConfig
    /// Presence is on in config and gated at run time by this (non-critical) flag.
    private let presenceFlag: FeatureFlag?

    /// Cluster mode: room messages also go to Redis, membership counts are cluster-wide.
    private let cluster: ClusterNode?

    public init(_ env: PluginEnvironment) {
        config = env.config
        presenceFlag = env.flags["enable_presence"]
        cluster = env.cluster
    }

    /// Members across the cluster: this node's count now plus the other nodes' as last fetched
    /// (the link refreshes it on every change and heartbeat).
    private func clusterCount(_ room: String, local: Int) -> Int {
        guard let cluster, let remote = cluster.remoteMemberCount(room: room) else { return local }
        return local + remote
    }

    /// Renders the message once (through `ctx.broadcast`) and, in cluster mode, publishes
    /// the same bytes for the other nodes.
    private func fanOut(_ local: LocalRoom, excluding: Connection?, _ ctx: PluginContext, _ body: (inout ByteBuffer) -> Void) {
        ctx.broadcast(local, excluding: excluding, body)
        if let cluster { cluster.publish(room: local.name, body: ctx.lastRendered) }
    }

    public var featureFlag: String? { "enable_chat_rooms" }

    private func presence(for c: Connection) -> Bool {
        guard config.presence else { return false }
        guard let flag = presenceFlag else { return true }
        return FeatureGate.isEnabled(flag, for: c)
    }

    public func canHandle(_ type: String) -> Bool {
        type == "send_chat" || type == "join_room" || type == "leave_room"
    }

    public func process(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        switch m.type {
        case "send_chat": try sendChat(m, ctx)
        case "join_room": try join(m, ctx)
        default: try leave(m, ctx)
        }
    }

    private func sendChat(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        let c = m.connection
        let roomName = try m.requireString("room")
        guard let text = m.rawString("text") else {
            throw ProtocolError(.missingField, "field 'text' (a string) is required")
        }
        guard let room = c.rooms.first(where: { $0.name == roomName }) else {
            throw ProtocolError(.notInRoom, "join room '\(roomName)' before sending to it")
        }
        let user = c.user ?? ""
        let ts = ctx.wallMillis()
        func render(_ b: inout ByteBuffer) {
            b.append("{\"type\":\"chat\",\"room\":")
            b.appendJSONString(roomName)
            b.append(",\"from\":")
            b.appendJSONString(user)
            b.append(",\"text\":")
            b.appendJSONStringRaw(escapedContents: text)
            b.append(",\"ts\":")
            b.appendDecimal(ts)
        }
        if let cluster {
            // Cluster: Redis gives the line its cluster-wide offset (one script), and every
            // node, this one included, delivers it from pub/sub in offset order. The ack
            // (with the offset) follows Redis' answer.
            let line = ctx.renderOnly(render)
            guard cluster.publishChat(room.shared, line: line, reactor: ctx.reactorIndex, slot: c.slot,
                                      generation: c.generation, id: Self.idBytes(m)) else {
                throw ProtocolError(.clusterUnavailable, "the cluster is unavailable (Redis down or too slow); the message was not delivered")
            }
            ctx.deferAck()
            return
        }
        // Through the room's log: the line gets its offset (the ack carries it) and every
        // member, on any reactor, receives the room's lines in offset order.
        _ = ctx.publish(room, excluding: c.echo ? nil : c, render)
    }

    /// The message's `id` as sent (a string keeps its quotes), for the deferred ack.
    private static func idBytes(_ m: IncomingMessage) -> UnsafeRawBufferPointer? {
        guard let f = m.field("id") else { return nil }
        let quoted = f.kind == .string
        return UnsafeRawBufferPointer(rebasing: m.bytes[(quoted ? f.valueStart - 1 : f.valueStart)..<(quoted ? f.valueEnd + 1 : f.valueEnd)])
    }

    private func join(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        let c = m.connection
        let roomName = try m.requireName("room", maxBytes: config.maxNameBytes)
        let since = try RecoveryRequest.parse(m)
        if let cluster, let since, cluster.isConnected, let (epoch, latest) = ctx.roomLatest(roomName),
           epoch == since.epoch, since.offset > latest {
            // Cluster: the client may have seen that offset on another node, and this one has
            // not caught up yet (it lags, or is refetching after a reconnect). Hold the join
            // until it has (turnEnded), at most 500 ms; past that it is bad_since.
            ctx.holdInput(c)
            laggingJoins.append(LaggingJoin(connection: c, room: roomName, since: since,
                                            deadline: Clock.monoNanos() + 500_000_000))
            return
        }
        try joinChecked(c, roomName, since: since, ctx)
    }

    private func joinChecked(_ c: Connection, _ roomName: String, since: (epoch: String, offset: Int)?,
                             _ ctx: PluginContext) throws(ProtocolError) {
        try RecoveryRequest.check(since, room: roomName, ctx)
        if let local = c.rooms.first(where: { $0.name == roomName }) {
            // Joining twice is harmless: answer with the current count, announce nothing
            // (with `since`, replay: a client can resync without reconnecting).
            let n = clusterCount(roomName, local: ctx.memberCount(roomName))
            ctx.replyJoined(c, local, since: since, rejoin: true) { b, pos in Self.renderJoined(&b, roomName, n, pos) }
            return
        }
        if c.rooms.count >= config.maxRoomsPerConnection {
            ctx.limitHit("max_rooms_per_connection")
            throw ProtocolError(.tooManyRooms, "a connection may join at most \(config.maxRoomsPerConnection) rooms")
        }
        guard let (shared, count) = ctx.enterRoom(roomName, limit: config.maxMembersPerRoom) else {
            ctx.limitHit("max_members_per_room")
            throw ProtocolError(.roomFull, "room '\(roomName)' has \(config.maxMembersPerRoom) members (max_members_per_room)")
        }
        var members = count
        if let cluster {
            if (cluster.remoteMemberCount(room: roomName) == nil || !cluster.roomSynced(roomName)) && cluster.isConnected {
                // The first member here: the other nodes' count is not known yet, nor the
                // room's cluster-wide epoch, offset and history. The link fetches them now;
                // hold this connection's input and answer when they arrive (turnEnded), so
                // `joined` carries the cluster-wide figures and `since` replays from the
                // room's stream.
                ctx.holdInput(c)
                pendingJoins.append(PendingJoin(connection: c, shared: shared, room: roomName, since: since,
                                                deadline: Clock.monoNanos() + 500_000_000))
                return
            }
            members = clusterCount(roomName, local: count)
        }
        completeJoin(c, shared, roomName, since: since, members: members, ctx)
    }

    private func completeJoin(_ c: Connection, _ shared: SharedRoom, _ roomName: String,
                              since: (epoch: String, offset: Int)?, members: Int, _ ctx: PluginContext) {
        let local = ctx.admit(c, to: shared)
        ctx.replyJoined(c, local, since: since, rejoin: false) { b, pos in Self.renderJoined(&b, roomName, members, pos) }
        if presence(for: c) {
            if members <= config.presenceMaxMembers {
                announce("user_joined", user: c.user ?? "", in: local, except: c, ctx)
            } else {
                diffs.joined(c.user ?? "", shared)
            }
        }
    }

    /// Joins and leaves in rooms past presence_max_members, sent as diffs (turnEnded).
    private var diffs = PresenceDiffs()

    /// A join waiting for the cluster-wide count (cluster mode, first member on this node).
    private struct PendingJoin {
        let connection: Connection
        let shared: SharedRoom
        let room: String
        let since: (epoch: String, offset: Int)?
        let deadline: UInt64
    }
    private var pendingJoins: [PendingJoin] = []

    /// A join whose `since` is past this node's latest offset (cluster mode: the node lags).
    private struct LaggingJoin {
        let connection: Connection
        let room: String
        let since: (epoch: String, offset: Int)
        let deadline: UInt64
    }
    private var laggingJoins: [LaggingJoin] = []

    public func turnEnded(_ ctx: PluginContext) {
        if !diffs.isEmpty { sendDiffs(ctx) }
        if !laggingJoins.isEmpty { resumeLaggingJoins(ctx) }
        guard !pendingJoins.isEmpty, let cluster else { return }
        let now = Clock.monoNanos()
        var i = 0
        while i < pendingJoins.count {
            let p = pendingJoins[i]
            if (cluster.remoteMemberCount(room: p.room) == nil || !cluster.roomSynced(p.room)) && now < p.deadline { i += 1; continue }
            pendingJoins.remove(at: i)
            // Without the other nodes' figures by the deadline (Redis slow or gone), the local
            // ones are the best there are (a `since` then cannot be recovered here: the
            // node's own epoch is not the cluster's).
            completeJoin(p.connection, p.shared, p.room, since: p.since, members: clusterCount(p.room, local: ctx.memberCount(p.room)), ctx)
            ctx.releaseInput(p.connection)
        }
    }

    /// Lagging joins whose node caught up (or whose wait ran out) go on as ordinary joins.
    private func resumeLaggingJoins(_ ctx: PluginContext) {
        let now = Clock.monoNanos()
        var i = 0
        while i < laggingJoins.count {
            let j = laggingJoins[i]
            if let (epoch, latest) = ctx.roomLatest(j.room), epoch == j.since.epoch, j.since.offset > latest,
               now < j.deadline {
                i += 1
                continue
            }
            laggingJoins.remove(at: i)
            let c = j.connection
            do throws(ProtocolError) {
                try joinChecked(c, j.room, since: j.since, ctx)
            } catch {
                let id = c.extras.heldAckID
                ctx.reply(to: c) { b in
                    b.append("{\"type\":\"error\",\"code\":\"")
                    b.append(contentsOf: error.code.rawValue)
                    b.append("\",\"message\":")
                    b.appendJSONString(error.message)
                    if let id {
                        b.append(",\"id\":")
                        id.withUnsafeBytes { b.append($0) }
                    }
                    b.append("}")
                }
            }
            // A join that itself waits for the cluster's figures keeps the input held.
            if !pendingJoins.contains(where: { $0.connection === c }) { ctx.releaseInput(c) }
        }
    }

    private func sendDiffs(_ ctx: PluginContext) {
        let interval = UInt64(config.presenceIntervalMs) * 1_000_000
        guard let due = diffs.due(now: ctx.now(), intervalNanos: interval) else { return }
        for p in due {
            let members = clusterCount(p.room.name, local: ctx.memberCount(p.room.name))
            ctx.broadcast(p.room) { b in PresenceDiffs.render(&b, p, members: members) }
            if let cluster { cluster.publish(room: p.room.name, body: ctx.lastRendered) }
        }
    }

    private static func renderJoined(_ b: inout ByteBuffer, _ room: String, _ n: Int, _ pos: RoomPosition) {
        b.append("{\"type\":\"joined\",\"room\":")
        b.appendJSONString(room)
        b.append(",\"members\":")
        b.appendDecimal(n)
        b.append(",\"epoch\":")
        b.appendJSONString(pos.epoch)
        b.append(",\"offset\":")
        b.appendDecimal(pos.offset)
        if let recovered = pos.recovered {
            b.append(recovered ? ",\"recovered\":true,\"missed\":" : ",\"recovered\":false,\"missed\":")
            b.appendDecimal(pos.missed)
        }
        b.append("}")
    }

    private func leave(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        let c = m.connection
        let roomName = try m.requireString("room")
        guard let local = c.rooms.remove(where: { $0.name == roomName }) else {
            throw ProtocolError(.notInRoom, "not a member of room '\(roomName)'")
        }
        remove(c, from: local, ctx)
        ctx.reply(to: c) { b in
            b.append("{\"type\":\"left\",\"room\":")
            b.appendJSONString(roomName)
            b.append("}")
        }
    }

    public func connectionClosed(_ c: Connection, _ ctx: PluginContext) {
        laggingJoins.removeAll { $0.connection === c }
        if let i = pendingJoins.firstIndex(where: { $0.connection === c }) {
            // Joined the directory but never answered: undo the membership count.
            let p = pendingJoins.remove(at: i)
            _ = ctx.abandonRoom(p.shared)
        }
        let joined = c.rooms
        c.rooms.removeAll()
        for local in joined { remove(c, from: local, ctx) }
    }

    private func remove(_ c: Connection, from local: LocalRoom, _ ctx: PluginContext) {
        let remaining = ctx.leaveRoom(c, local)
        if presence(for: c), let user = c.user {
            // Judged by the size the room had with this member, as the join was.
            if clusterCount(local.name, local: remaining) + 1 <= config.presenceMaxMembers {
                announce("user_left", user: user, in: local, except: c, ctx)
            } else {
                diffs.left(user, local.shared)
            }
        }
    }

    private func announce(_ type: StaticString, user: String, in local: LocalRoom, except c: Connection, _ ctx: PluginContext) {
        let roomName = local.name
        fanOut(local, excluding: c, ctx) { b in
            b.append("{\"type\":\"")
            b.append(type)
            b.append("\",\"room\":")
            b.appendJSONString(roomName)
            b.append(",\"user\":")
            b.appendJSONString(user)
            b.append("}")
        }
    }
}
