import Primitives
import Synchronization
import VoiceWire

/// Voice chat's control side (docs/protocol.md, "Voice"): start_voice, join_voice, end_voice.
/// The voice itself goes over UDP through a `tcpserver-voice` relay; this plugin only opens and
/// closes a room's channel (shared across reactors in `VoiceChannels`) and hands out tokens the
/// relay checks with the shared `voice_secret` alone.
///
/// Ending a channel (end_voice, or its last voice member leaving the room or disconnecting)
/// sends the channel's relay an authenticated revocation datagram (`VoiceRevoke`); a member who
/// leaves while others stay gets one for their user alone. Tokens also expire after
/// `voice_token_ttl_s`, so a lost datagram costs at most one token lifetime.
public final class VoiceCoordinator: MessageProcessor {
    private let config: ServerConfig
    private let channels: VoiceChannels
    private let reactor: Int
    private let secret: [UInt8]
    /// Created on first use: a server without voice opens no socket.
    private var sender: UDPSender?

    /// This reactor's voice members, checked every `checkNanos` for ones who left the room
    /// (leave_room belongs to ChatRoomPlugin; this plugin notices the membership is gone).
    private struct Local {
        let connection: Connection
        let room: String
        let shared: SharedRoom
        let channel: UInt32
    }
    private var locals: [Local] = []
    private var lastCheck: UInt64 = 0
    private static let checkNanos: UInt64 = 20_000_000

    public init(_ env: PluginEnvironment) {
        config = env.config
        channels = env.voice
        reactor = env.reactorIndex
        secret = Array(env.config.voiceSecret.utf8)
    }

    public var featureFlag: String? { "enable_voice" }

    public func canHandle(_ type: String) -> Bool {
        type == "start_voice" || type == "join_voice" || type == "end_voice"
    }

    public func process(_ m: IncomingMessage, _ ctx: PluginContext) throws(ProtocolError) {
        let c = m.connection
        let roomName = try m.requireString("room")
        guard let local = c.rooms.first(where: { $0.name == roomName }) else {
            throw ProtocolError(.notInRoom, "join room '\(roomName)' before using its voice")
        }
        let member = VoiceChannels.Member(reactor: reactor, connection: ObjectIdentifier(c), user: c.user ?? "")
        switch m.type {
        case "start_voice":
            guard !channels.relays.isEmpty, !secret.isEmpty else {
                throw ProtocolError(.noRelay, "voice needs voice_relays and voice_secret in the server's config")
            }
            guard case .started(let ch) = channels.start(room: roomName, starter: member) else {
                throw ProtocolError(.voiceAlreadyRunning, "room '\(roomName)' already has voice: send join_voice")
            }
            track(c, local, ch.id)
            sendToken(c, roomName, ch, ctx)
            let by = member.user
            ctx.broadcast(local, excluding: c) { b in
                b.append("{\"type\":\"voice_started\",\"room\":")
                b.appendJSONString(roomName)
                b.append(",\"by\":")
                b.appendJSONString(by)
                b.append(",\"channel\":\"")
                b.append(contentsOf: Self.hex(ch.id))
                b.append("\"}")
            }
        case "join_voice":
            guard let ch = channels.join(room: roomName, member) else {
                throw ProtocolError(.voiceNotRunning, "room '\(roomName)' has no voice: send start_voice")
            }
            if !locals.contains(where: { $0.connection === c && $0.room == roomName }) { track(c, local, ch.id) }
            sendToken(c, roomName, ch, ctx)
        default:
            switch channels.end(room: roomName, by: member.user) {
            case .notRunning:
                throw ProtocolError(.voiceNotRunning, "room '\(roomName)' has no voice")
            case .notStarter(let starter):
                throw ProtocolError(.notVoiceStarter, "only \(starter), who started it, may end this room's voice")
            case .ended(let ch):
                ended(ch, room: roomName, local.shared, reason: "ended", ctx)
            }
        }
    }

    private func track(_ c: Connection, _ local: LocalRoom, _ channel: UInt32) {
        locals.append(Local(connection: c, room: local.name, shared: local.shared, channel: channel))
    }

