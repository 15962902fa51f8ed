// Redis Cluster key → slot mapping (CRC16-XMODEM of the key's hash tag, mod 16384), and the
// hash-tagged names of a room's keys and channel. This is the cluster protocol itself (Redis'
// cluster spec, "Keys distribution model"), so it lives here rather than in a dependency.

enum ClusterSlots {
    static let count = 16384

    /// CRC16-XMODEM (polynomial 0x1021, initial 0), the table Redis' crc16.c uses.
    static let table: [UInt16] = (0..<256).map { i -> UInt16 in
        var crc = UInt16(i) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }

    @inline(__always)
    static func crcStep(_ crc: UInt16, _ b: UInt8) -> UInt16 {
        (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ b)]
    }

    static func crc16<C: Sequence>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var crc: UInt16 = 0
        for b in bytes { crc = crcStep(crc, b) }
        return crc
    }

    /// The slot of a key: only the part between the first `{` and the next `}` is hashed when
    /// that part is non-empty (the hash tag), else the whole key.
    static func slot(ofKey key: String) -> Int {
        let u = Array(key.utf8)
        if let open = u.firstIndex(of: UInt8(ascii: "{")),
           let close = u[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            return Int(crc16(u[(open + 1)..<close])) & (count - 1)
        }
        return Int(crc16(u)) & (count - 1)
    }

    /// The slot of every key and of the channel of `room` (their hash tag is the room's tag).
    static func slot(ofRoom room: String) -> Int {
        var crc: UInt16 = 0
        forEachTagByte(room.utf8) { crc = crcStep(crc, $0) }
        return Int(crc) & (count - 1)
    }

    /// The hash tag of a room: the room's name with `%` and `}` percent-encoded, so the tag
    /// always runs to the closing brace we add (a `}` in the name would cut it short, and
    /// a name starting with `}` would leave it empty: different slots for one room's keys).
    @inline(__always)
    static func forEachTagByte<C: Sequence>(_ room: C, _ body: (UInt8) -> Void) where C.Element == UInt8 {
        for b in room {
            if b == UInt8(ascii: "%") {
                body(b); body(UInt8(ascii: "2")); body(UInt8(ascii: "5"))
            } else if b == UInt8(ascii: "}") {
                body(UInt8(ascii: "%")); body(UInt8(ascii: "7")); body(UInt8(ascii: "D"))
            } else {
                body(b)
            }
        }
    }

    static func tagLength<C: Sequence>(_ room: C) -> Int where C.Element == UInt8 {
        var n = 0
        forEachTagByte(room) { _ in n += 1 }
        return n
    }

    static func tag(_ room: String) -> String {
        if !room.utf8.contains(UInt8(ascii: "%")) && !room.utf8.contains(UInt8(ascii: "}")) { return room }
        var out: [UInt8] = []
        forEachTagByte(room.utf8) { out.append($0) }
        return String(decoding: out, as: UTF8.self)
    }

    /// The room's name back from its tag (undoes `tag`).
    static func room(fromTag t: UnsafeRawBufferPointer) -> String {
        guard t.contains(UInt8(ascii: "%")) else { return String(decoding: t, as: UTF8.self) }
        var out: [UInt8] = []
        var i = 0
        while i < t.count {
            if t[i] == UInt8(ascii: "%") && i + 2 < t.count {
                if t[i + 1] == UInt8(ascii: "2") && t[i + 2] == UInt8(ascii: "5") { out.append(UInt8(ascii: "%")); i += 3; continue }
                if t[i + 1] == UInt8(ascii: "7") && t[i + 2] == UInt8(ascii: "D") { out.append(UInt8(ascii: "}")); i += 3; continue }
            }
            out.append(t[i])
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
