import CCrypto
import Glibc

// A minimal TURN client (RFC 8656 over UDP) for the voice comparison with coturn: Allocate with
// REST-API credentials (coturn's use-auth-secret: username "expiry:user", password
// base64(HMAC-SHA1(secret, username))), ChannelBind to every other member's relayed address,
// then ChannelData. Only what the bench needs; HMAC-SHA1 and MD5 come from libcrypto (CCrypto).

enum STUN {
    static let cookie: UInt32 = 0x2112_A442
    static let allocate: UInt16 = 0x0003
    static let channelBind: UInt16 = 0x0009
    static let successBit: UInt16 = 0x0100
    static let errorBit: UInt16 = 0x0110

    static let username: UInt16 = 0x0006
    static let integrity: UInt16 = 0x0008
    static let errorCode: UInt16 = 0x0009
    static let channelNumber: UInt16 = 0x000C
    static let lifetime: UInt16 = 0x000D
    static let peerAddress: UInt16 = 0x0012
    static let realm: UInt16 = 0x0014
    static let nonce: UInt16 = 0x0015
    static let relayedAddress: UInt16 = 0x0016
    static let transport: UInt16 = 0x0019
}

/// One STUN message being built.
struct STUNMessage {
    var bytes: [UInt8] = []

    init(type: UInt16) {
        put16(type)
        put16(0)
        put32(STUN.cookie)
        for _ in 0..<12 { bytes.append(UInt8.random(in: 0...255)) }
    }

    mutating func put16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff)) }
    mutating func put32(_ v: UInt32) { put16(UInt16(v >> 16)); put16(UInt16(v & 0xffff)) }

    mutating func attr(_ type: UInt16, _ value: [UInt8]) {
        put16(type)
        put16(UInt16(value.count))
        bytes += value
        while bytes.count % 4 != 0 { bytes.append(0) }
        setLength(bytes.count - 20)
    }

    mutating func setLength(_ n: Int) {
        bytes[2] = UInt8(n >> 8)
        bytes[3] = UInt8(n & 0xff)
    }

    static func xorAddress(ip: UInt32, port: UInt16) -> [UInt8] {
        let xp = port ^ UInt16(STUN.cookie >> 16)
        let xa = ip ^ STUN.cookie
        return [0, 1, UInt8(xp >> 8), UInt8(xp & 0xff),
                UInt8(xa >> 24), UInt8((xa >> 16) & 0xff), UInt8((xa >> 8) & 0xff), UInt8(xa & 0xff)]
    }

    /// Appends MESSAGE-INTEGRITY (HMAC-SHA1 with `key` over the message, its length already
    /// counting the attribute).
    mutating func sign(key: [UInt8]) {
        setLength(bytes.count - 20 + 24)
        var mac = [UInt8](repeating: 0, count: 20)
        _ = ccrypto_hmac_sha1(key, key.count, bytes, bytes.count, &mac)
        attr(STUN.integrity, mac)
    }
}

/// A parsed STUN response: its type and attributes.
struct STUNResponse {
    let type: UInt16
    let attrs: [UInt16: [UInt8]]

    init?(_ b: [UInt8]) {
        guard b.count >= 20, b[0] & 0xC0 == 0 else { return nil }
        type = UInt16(b[0]) << 8 | UInt16(b[1])
        let len = Int(b[2]) << 8 | Int(b[3])
        var a: [UInt16: [UInt8]] = [:]
        var i = 20
        while i + 4 <= min(b.count, 20 + len) {
            let t = UInt16(b[i]) << 8 | UInt16(b[i + 1])
            let l = Int(b[i + 2]) << 8 | Int(b[i + 3])
            guard i + 4 + l <= b.count else { break }
            a[t] = Array(b[(i + 4)..<(i + 4 + l)])
            i += 4 + (l + 3) / 4 * 4
        }
        attrs = a
    }

    /// An XOR-…-ADDRESS attribute as (ip, port), host order.
    func address(_ type: UInt16) -> (UInt32, UInt16)? {
        guard let v = attrs[type], v.count >= 8, v[1] == 1 else { return nil }
        let port = (UInt16(v[2]) << 8 | UInt16(v[3])) ^ UInt16(STUN.cookie >> 16)
        let ip = (UInt32(v[4]) << 24 | UInt32(v[5]) << 16 | UInt32(v[6]) << 8 | UInt32(v[7])) ^ STUN.cookie
        return (ip, port)
    }

