import VoiceWire

/// One relay thread's packet logic, the same for both io modes: a datagram in, a verdict out
/// (drop, forward to `dests[0..<destCount]`, or answer with the 12-byte `ack`). The io loop
/// owns the sockets and the buffers; this owns the thread's bindings (address → member).
///
/// A client's packets always reach the same thread (SO_REUSEPORT hashes the address pair), so
/// its binding is thread-local; the channel's member list is shared (`RelayChannel`).
final class RelayCore {
    enum Verdict { case consumed, dropped, forward, ack }

    /// A bound client address. A class so the per-packet `lastSeen` update is one lookup.
    final class Binding {
        let channel: RelayChannel
        let slot: Int
        var expiry: UInt64
        var lastSeen: UInt64
        var lastAck: UInt64 = 0
        init(channel: RelayChannel, slot: Int, expiry: UInt64, lastSeen: UInt64) {
            self.channel = channel
            self.slot = slot
            self.expiry = expiry
            self.lastSeen = lastSeen
        }
    }

    let index: Int
    let table: ChannelTable
    let board: RelayStatsBoard
    let maxPacket: Int
    let idleNanos: UInt64
    var counters = RelayCounters()
    private(set) var bindings: [AddrKey: Binding] = [:]

    /// Where a forwarded packet goes (capacity: members per channel).
    let dests: UnsafeMutablePointer<AddrKey>
    private(set) var destCount = 0
    /// The join ack to send back (a header, never more than the join that asked for it).
    let ack: UnsafeMutablePointer<UInt8>
    /// Acks to one address at most this often: a replayed join is answered at a bounded rate.
    static let ackIntervalNanos: UInt64 = 200_000_000

    private let secret: UnsafeMutableRawBufferPointer
    private let scratch: UnsafeMutablePointer<UInt8>
    private var expired: [AddrKey] = []
    private var lastSweep: UInt64 = 0
    private var sweeps = 0

    init(index: Int, table: ChannelTable, board: RelayStatsBoard, config: RelayConfig) {
        self.index = index
        self.table = table
        self.board = board
        maxPacket = config.maxPacket
        idleNanos = UInt64(config.idleMillis) * 1_000_000
        dests = .allocate(capacity: config.maxMembers)
        ack = .allocate(capacity: VoicePacket.headerBytes)
        let s = Array(config.secret.utf8)
        secret = .allocate(byteCount: s.count, alignment: 1)
        secret.copyBytes(from: s)
        scratch = .allocate(capacity: VoiceToken.scratchBytes)
        bindings.reserveCapacity(1024)
        expired.reserveCapacity(1024)
    }

    deinit {
        dests.deallocate()
        ack.deallocate()
        secret.deallocate()
        scratch.deallocate()
    }

    /// Judges one datagram of `len` bytes at `p` from `from`. `p` is writable: a forwarded
    /// packet gets the sender's member id written into its header.
    func handle(_ p: UnsafeMutablePointer<UInt8>, _ len: Int, truncated: Bool, from: AddrKey,
                now: UInt64, wall: UInt64) -> Verdict {
        counters.packetsIn &+= 1
        counters.bytesIn &+= UInt64(len)
        if truncated || len > maxPacket { return drop(.oversized) }
        if len < VoicePacket.headerBytes { return drop(.runt) }
        if p[0] != VoicePacket.magic { return drop(.malformed) }
        switch p[1] {
        case VoicePacket.audio: return audio(p, len, from: from, now: now, wall: wall)
        case VoicePacket.join: return join(p, len, from: from, now: now, wall: wall)
        case VoicePacket.revoke: return control(p, len, wall: wall)
        default: return drop(.malformed)
        }
    }

    @inline(__always) private func drop(_ r: DropReason) -> Verdict {
        counters.drop(r)
        return .dropped
    }

    private func audio(_ p: UnsafeMutablePointer<UInt8>, _ len: Int, from: AddrKey, now: UInt64, wall: UInt64) -> Verdict {
        guard let b = bindings[from] else { return drop(.unknownSender) }
        let ch = b.channel
        if UInt32(readBE(p + 4, bytes: 4)) != ch.id { return drop(.wrongChannel) }
        if ch.revoked.load(ordering: .acquiring) {
            unbind(from, b)
            return drop(.revoked)
        }
        if b.expiry <= wall {
            unbind(from, b)
            return drop(.expired)
        }
        b.lastSeen = now
        let slot = b.slot
        let dests = self.dests
        // 0 ok, 1 moved (the member rebound elsewhere), 2 revoked.
        var status = 0
        var n = 0
        ch.members.withLock { m in
            guard m.used[slot], m.addr[slot] == from else { status = 1; return }
            if m.revoked[slot] { status = 2; return }
            for i in 0..<m.used.count where m.used[i] && i != slot && !m.revoked[i] {
                dests[n] = m.addr[i]
                n += 1
            }
        }
        if status == 1 {
            bindings[from] = nil
            return drop(.unknownSender)
        }
        if status == 2 {
            unbind(from, b)
            return drop(.revoked)
        }
        writeBE(p + 2, UInt64(slot), bytes: 2)
        destCount = n
        return .forward
    }

