// Reading values of fields `JSONReader.parse` recorded: strings unescaped on demand (or compared
// without allocating), integers and bools decoded from their raw tokens.

extension JSONReader {
    // MARK: Value access

    /// Unescaped string value of a string field (all escapes, surrogate pairs → UTF-8). For a
    /// field of another kind, returns its raw token text.
    public static func string(_ field: JSONField, in bytes: UnsafeRawBufferPointer) -> String {
        let len = field.valueEnd &- field.valueStart
        guard len > 0, let base = bytes.baseAddress else { return "" }
        let src = UnsafeRawBufferPointer(start: base + field.valueStart, count: len)
        if field.kind != .string || !field.valueEscaped {
            return String(decoding: src, as: UTF8.self)
        }
        // Unescaping never grows the text: \n 2→1, \uXXXX 6→≤3, a surrogate pair 12→4.
        return String(unsafeUninitializedCapacity: len) { out in
            var it = Unescaper(src)
            var k = 0
            while let b = it.next() { out[k] = b; k &+= 1 }
            return k
        }
    }

    /// Integer value of a number field if it is an integer that fits `Int`, else nil.
    public static func int(_ field: JSONField, in bytes: UnsafeRawBufferPointer) -> Int? {
        guard field.kind == .number, field.valueEnd > field.valueStart else { return nil }
        var i = field.valueStart
        let end = field.valueEnd
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative { i &+= 1 }
        guard i < end else { return nil }
        // Accumulate negatively so Int.min parses.
        var v = 0
        while i < end {
            let d = bytes[i] &- 0x30
            guard d < 10 else { return nil }   // '.', 'e', 'E' → not an integer
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.subtractingReportingOverflow(Int(d))
            if o1 || o2 { return nil }
            v = s
            i &+= 1
        }
        if negative { return v }
        return v == Int.min ? nil : -v
    }

    /// true/false of a bool field, else nil.
    public static func bool(_ field: JSONField, in bytes: UnsafeRawBufferPointer) -> Bool? {
        guard field.kind == .bool, field.valueEnd > field.valueStart else { return nil }
        return bytes[field.valueStart] == UInt8(ascii: "t")
    }

    /// Compares the (unescaped) string value with `literal`; never allocates. False for
    /// non-string fields.
    public static func stringEquals(_ field: JSONField, _ literal: StaticString,
                                    in bytes: UnsafeRawBufferPointer) -> Bool {
        guard field.kind == .string else { return false }
        let lit = UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        return rawStringEquals(start: field.valueStart, end: field.valueEnd,
                               escaped: field.valueEscaped, literal: lit, in: bytes)
    }

    /// Compares the unescaped form of `bytes[start..<end]` (validated JSON string contents)
    /// with `literal`.
    static func rawStringEquals(start: Int, end: Int, escaped: Bool,
                                literal: UnsafeRawBufferPointer, in bytes: UnsafeRawBufferPointer) -> Bool {
        let len = end &- start
        if !escaped {
            guard len == literal.count else { return false }
            if len == 0 { return true }
            return memEqual(bytes.baseAddress.unsafelyUnwrapped + start,
                            literal.baseAddress.unsafelyUnwrapped, len)
        }
        // Escaped text is never shorter than its unescaped form.
        guard len >= literal.count else { return false }
        var it = Unescaper(UnsafeRawBufferPointer(start: bytes.baseAddress.unsafelyUnwrapped + start,
                                                  count: len))
        var k = 0
        while let b = it.next() {
            guard k < literal.count, literal[k] == b else { return false }
            k &+= 1
        }
        return k == literal.count
    }

    @inline(__always)
    static func memEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
        var i = 0
        while i &+ 8 <= n {
            if a.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
            i &+= 8
        }
        while i < n {
            if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) {
                return false
            }
            i &+= 1
        }
        return true
    }

    /// Yields the UTF-8 bytes of the unescaped form of validated JSON string contents.
    struct Unescaper {
        let src: UnsafeRawBufferPointer
        var i = 0
        var pending: UInt32 = 0      // queued output bytes, low byte first
        var pendingCount = 0

        init(_ src: UnsafeRawBufferPointer) { self.src = src }

        mutating func next() -> UInt8? {
            if pendingCount > 0 {
                let b = UInt8(truncatingIfNeeded: pending)
                pending &>>= 8
                pendingCount &-= 1
                return b
            }
            guard i < src.count else { return nil }
            let c = src[i]
            if c != UInt8(ascii: "\\") { i &+= 1; return c }
            let e = src[i &+ 1]
            i &+= 2
            switch e {
            case UInt8(ascii: "b"): return 0x08
            case UInt8(ascii: "f"): return 0x0C
            case UInt8(ascii: "n"): return 0x0A
            case UInt8(ascii: "r"): return 0x0D
            case UInt8(ascii: "t"): return 0x09
            case UInt8(ascii: "u"): break
            default: return e          // \" \\ \/
            }
            var u = hex4()
            if u & 0xFC00 == 0xD800 {
                i &+= 2                // the validated "\u" of the low surrogate
                let lo = hex4()
                u = 0x10000 &+ ((u &- 0xD800) &<< 10) &+ (lo &- 0xDC00)
            }
            // Encode u as UTF-8: return the first byte, queue the rest.
            if u < 0x80 { return UInt8(u) }
            let c1 = 0x80 | (u & 0x3F)
            let c2 = 0x80 | ((u &>> 6) & 0x3F)
            let c3 = 0x80 | ((u &>> 12) & 0x3F)
            if u < 0x800 {
                pending = c1
                pendingCount = 1
                return UInt8(0xC0 | (u &>> 6))
            }
            if u < 0x10000 {
                pending = c2 | c1 &<< 8
                pendingCount = 2
                return UInt8(0xE0 | (u &>> 12))
            }
            pending = c3 | c2 &<< 8 | c1 &<< 16
            pendingCount = 3
            return UInt8(0xF0 | (u &>> 18))
        }

        private mutating func hex4() -> UInt32 {
            var v: UInt32 = 0
            for k in 0..<4 { v = v &<< 4 | (JSONReader.hexValue(src[i &+ k]) ?? 0) }
            i &+= 4
            return v
        }
    }
}