    var errorCode: Int? {
        guard let v = attrs[STUN.errorCode], v.count >= 4 else { return nil }
        return Int(v[2]) * 100 + Int(v[3])
    }
}

/// One TURN allocation on a UDP socket (blocking requests during set-up only).
final class TURNClient {
    let fd: Int32
    let server: sockaddr_in
    private let user: String
    private let password: String
    private var realm: [UInt8] = []
    private var nonce: [UInt8] = []
    private var key: [UInt8] = []
    /// The relayed transport address coturn gave this allocation.
    private(set) var relayed: (ip: UInt32, port: UInt16) = (0, 0)

    init(fd: Int32, server: sockaddr_in, secret: String, name: String) {
        self.fd = fd
        self.server = server
        let expiry = Int(time(nil)) + 3600
        user = "\(expiry):\(name)"
        var mac = [UInt8](repeating: 0, count: 20)
        let s = Array(secret.utf8), u = Array(user.utf8)
        _ = ccrypto_hmac_sha1(s, s.count, u, u.count, &mac)
        var text = [CChar](repeating: 0, count: 40)
        let n = ccrypto_base64_encode(mac, 20, &text)
        password = String(decoding: text[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func exchange(_ m: STUNMessage) -> STUNResponse? {
        for _ in 0..<5 {
            var to = server
            _ = m.bytes.withUnsafeBytes { b in
                withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let deadline = monoNanosBench() + 1_000_000_000
            while monoNanosBench() < deadline {
                guard poll(&pfd, 1, 200) > 0 else { continue }
                var buf = [UInt8](repeating: 0, count: 2048)
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0, let r = STUNResponse(Array(buf[..<n])), Array(buf[8..<20]) == Array(m.bytes[8..<20]) else { continue }
                return r
            }
        }
        return nil
    }

    private func authed(_ type: UInt16, _ build: (inout STUNMessage) -> Void) -> STUNMessage {
        var m = STUNMessage(type: type)
        build(&m)
        m.attr(STUN.username, Array(user.utf8))
        m.attr(STUN.realm, realm)
        m.attr(STUN.nonce, nonce)
        m.sign(key: key)
        return m
    }

    /// Allocate (401 → credentials → Allocate). Dies on failure: the comparison needs it.
    func allocate() {
        var first = STUNMessage(type: STUN.allocate)
        first.attr(STUN.transport, [17, 0, 0, 0])
        guard let r1 = exchange(first), r1.errorCode == 401, let realm = r1.attrs[STUN.realm], let nonce = r1.attrs[STUN.nonce] else {
            die("TURN: no 401 challenge from the server (is turnserver running with use-auth-secret?)")
        }
        self.realm = realm
        self.nonce = nonce
        var md5 = [UInt8](repeating: 0, count: 16)
        let k = Array("\(user):".utf8) + realm + Array(":\(password)".utf8)
        _ = ccrypto_md5(k, k.count, &md5)
        key = md5
        let m = authed(STUN.allocate) { m in
            m.attr(STUN.transport, [17, 0, 0, 0])
            m.attr(STUN.lifetime, [0, 0, 0x0e, 0x10])
        }
        guard let r2 = exchange(m), r2.type == STUN.allocate | STUN.successBit, let a = r2.address(STUN.relayedAddress) else {
            die("TURN: Allocate failed")
        }
        relayed = a
    }

    /// Binds channel `number` (0x4000…) to `peer`'s relayed address (also installs the permission).
    func bind(channel number: UInt16, peer: (ip: UInt32, port: UInt16)) {
        let m = authed(STUN.channelBind) { m in
            m.attr(STUN.channelNumber, [UInt8(number >> 8), UInt8(number & 0xff), 0, 0])
            m.attr(STUN.peerAddress, STUNMessage.xorAddress(ip: peer.ip, port: peer.port))
        }
        guard let r = exchange(m), r.type == STUN.channelBind | STUN.successBit else {
            die("TURN: ChannelBind failed")
        }
    }
}

func monoNanosBench() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
