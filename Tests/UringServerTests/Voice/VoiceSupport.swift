// Voice tests' support: an in-process relay beside an in-process TCP server, and a UDP client.

import Foundation
import Glibc
import Testing
import UringServer
import VoiceRelay
import VoiceWire

let voiceSecret = "test-voice-secret"

/// Starts a relay (in `mode`, 2 threads, stats on a free port) and a TCP server whose
/// coordinator points at it; runs `body`; stops both.
func withVoice<R>(_ mode: IOModeSetting, idleMs: Int = 10_000, ttl: Int = 60,
                  sourceLocation: SourceLocation = #_sourceLocation,
                  configure: (inout ServerConfig) -> Void = { _ in },
                  _ body: (_ server: Server, _ relay: VoiceRelay) throws -> R) throws -> R {
    var rc = RelayConfig()
    rc.port = 0
    rc.statsPort = 0
    rc.threads = 2
    rc.io = mode == .epoll ? .epoll : .uring
    rc.secret = voiceSecret
    rc.idleMillis = idleMs
    let relay = VoiceRelay(config: rc)
    try relay.start()
    defer { relay.stop() }
    return try withRunningServer(mode, sourceLocation: sourceLocation, configure: { c in
        setConfig(&c, "voice_secret", voiceSecret)
        setConfig(&c, "voice_relays", "127.0.0.1:\(relay.port)")
        setConfig(&c, "voice_token_ttl_s", "\(ttl)")
        configure(&c)
    }) { server in try body(server, relay) }
}

/// What a `voice` message carries.
struct VoiceGrant {
    let channel: UInt32
    let relayPort: Int
    let token: String
    let expires: Int

    init(_ m: JSONObject, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(m.type == "voice", "expected a voice message, got \(m)", sourceLocation: sourceLocation)
        let ch = try #require((m["channel"] as? String).flatMap { UInt32($0, radix: 16) }, "channel in \(m)")
        let relay = try #require(m["relay"] as? String, "relay in \(m)")
        channel = ch
        relayPort = Int(relay.split(separator: ":").last ?? "") ?? 0
        token = try #require(m["token"] as? String, "token in \(m)")
        expires = try #require(m["expires"] as? Int, "expires in \(m)")
    }
}

/// A TCP client that said hello as `user` and joined `room`.
func voiceMember(_ port: Int, _ user: String, room: String) throws -> TestClient {
    let c = try TestClient(port: port)
    try c.hello(user)
    try c.join(room)
    return c
}

/// start_voice (or join_voice) → the grant.
func requestVoice(_ c: TestClient, _ type: String, room: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> VoiceGrant {
    try c.send(["type": type, "room": room])
    return try VoiceGrant(try c.read(until: "voice"), sourceLocation: sourceLocation)
}

/// A UDP socket talking to the relay.
final class VoiceUDP: @unchecked Sendable {
    let fd: Int32
    let relayPort: Int

    init(relayPort: Int) throws {
        self.relayPort = relayPort
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw ClientError.protocolViolation("socket: \(errno)") }
        var sz: Int32 = 8 << 20
        // FORCE passes net.core.rmem_max when privileged (CI runs as root); else the capped size.
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, socklen_t(MemoryLayout<Int32>.size))
        }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }

    deinit { close(fd) }

    var localPort: Int {
        var a = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    func send(_ bytes: [UInt8]) {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(relayPort)).bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = bytes.withUnsafeBytes { b in
            withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    func join(_ g: VoiceGrant, channel: UInt32? = nil) {
        send(VoicePacket.make(type: VoicePacket.join, channel: channel ?? g.channel, seq: 0, payload: Array(g.token.utf8)))
    }

    func audio(_ channel: UInt32, seq: UInt32, _ payload: [UInt8]) {
        send(VoicePacket.make(type: VoicePacket.audio, channel: channel, seq: seq, payload: payload))
    }

    /// The next datagram within `timeout` seconds, or nil.
    func receive(timeout: Double) -> [UInt8]? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, Int32(timeout * 1000)) > 0 else { return nil }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n < 0 ? nil : Array(buf[..<n])
    }

    /// Joins and waits for the ack; returns the member id it carries.
    @discardableResult
    func joinAcked(_ g: VoiceGrant, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
        for _ in 0..<5 {
            join(g)
            if let a = receive(timeout: 1) {
                #expect(a.count == VoicePacket.headerBytes && a[1] == VoicePacket.ack, "join ack: \(a)", sourceLocation: sourceLocation)
                return Int(a[2]) << 8 | Int(a[3])
            }
        }
        Issue.record("no join ack", sourceLocation: sourceLocation)
        throw ClientError.timeout("join ack")
    }

    /// Discards whatever is queued.
    func drain() { while receive(timeout: 0.05) != nil {} }
}

/// A packet's sequence number and member id.
func voiceHeader(_ p: [UInt8]) -> (type: UInt8, member: Int, channel: UInt32, seq: UInt32) {
    (p[1], Int(p[2]) << 8 | Int(p[3]),
     UInt32(p[4]) << 24 | UInt32(p[5]) << 16 | UInt32(p[6]) << 8 | UInt32(p[7]),
     UInt32(p[8]) << 24 | UInt32(p[9]) << 16 | UInt32(p[10]) << 8 | UInt32(p[11]))
}

/// Polls the relay's counters until `ok` holds (they are published every 100 ms).
func relayEventually(_ relay: VoiceRelay, timeout: Double = 3, _ ok: (RelayStatsSnapshot) -> Bool) -> RelayStatsSnapshot {
    let deadline = Date().addingTimeInterval(timeout)
    var s = relay.snapshot()
    while !ok(s) && Date() < deadline {
        Thread.sleep(forTimeInterval: 0.05)
        s = relay.snapshot()
    }
    return s
}

/// Sends audio from `from` every 20 ms until `to` receives one or `timeout` passes; returns
/// how long relaying took to stop (nil: it never stopped).
func timeUntilSilent(from: VoiceUDP, to: VoiceUDP, channel: UInt32, timeout: Double) -> Double? {
    let start = Date()
    var seq: UInt32 = 100_000
    var lastHeard = start
    while Date().timeIntervalSince(start) < timeout {
        seq += 1
        from.audio(channel, seq: seq, [1, 2, 3])
        if to.receive(timeout: 0.02) != nil { lastHeard = Date() }
        if Date().timeIntervalSince(lastHeard) > 0.3 { return lastHeard.timeIntervalSince(start) }
    }
    return nil
}
