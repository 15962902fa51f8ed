import Primitives

// JSON string output straight into a connection's ByteBuffer, without intermediate Strings.

extension ByteBuffer {
    /// Appends `"` + escaped `s` + `"`: `"` and `\` are backslash-escaped, control characters
    /// (< 0x20) become \n \r \t \b \f or \u00XX; all other UTF-8 is copied as is.
    public mutating func appendJSONString(_ s: String) {
        var s = s
        s.withUTF8 { appendJSONString(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Same as `appendJSONString(_:)`, from raw (already valid) UTF-8 bytes.
    public mutating func appendJSONString(bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0, let src = bytes.baseAddress else {
            append(StaticString("\"\""))
            return
        }
        reserve(n &+ 2)
        append(UInt8(ascii: "\""))
        var i = 0
        while i < n {
            // Copy the longest run needing no escape in one go (SIMD search).
            let j = FrameScanner.firstJSONEscapeNeeded(base: src, from: i, to: n) ?? n
            if j > i { append(UnsafeRawBufferPointer(start: src + i, count: j &- i)) }
            if j == n { break }
            appendJSONEscape(src.load(fromByteOffset: j, as: UInt8.self))
            i = j &+ 1
        }
        append(UInt8(ascii: "\""))
    }

    /// Appends `"` + `escapedContents` + `"`, where `escapedContents` is the still-escaped
    /// inside of a JSON string that `JSONReader` validated; it is copied verbatim.
    public mutating func appendJSONStringRaw(escapedContents: UnsafeRawBufferPointer) {
        reserve(escapedContents.count &+ 2)
        append(UInt8(ascii: "\""))
        append(escapedContents)
        append(UInt8(ascii: "\""))
    }

    /// The escape sequence for one byte that cannot appear verbatim in a JSON string.
    private mutating func appendJSONEscape(_ b: UInt8) {
        switch b {
        case UInt8(ascii: "\""): append(StaticString("\\\""))
        case UInt8(ascii: "\\"): append(StaticString("\\\\"))
        case 0x0A: append(StaticString("\\n"))
        case 0x0D: append(StaticString("\\r"))
        case 0x09: append(StaticString("\\t"))
        case 0x08: append(StaticString("\\b"))
        case 0x0C: append(StaticString("\\f"))
        default:
            let hex: StaticString = "0123456789abcdef"
            append(StaticString("\\u00"))
            append(hex.utf8Start[Int(b &>> 4)])
            append(hex.utf8Start[Int(b & 0x0F)])
        }
    }
}
