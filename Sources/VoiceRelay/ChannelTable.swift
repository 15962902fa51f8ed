import Primitives
import Synchronization

/// One channel's members, shared by the relay threads: SO_REUSEPORT spreads clients over the
/// threads by address hash, so a channel's members sit on several threads, and whichever thread
/// receives a member's packet sends the copies to all the others from its own socket (all
/// sockets share the port, so clients see one relay address).
///
/// The member list is read under the channel's lock once per forwarded packet (into the
/// thread's destination array), written at join, revocation and unbind. A member's slot
/// index is its member id in the packet header.
final class RelayChannel: @unchecked Sendable {
    let id: UInt32
    /// Set by a channel-wide revocation: every thread drops the channel's packets from then on.
    let revoked = Atomic<Bool>(false)

    struct Members {
        var used: [Bool]
        var addr: [AddrKey]
        var userHash: [UInt64]
        var expiry: [UInt64]
        var revoked: [Bool]
        var count = 0
        init(capacity: Int) {
            used = .init(repeating: false, count: capacity)
            addr = .init(repeating: 0, count: capacity)
            userHash = .init(repeating: 0, count: capacity)
            expiry = .init(repeating: 0, count: capacity)
            revoked = .init(repeating: false, count: capacity)
        }
    }
    let members: Locked<Members>

    init(id: UInt32, capacity: Int) {
        self.id = id
        members = Locked(Members(capacity: capacity))
    }

    enum Bind { case bound(slot: Int, movedFrom: AddrKey?), full }

    /// Binds `user` at `addr`; the same user from a new address moves (NAT rebinding).
    func bind(userHash: UInt64, addr: AddrKey, expiry: UInt64) -> Bind {
        members.withLock { m in
            var free = -1
            for i in 0..<m.used.count {
                if m.used[i] && m.userHash[i] == userHash {
                    let old = m.addr[i]
                    m.addr[i] = addr
                    m.expiry[i] = max(m.expiry[i], expiry)
                    m.revoked[i] = false
                    return .bound(slot: i, movedFrom: old == addr ? nil : old)
                }
                if !m.used[i] && free < 0 { free = i }
            }
            guard free >= 0 else { return .full }
            m.used[free] = true
            m.addr[free] = addr
            m.userHash[free] = userHash
            m.expiry[free] = expiry
            m.revoked[free] = false
            m.count += 1
            return .bound(slot: free, movedFrom: nil)
        }
    }

    /// Frees `slot` if `addr` still holds it (a member that moved keeps its slot); returns the
    /// members left.
    func unbind(slot: Int, addr: AddrKey) -> Int {
        members.withLock { m in
            if m.used[slot] && m.addr[slot] == addr {
                m.used[slot] = false
                m.count -= 1
            }
            return m.count
        }
    }

    var memberCount: Int { members.withLock { $0.count } }
}

/// Every channel the relay serves, and the revocations it has been sent. Locked at join,
/// revocation and unbind rate, never per packet.
final class ChannelTable: @unchecked Sendable {
    private let channels = Locked<[UInt32: RelayChannel]>([:])
    /// (channel, user hash or 0 for all) → tokens expiring at or before this are void.
    private let revocations = Locked<[Revocation: UInt64]>([:])
    let capacity: Int

    struct Revocation: Hashable {
        let channel: UInt32
        let userHash: UInt64
    }

    init(maxMembers: Int) { capacity = maxMembers }

    func channel(_ id: UInt32) -> RelayChannel {
        channels.withLock { m in
            if let c = m[id] { return c }
            let c = RelayChannel(id: id, capacity: capacity)
            m[id] = c
            return c
        }
    }

    /// Forgets `c` once its last member is gone (unless a new one took its id meanwhile).
    func dropIfEmpty(_ c: RelayChannel) {
        channels.withLock { m in
            if m[c.id] === c && c.memberCount == 0 { m[c.id] = nil }
        }
    }

    /// Whether a token of `userHash` in `channel` expiring at `expiry` has been revoked. An
    /// ended channel refuses every token until its revocation lapses (its id is not reused);
    /// a user's revocation refuses only tokens issued before it (expiring by `until`), so a
    /// member who rejoins the room and asks again gets in.
    func isRevoked(channel: UInt32, userHash: UInt64, expiry: UInt64, now: UInt64) -> Bool {
        revocations.withLock { r in
            if let until = r[Revocation(channel: channel, userHash: 0)], now <= until { return true }
            if let until = r[Revocation(channel: channel, userHash: userHash)], expiry <= until { return true }
            return false
        }
    }

    /// Applies a revocation: the whole channel (userHash 0) or one user's bindings in it.
    func revoke(channel id: UInt32, userHash: UInt64, until: UInt64) {
        revocations.withLock { r in
            let k = Revocation(channel: id, userHash: userHash)
            r[k] = max(r[k] ?? 0, until)
        }
        guard let c = channels.withLock({ $0[id] }) else { return }
        if userHash == 0 {
            c.revoked.store(true, ordering: .releasing)
            channels.withLock { m in if m[id] === c { m[id] = nil } }
            return
        }
        c.members.withLock { m in
            for i in 0..<m.used.count where m.used[i] && m.userHash[i] == userHash && m.expiry[i] <= until {
                m.revoked[i] = true
            }
        }
    }

    /// Drops revocations whose tokens have all expired.
    func pruneRevocations(nowMillis: UInt64) {
        revocations.withLock { r in
            if r.isEmpty { return }
            r = r.filter { $0.value >= nowMillis }
        }
    }

    /// Channels and bound members, for /stats.
    func census() -> (channels: Int, members: Int) {
        let all = channels.withLock { Array($0.values) }
        return (all.count, all.reduce(0) { $0 + $1.memberCount })
    }
}