    private func sendToken(_ c: Connection, _ room: String, _ ch: VoiceChannels.Channel, _ ctx: PluginContext) {
        let expires = UInt64(Clock.wallMillis()) + UInt64(config.voiceTokenTTLSeconds) * 1000
        let token = VoiceToken.issue(secret: secret, channel: ch.id, user: c.user ?? "", expiryMillis: expires)
        let relay = channels.relays[ch.relay].description
        ctx.reply(to: c) { b in
            b.append("{\"type\":\"voice\",\"room\":")
            b.appendJSONString(room)
            b.append(",\"channel\":\"")
            b.append(contentsOf: Self.hex(ch.id))
            b.append("\",\"relay\":")
            b.appendJSONString(relay)
            b.append(",\"token\":")
            b.appendJSONString(token)
            b.append(",\"expires\":")
            b.appendDecimal(Int(expires))
            b.append("}")
        }
    }

    /// The channel is over: its relay refuses it from now on, the room hears it.
    private func ended(_ ch: VoiceChannels.Channel, room: String, _ shared: SharedRoom, reason: StaticString, _ ctx: PluginContext) {
        revoke(ch, userHash: 0, ctx)
        locals.removeAll { $0.channel == ch.id }
        ctx.broadcast(shared) { b in
            b.append("{\"type\":\"voice_ended\",\"room\":")
            b.appendJSONString(room)
            b.append(",\"channel\":\"")
            b.append(contentsOf: Self.hex(ch.id))
            b.append("\",\"reason\":\"")
            b.append(reason)
            b.append("\"}")
        }
    }

    /// Tokens of the channel (or of one user in it) that expire before now + ttl were issued
    /// before this moment: the relay refuses them (see `VoiceRevoke`). A later join_voice gets
    /// a token past that mark, so a member who comes back is not locked out.
    private func revoke(_ ch: VoiceChannels.Channel, userHash: UInt64, _ ctx: PluginContext) {
        // A clock read of its own, not the turn's wall time (monotonic + an offset refreshed
        // every second): revocation compares token expiries across turns, and a refreshed
        // offset can step back by a few ms, which would let a token issued just before slip by.
        let now = UInt64(Clock.wallMillis())
        let r = VoiceRevoke(channel: ch.id, userHash: userHash,
                            untilMillis: now + UInt64(config.voiceTokenTTLSeconds) * 1000 - 1, issuedMillis: now)
        if sender == nil { sender = try? UDPSender() }
        let bytes = r.encode(secret: secret)
        // Twice: one lost datagram on a busy network should not leave the channel open for a
        // whole token lifetime; a duplicate changes nothing at the relay.
        for _ in 0..<2 where sender?.send(bytes, to: channels.relays[ch.relay]) != true {
            channels.revocationsFailed.add(1, ordering: .relaxed)
        }
    }

    /// A voice member left (the room or the server): out of the channel, and the channel ends
    /// with its last member.
    private func leave(_ l: Local, _ ctx: PluginContext) {
        let member = VoiceChannels.Member(reactor: reactor, connection: ObjectIdentifier(l.connection), user: l.connection.user ?? "")
        guard let (ch, isEnd) = channels.remove(room: l.room, member) else { return }
        if isEnd {
            ended(ch, room: l.room, l.shared, reason: "empty", ctx)
        } else if !ch.members.contains(where: { $0.user == member.user }) {
            revoke(ch, userHash: VoiceToken.userHash(member.user), ctx)
        }
    }

    public func turnEnded(_ ctx: PluginContext) {
        guard !locals.isEmpty else { return }
        let now = ctx.now()
        guard now &- lastCheck >= Self.checkNanos else { return }
        lastCheck = now
        var i = 0
        while i < locals.count {
            let l = locals[i]
            if l.connection.rooms.contains(where: { $0.name == l.room }) { i += 1; continue }
            locals.remove(at: i)
            leave(l, ctx)
        }
        // Members of channels another reactor ended: nothing to undo, just forget them.
        if locals.count > 0, now / 1_000_000_000 != (now &- Self.checkNanos) / 1_000_000_000 {
            let live = channels.liveIDs()
            locals.removeAll { !live.contains($0.channel) }
        }
    }

    public func connectionClosed(_ c: Connection, _ ctx: PluginContext) {
        guard locals.contains(where: { $0.connection === c }) else { return }
        let mine = locals.filter { $0.connection === c }
        locals.removeAll { $0.connection === c }
        for l in mine { leave(l, ctx) }
    }

    static func hex(_ id: UInt32) -> String {
        let s = String(id, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}