    private func join(_ p: UnsafeMutablePointer<UInt8>, _ len: Int, from: AddrKey, now: UInt64, wall: UInt64) -> Verdict {
        let text = UnsafeRawBufferPointer(start: p + VoicePacket.headerBytes, count: len - VoicePacket.headerBytes)
        guard case .success(let tok) = VoiceToken.verify(text, secret: UnsafeRawBufferPointer(secret), scratch: scratch) else {
            return drop(.badToken)
        }
        if tok.channel != UInt32(readBE(p + 4, bytes: 4)) { return drop(.wrongChannel) }
        if tok.expiryMillis <= wall { return drop(.expired) }
        if table.isRevoked(channel: tok.channel, userHash: tok.userHash, expiry: tok.expiryMillis, now: wall) { return drop(.revoked) }
        if let old = bindings[from] {
            if old.channel.id == tok.channel && !old.channel.revoked.load(ordering: .relaxed) {
                // A repeated join (the client did not see the ack, or refreshes its token).
                old.expiry = max(old.expiry, tok.expiryMillis)
                old.lastSeen = now
                _ = old.channel.bind(userHash: tok.userHash, addr: from, expiry: tok.expiryMillis)
                return answer(old, now: now)
            }
            unbind(from, old)
        }
        let ch = table.channel(tok.channel)
        if ch.revoked.load(ordering: .acquiring) { return drop(.revoked) }
        switch ch.bind(userHash: tok.userHash, addr: from, expiry: tok.expiryMillis) {
        case .full:
            table.dropIfEmpty(ch)
            return drop(.channelFull)
        case .bound(let slot, let movedFrom):
            if let movedFrom {
                counters.rebinds &+= 1
                // The old address's binding, if this thread holds it, no longer speaks for the
                // member (another thread's is found stale at its next packet or sweep).
                if let stale = bindings[movedFrom], stale.channel === ch, stale.slot == slot { bindings[movedFrom] = nil }
            }
            counters.joins &+= 1
            let b = Binding(channel: ch, slot: slot, expiry: tok.expiryMillis, lastSeen: now)
            bindings[from] = b
            return answer(b, now: now)
        }
    }

    private func answer(_ b: Binding, now: UInt64) -> Verdict {
        guard now &- b.lastAck >= Self.ackIntervalNanos else { return .consumed }
        b.lastAck = now
        VoicePacket.writeHeader(ack, type: VoicePacket.ack, member: UInt16(b.slot), channel: b.channel.id, seq: 0)
        counters.acks &+= 1
        return .ack
    }

    private func control(_ p: UnsafeMutablePointer<UInt8>, _ len: Int, wall: UInt64) -> Verdict {
        guard let r = VoiceRevoke.decode(p, len, secret: UnsafeRawBufferPointer(secret), mac: scratch) else {
            return drop(.badToken)
        }
        let skew = r.issuedMillis > wall ? r.issuedMillis - wall : wall - r.issuedMillis
        if skew > VoiceRevoke.maxSkewMillis { return drop(.expired) }
        table.revoke(channel: r.channel, userHash: r.userHash, until: r.untilMillis)
        counters.revocations &+= 1
        return .consumed
    }

    private func unbind(_ from: AddrKey, _ b: Binding) {
        bindings[from] = nil
        if b.channel.unbind(slot: b.slot, addr: from) == 0 { table.dropIfEmpty(b.channel) }
    }

    /// Every 100 ms: unbinds idle, expired and revoked members, publishes the counters.
    func sweepIfDue(now: UInt64, wall: UInt64) {
        guard now &- lastSweep >= 100_000_000 else { return }
        lastSweep = now
        sweeps &+= 1
        expired.removeAll(keepingCapacity: true)
        for (addr, b) in bindings where now &- b.lastSeen > idleNanos || b.expiry <= wall || b.channel.revoked.load(ordering: .relaxed) {
            expired.append(addr)
        }
        for addr in expired {
            guard let b = bindings[addr] else { continue }
            if now &- b.lastSeen > idleNanos { counters.idleUnbinds &+= 1 }
            unbind(addr, b)
        }
        if index == 0 && sweeps % 100 == 0 { table.pruneRevocations(nowMillis: wall) }
        board.publish(index, counters)
    }

    /// Counts a forwarded copy the io loop handed to the kernel.
    @inline(__always) func sent(bytes: Int) {
        counters.packetsOut &+= 1
        counters.bytesOut &+= UInt64(bytes)
    }

    @inline(__always) func recordLatency(_ ns: UInt64, packets: UInt64) {
        counters.latency[LatencyBuckets.index(ns)] &+= packets
    }
}
