// Voice formats and settings without sockets: token and revocation round trips (and what a
// tampered one gives), the voice config keys, the relay's flags.

import Testing
import UringServer
import VoiceRelay
import VoiceWire

private func check(_ token: String, _ secret: String) -> Result<VoiceToken, VoiceToken.Failure> {
    let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: VoiceToken.scratchBytes)
    defer { scratch.deallocate() }
    return Array(token.utf8).withUnsafeBytes { t in Array(secret.utf8).withUnsafeBytes { VoiceToken.verify(t, secret: $0, scratch: scratch) } }
}

@Suite("Voice: wire formats and settings")
struct VoiceWireTests {
    @Test("a token round-trips; a changed byte, another secret or garbage does not verify")
    func token() {
        let t = VoiceToken.issue(secret: Array("k".utf8), channel: 0xDEAD_BEEF, user: "ünïcode user", expiryMillis: 1_800_000_000_123)
        #expect(!t.contains("=") && !t.contains("+") && !t.contains("/"), "base64url without padding: \(t)")
        #expect(check(t, "k") == .success(VoiceToken(channel: 0xDEAD_BEEF, expiryMillis: 1_800_000_000_123,
                                                       userHash: VoiceToken.userHash("ünïcode user"))))
        #expect(check(t, "other") == .failure(.badMAC))
        var chars = Array(t)
        chars[10] = chars[10] == "A" ? "B" : "A"
        #expect(check(String(chars), "k") != check(t, "k"))
        #expect(check("not a token!", "k") == .failure(.malformed))
        #expect(check(String(t.dropLast(4)), "k") != check(t, "k"))
        #expect(check("", "k") == .failure(.malformed))
    }

    @Test("a revocation round-trips and is refused with another secret or a changed byte")
    func revoke() {
        let r = VoiceRevoke(channel: 7, userHash: 42, untilMillis: 1000, issuedMillis: 900)
        var b = r.encode(secret: Array("k".utf8))
        #expect(b.count == VoiceRevoke.bytes)
        let mac = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)
        defer { mac.deallocate() }
        func decode(_ secret: String) -> VoiceRevoke? {
            Array(secret.utf8).withUnsafeBytes { s in b.withUnsafeBufferPointer { VoiceRevoke.decode($0.baseAddress!, $0.count, secret: s, mac: mac) } }
        }
        #expect(decode("k") == r)
        #expect(decode("x") == nil)
        b[20] ^= 1
        #expect(decode("k") == nil)
    }

    @Test("voice config keys: relays parsed, bad lists and ttl refused")
    func config() throws {
        var c = ServerConfig()
        try c.set("voice_relays", "127.0.0.1:4100, localhost:4200")
        #expect(c.voiceRelays.map(\.description) == ["127.0.0.1:4100", "localhost:4200"])
        for bad in ["127.0.0.1", "host:4100", "1.2.3.4:0", "1.2.3:4100", "1.2.3.4:99999"] {
            #expect(throws: ConfigError.self, "\(bad)") { try c.set("voice_relays", bad) }
        }
        #expect(throws: ConfigError.self) { try c.set("voice_token_ttl_s", "0") }
        try c.set("voice_token_ttl_s", "30")
        #expect(c.voiceTokenTTLSeconds == 30)
        #expect(c.flagDeclarations.contains { $0.name == "enable_voice" && $0.critical })
    }

    @Test("relay flags: parsed, validated, secret required")
    func relayFlags() throws {
        let c = try RelayConfig.parse(["--port", "0", "--io", "epoll", "--threads", "3", "--max-packet", "500", "--idle-ms", "250"],
                                      environment: "s")
        #expect(c.port == 0 && c.io == .epoll && c.threads == 3 && c.maxPacket == 500 && c.idleMillis == 250 && c.secret == "s")
        #expect(throws: RelayConfig.Invalid.self) { try RelayConfig.parse([], environment: nil) }
        #expect(throws: RelayConfig.Invalid.self) { try RelayConfig.parse(["--io", "kqueue", "--secret", "s"], environment: nil) }
        #expect(throws: RelayConfig.Invalid.self) { try RelayConfig.parse(["--port", "70000", "--secret", "s"], environment: nil) }
        #expect(throws: RelayConfig.Invalid.self) { try RelayConfig.parse(["--bogus"], environment: "s") }
    }
}
