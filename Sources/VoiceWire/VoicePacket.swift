import CCrypto

/// The relay's UDP packet header (docs/protocol.md, "Voice"): 12 bytes, big-endian.
///
///     0      magic/version 0x56 ('V', version 1)
///     1      type: 0 join (payload: the token text), 1 audio (payload: opaque), 2 join ack
///            (relay → client, header only), 3 revoke (coordinator → relay)
///     2…3    member id: 0 from clients; the relay writes the sender's member id into every
///            packet it forwards (and the receiver's own id into its join ack)
///     4…7    channel id
///     8…11   sequence number (the sender's; the relay never looks at it)
///     12…    payload
public enum VoicePacket {
    public static let magic: UInt8 = 0x56
    public static let headerBytes = 12
    public static let join: UInt8 = 0
    public static let audio: UInt8 = 1
    public static let ack: UInt8 = 2
    public static let revoke: UInt8 = 3

    /// Writes a header at `p`.
    public static func writeHeader(_ p: UnsafeMutablePointer<UInt8>, type: UInt8, member: UInt16 = 0,
                                   channel: UInt32, seq: UInt32) {
        p[0] = magic
        p[1] = type
        writeBE(p + 2, UInt64(member), bytes: 2)
        writeBE(p + 4, UInt64(channel), bytes: 4)
        writeBE(p + 8, UInt64(seq), bytes: 4)
    }

    /// A header-plus-payload packet as bytes (clients, tests, the bench).
    public static func make(type: UInt8, channel: UInt32, seq: UInt32, payload: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerBytes + payload.count)
        b.withUnsafeMutableBufferPointer { p in writeHeader(p.baseAddress!, type: type, channel: channel, seq: seq) }
        b.replaceSubrange(headerBytes..., with: payload)
        return b
    }
}

/// The coordinator's revocation datagram: "voice in channel C (for user U, or everyone when U is
/// 0) is over; refuse it until T". Authenticated with the voice secret, so only a coordinator
/// can send it.
///
///     header (type 3, member 0, channel, seq 0) | user hash (u64) | until (u64, Unix ms)
///     | issued (u64, Unix ms) | HMAC-SHA256(secret, bytes 0…35) (32 bytes)     = 68 bytes
///
/// The relay accepts it only while `issued` is within `maxSkewMillis` of its own clock: a
/// replayed datagram can only revoke again a channel that had already been ended.
public struct VoiceRevoke: Equatable, Sendable {
    public static let bytes = 68
    public static let maxSkewMillis: UInt64 = 30_000

    public var channel: UInt32
    public var userHash: UInt64
    public var untilMillis: UInt64
    public var issuedMillis: UInt64

    public init(channel: UInt32, userHash: UInt64, untilMillis: UInt64, issuedMillis: UInt64) {
        self.channel = channel
        self.userHash = userHash
        self.untilMillis = untilMillis
        self.issuedMillis = issuedMillis
    }

    public func encode(secret: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.bytes)
        b.withUnsafeMutableBufferPointer { bp in
            let p = bp.baseAddress!
            VoicePacket.writeHeader(p, type: VoicePacket.revoke, channel: channel, seq: 0)
            writeBE(p + 12, userHash, bytes: 8)
            writeBE(p + 20, untilMillis, bytes: 8)
            writeBE(p + 28, issuedMillis, bytes: 8)
            _ = ccrypto_hmac_sha256(secret, secret.count, p, 36, p + 36)
        }
        return b
    }

    /// The revocation in `p` (`len` bytes) if its MAC checks out; `mac` is 32 bytes of scratch.
    public static func decode(_ p: UnsafePointer<UInt8>, _ len: Int, secret: UnsafeRawBufferPointer,
                              mac: UnsafeMutablePointer<UInt8>) -> VoiceRevoke? {
        guard len == bytes, p[0] == VoicePacket.magic, p[1] == VoicePacket.revoke else { return nil }
        guard ccrypto_hmac_sha256(secret.baseAddress, secret.count, p, 36, mac) == 0,
              ccrypto_equal(mac, p + 36, 32) == 1 else { return nil }
        return VoiceRevoke(channel: UInt32(readBE(p + 4, bytes: 4)), userHash: readBE(p + 12, bytes: 8),
                           untilMillis: readBE(p + 20, bytes: 8), issuedMillis: readBE(p + 28, bytes: 8))
    }
}
