/// Strict UTF-8 validation over bytes (RFC 3629: no overlong forms, no surrogates, nothing
/// above U+10FFFF), for WebSocket text messages and close reasons. `String(validating:)` would
/// allocate a String per message; this only reads.
enum UTF8Validation {
    /// True when `bytes` is well-formed UTF-8.
    static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        validPrefix(bytes, allowingIncompleteTail: false) == bytes.count
    }

    /// How many leading bytes of `bytes` are whole, valid characters, when what follows them
    /// may still become valid (a character cut short at the end, with `allowingIncompleteTail`:
    /// a fragment of a WebSocket text message); nil as soon as the bytes cannot be UTF-8
    /// whatever comes next. Without `allowingIncompleteTail` a cut-short tail is invalid.
    static func validPrefix(_ bytes: UnsafeRawBufferPointer, allowingIncompleteTail: Bool) -> Int? {
        guard let base = bytes.baseAddress else { return 0 }
        let n = bytes.count
        var i = 0
        while i < n {
            // ASCII runs (every chat message is mostly ASCII) eight bytes at a time.
            while i + 8 <= n && (base + i).loadUnaligned(as: UInt64.self) & 0x8080_8080_8080_8080 == 0 { i += 8 }
            if i >= n { break }
            let b0 = base.load(fromByteOffset: i, as: UInt8.self)
            if b0 < 0x80 { i += 1; continue }
            // The allowed range of the second byte depends on the first (RFC 3629 §4 table).
            let count: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: count = 2
            case 0xE0: count = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE, 0xEF: count = 3
            case 0xED: count = 3; hi = 0x9F            // no UTF-16 surrogates
            case 0xF0: count = 4; lo = 0x90
            case 0xF1...0xF3: count = 4
            case 0xF4: count = 4; hi = 0x8F            // nothing above U+10FFFF
            default: return nil                        // continuation byte, C0/C1, F5…FF
            }
            let have = min(count, n - i)
            if have >= 2 {
                let b1 = base.load(fromByteOffset: i + 1, as: UInt8.self)
                guard b1 >= lo && b1 <= hi else { return nil }
            }
            var k = 2
            while k < have {
                guard base.load(fromByteOffset: i + k, as: UInt8.self) & 0xC0 == 0x80 else { return nil }
                k += 1
            }
            if have < count { return allowingIncompleteTail ? i : nil }
            i += count
        }
        return n
    }
}
