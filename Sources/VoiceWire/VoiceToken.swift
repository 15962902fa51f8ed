import CCrypto

/// A voice token: the stateless credential the coordinator (TCP server) issues and the relay
/// checks with nothing but the shared secret, as TURN's REST-API credentials (coturn
/// `use-auth-secret`) are checked.
///
/// Text form: base64url, no padding, of
///
///     version (1 byte, = 1) | channel (u32 BE) | expiry (u64 BE, Unix ms) | user length (1 byte)
///     | user (UTF-8, 1…128 bytes) | HMAC-SHA256(secret, every byte before it) (32 bytes)
///
/// HMAC and Base64 come from OpenSSL's libcrypto (CCrypto); nothing here is crypto of its own.
public struct VoiceToken: Equatable, Sendable {
    public static let version: UInt8 = 1
    public static let maxUserBytes = 128
    /// Longest binary token (1 + 4 + 8 + 1 + 128 + 32) and its text.
    public static let maxBytes = 174
    public static let maxTextBytes = 232

    public var channel: UInt32
    public var expiryMillis: UInt64
    /// FNV-1a 64 of the user name: what the relay keys a member by (it never needs the name).
    public var userHash: UInt64

    public init(channel: UInt32, expiryMillis: UInt64, userHash: UInt64) {
        self.channel = channel
        self.expiryMillis = expiryMillis
        self.userHash = userHash
    }

    /// The token text for `user` in `channel`, valid until `expiryMillis`.
    public static func issue(secret: [UInt8], channel: UInt32, user: String, expiryMillis: UInt64) -> String {
        var b: [UInt8] = [version]
        appendBE(&b, UInt64(channel), bytes: 4)
        appendBE(&b, expiryMillis, bytes: 8)
        let u = Array(user.utf8.prefix(maxUserBytes))
        b.append(UInt8(u.count))
        b.append(contentsOf: u)
        var mac = [UInt8](repeating: 0, count: 32)
        _ = ccrypto_hmac_sha256(secret, secret.count, b, b.count, &mac)
        b.append(contentsOf: mac)
        var text = [CChar](repeating: 0, count: (b.count + 2) / 3 * 4 + 1)
        let n = ccrypto_base64url_encode(b, b.count, &text)
        return String(decoding: text[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public enum Failure: Error, Equatable { case malformed, badMAC }

    /// Bytes of scratch `verify` needs.
    public static let scratchBytes = 256

    /// Checks `text` against `secret`; `scratch` (`scratchBytes`) holds the decoded token and
    /// the recomputed MAC, so a relay thread verifies without allocating.
    public static func verify(_ text: UnsafeRawBufferPointer, secret: UnsafeRawBufferPointer,
                              scratch: UnsafeMutablePointer<UInt8>) -> Result<VoiceToken, Failure> {
        guard text.count >= 8, text.count <= maxTextBytes else { return .failure(.malformed) }
        let n = ccrypto_base64url_decode(text.baseAddress!.assumingMemoryBound(to: CChar.self), text.count, scratch)
        guard n >= 14 + 1 + 32, scratch[0] == version else { return .failure(.malformed) }
        let userLen = Int(scratch[13])
        guard userLen >= 1, userLen <= maxUserBytes, n == 14 + userLen + 32 else { return .failure(.malformed) }
        let signed = 14 + userLen
        let mac = scratch + (scratchBytes - 32)   // past the longest token
        guard ccrypto_hmac_sha256(secret.baseAddress, secret.count, scratch, signed, mac) == 0,
              ccrypto_equal(mac, scratch + signed, 32) == 1 else { return .failure(.badMAC) }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<userLen {
            h ^= UInt64(scratch[14 + i])
            h &*= 0x0000_0100_0000_01b3
        }
        return .success(VoiceToken(channel: UInt32(readBE(scratch + 1, bytes: 4)),
                                   expiryMillis: readBE(scratch + 5, bytes: 8), userHash: h))
    }

    /// FNV-1a 64 of a user name (the same hash the relay computes from a token).
    public static func userHash(_ user: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in user.utf8.prefix(maxUserBytes) {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01b3
        }
        return h
    }
}

@inline(__always)
func appendBE(_ b: inout [UInt8], _ v: UInt64, bytes: Int) {
    for i in stride(from: bytes - 1, through: 0, by: -1) { b.append(UInt8(truncatingIfNeeded: v >> (UInt64(i) * 8))) }
}

@inline(__always)
public func readBE(_ p: UnsafePointer<UInt8>, bytes: Int) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<bytes { v = v << 8 | UInt64(p[i]) }
    return v
}

@inline(__always)
public func writeBE(_ p: UnsafeMutablePointer<UInt8>, _ v: UInt64, bytes: Int) {
    for i in 0..<bytes { p[i] = UInt8(truncatingIfNeeded: v >> (UInt64(bytes - 1 - i) * 8)) }
}
