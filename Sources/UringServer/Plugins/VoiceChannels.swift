import Primitives
import Synchronization
import VoiceWire

/// A relay as configured (`voice_relays=host:port,…`), resolved once at start.
public struct VoiceRelayAddress: Sendable, Equatable, CustomStringConvertible {
    public let host: String
    public let ipv4: UInt32
    public let port: UInt16
    public var description: String { "\(host):\(port)" }
}

/// The voice channels of one server: room → channel, shared by every reactor's
/// `VoiceCoordinator` (a room's members may sit on different reactors, and any of them may
/// start, join or end its voice). Taken under a lock at control-message rate only (start, join,
/// end, leave); the voice itself never passes through the TCP server.
public final class VoiceChannels: @unchecked Sendable {
    /// One voice member: a connection (by identity, on its reactor) and its user.
    struct Member: Equatable {
        let reactor: Int
        let connection: ObjectIdentifier
        let user: String
    }

    struct Channel {
        let id: UInt32
        /// Index into `relays`, fixed for the channel's life.
        let relay: Int
        let starter: String
        var members: [Member]
    }

    let relays: [VoiceRelayAddress]
    private let state = Locked<[String: Channel]>([:])

    init(relays: [VoiceRelayAddress]) { self.relays = relays }

    var channelCount: Int { state.withLock { $0.count } }
    /// Revocation datagrams the kernel refused to send (the token expiry still ends them).
    let revocationsFailed = Atomic<Int>(0)

    /// The ids of the running channels (a reactor forgets members of channels that ended).
    func liveIDs() -> Set<UInt32> { state.withLock { Set($0.values.map(\.id)) } }

    enum StartResult { case started(Channel), alreadyRunning }

    /// Opens the room's channel with `starter` as its first member. The relay is picked by a
    /// hash of the room name, so a room returns to the same relay while the list is unchanged.
    func start(room: String, starter: Member) -> StartResult {
        state.withLock { m in
            if m[room] != nil { return .alreadyRunning }
            var id: UInt32 = 0
            // Random, non-zero, unique among live channels: a revoked id must not come back
            // while relays still refuse it.
            repeat { id = UInt32.random(in: 1...UInt32.max) } while m.values.contains { $0.id == id }
            let relay = Int(VoiceToken.userHash(room) % UInt64(max(1, relays.count)))
            let c = Channel(id: id, relay: relay, starter: starter.user, members: [starter])
            m[room] = c
            return .started(c)
        }
    }

    /// Adds `member` to the room's channel (again is fine: a refresh); nil when none runs.
    func join(room: String, _ member: Member) -> Channel? {
        state.withLock { m in
            guard var c = m[room] else { return nil }
            if !c.members.contains(member) {
                c.members.append(member)
                m[room] = c
            }
            return c
        }
    }

    enum EndResult { case ended(Channel), notRunning, notStarter(String) }

    /// Ends the room's channel if `user` started it, or — once the starter has left the
    /// voice — if `user` is one of its members (else nobody could end it but the last to leave).
    func end(room: String, by user: String) -> EndResult {
        state.withLock { m in
            guard let c = m[room] else { return .notRunning }
            let starterGone = !c.members.contains { $0.user == c.starter }
            guard c.starter == user || (starterGone && c.members.contains { $0.user == user }) else {
                return .notStarter(c.starter)
            }
            m[room] = nil
            return .ended(c)
        }
    }

    /// Takes `member` out of the room's channel. Returns the channel, and whether it ended
    /// (the last voice member left).
    func remove(room: String, _ member: Member) -> (channel: Channel, ended: Bool)? {
        state.withLock { m in
            guard var c = m[room], let i = c.members.firstIndex(of: member) else { return nil }
            c.members.remove(at: i)
            if c.members.isEmpty {
                m[room] = nil
                return (c, true)
            }
            m[room] = c
            return (c, false)
        }
    }

    /// Parses `host:port,…` (IPv4 addresses or localhost).
    static func parseRelays(_ v: String) -> [VoiceRelayAddress]? {
        var out: [VoiceRelayAddress] = []
        for item in v.split(separator: ",") {
            let s = String(item).trimmingSpaces()
            guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]), port > 0 else { return nil }
            let host = String(s[..<colon])
            let dotted = host == "localhost" ? "127.0.0.1" : host
            let parts = dotted.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
            guard parts.count == 4 else { return nil }
            let ip = parts.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            out.append(VoiceRelayAddress(host: host, ipv4: ip, port: port))
        }
        return out
    }
}
