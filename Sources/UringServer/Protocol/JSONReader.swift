import Primitives

// A validating, non-allocating reader for one JSON object per line (the client→server
// protocol, e.g. `{"type":"send_chat","room":"lobby","text":"hi","id":7}`).
//
// `JSONReader.parse` validates the whole line against RFC 8259 (strict UTF-8 included) and
// records the top-level fields as byte ranges into the caller's buffer (`JSONFieldTable`,
// JSONFieldTable.swift); nested objects and arrays are validated and skipped. Values are
// decoded lazily by `string`/`int`/`bool`/`stringEquals` (JSONReader+Values.swift). Runs of
// plain string bytes are skipped with SIMD (`FrameScanner`); only escapes and non-ASCII bytes
// take the scalar path.

public enum JSONError: Error, Equatable, Sendable {
    case syntax(offset: Int)
    case invalidUTF8(offset: Int)
    case notAnObject
    case tooDeep
    case tooManyFields
}

public enum JSONReader {
    /// Maximum nesting of objects/arrays, counting the top-level object as 1.
    public static let maxDepth = 32

    // MARK: Parsing

    /// Validates that `bytes` is exactly one JSON object (surrounding whitespace, including a
    /// trailing "\r", allowed) per RFC 8259 and records its top-level fields in `table`.
    ///
    /// Errors: `notAnObject` when the first non-whitespace byte is not `{`; `syntax(offset:)`
    /// for any grammar violation (including bad escapes and unpaired UTF-16 surrogates in
    /// `\u` escapes; the offset is where the problem was detected); `invalidUTF8(offset:)` for
    /// malformed UTF-8 inside a string (offset of the sequence's first byte); `tooDeep` past
    /// `maxDepth`; `tooManyFields` past 16 top-level fields.
    public static func parse(_ bytes: UnsafeRawBufferPointer, into table: inout JSONFieldTable) throws(JSONError) {
        table.removeAll()
        guard let raw = bytes.baseAddress else { throw .notAnObject }
        let p = Parser(p: raw.assumingMemoryBound(to: UInt8.self), n: bytes.count)
        var i = p.skipWS(0)
        guard i < p.n, p.p[i] == UInt8(ascii: "{") else { throw .notAnObject }
        i = p.skipWS(i &+ 1)
        guard i < p.n else { throw .syntax(offset: i) }
        if p.p[i] == UInt8(ascii: "}") {
            i &+= 1
        } else {
            while true {
                guard i < p.n, p.p[i] == UInt8(ascii: "\"") else { throw .syntax(offset: i) }
                let keyStart = i &+ 1
                let (keyEnd, keyEscaped) = try p.scanString(keyStart)
                i = p.skipWS(keyEnd &+ 1)
                guard i < p.n, p.p[i] == UInt8(ascii: ":") else { throw .syntax(offset: i) }
                i = p.skipWS(i &+ 1)
                guard i < p.n else { throw .syntax(offset: i) }

                var field = JSONField(keyStart: keyStart, keyEnd: keyEnd, keyEscaped: keyEscaped,
                                      valueStart: i, valueEnd: i, kind: .null, valueEscaped: false)
                switch p.p[i] {
                case UInt8(ascii: "\""):
                    let (end, esc) = try p.scanString(i &+ 1)
                    field.valueStart = i &+ 1
                    field.valueEnd = end
                    field.kind = .string
                    field.valueEscaped = esc
                    i = end &+ 1
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    field.kind = p.p[i] == UInt8(ascii: "{") ? .object : .array
                    i = try p.skipComposite(i)
                    field.valueEnd = i
                case UInt8(ascii: "t"):
                    i = try p.literal(i, "true"); field.kind = .bool; field.valueEnd = i
                case UInt8(ascii: "f"):
                    i = try p.literal(i, "false"); field.kind = .bool; field.valueEnd = i
                case UInt8(ascii: "n"):
                    i = try p.literal(i, "null"); field.kind = .null; field.valueEnd = i
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    i = try p.number(i); field.kind = .number; field.valueEnd = i
                default:
                    throw .syntax(offset: i)
                }
                guard table.append(field) else { throw .tooManyFields }

                i = p.skipWS(i)
                guard i < p.n else { throw .syntax(offset: i) }
                let c = p.p[i]
                if c == UInt8(ascii: ",") {
                    i = p.skipWS(i &+ 1)
                    continue
                }
                if c == UInt8(ascii: "}") { i &+= 1; break }
                throw .syntax(offset: i)
            }
        }
        i = p.skipWS(i)
        if i != p.n { throw .syntax(offset: i) }
    }

    /// Parsing helpers over one buffer; each takes an offset and returns the offset after
    /// what it consumed.
    struct Parser {
        let p: UnsafePointer<UInt8>
        let n: Int

        @inline(__always)
        func skipWS(_ start: Int) -> Int {
            var i = start
            while i < n {
                let c = p[i]
                if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i &+= 1 } else { break }
            }
            return i
        }

        /// `start` is just past an opening quote. Returns the closing quote's offset and
        /// whether the contents hold an escape.
        func scanString(_ start: Int) throws(JSONError) -> (end: Int, escaped: Bool) {
            var i = start
            var escaped = false
            let raw = UnsafeRawPointer(p)
            while true {
                guard let j = FrameScanner.firstJSONStringSpecial(base: raw, from: i, to: n) else {
                    throw .syntax(offset: n)   // unterminated string
                }
                i = j
                let c = p[i]
                if c == UInt8(ascii: "\"") { return (i, escaped) }
                if c == UInt8(ascii: "\\") {
                    escaped = true
                    i = try escape(i)
                } else if c < 0x20 {
                    throw .syntax(offset: i)
                } else {
                    i = try utf8Sequence(i)
                    // Stay scalar through a run of non-ASCII text (e.g. CJK) instead of
                    // re-entering the vector loop for every character.
                    while i < n, p[i] >= 0x80 { i = try utf8Sequence(i) }
                }
            }
        }

        /// `i` is at a backslash; returns the offset after the escape.
        func escape(_ i: Int) throws(JSONError) -> Int {
            guard i &+ 1 < n else { throw .syntax(offset: i) }
            switch p[i &+ 1] {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                 UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                return i &+ 2
            case UInt8(ascii: "u"):
                guard let u = hex4(i &+ 2) else { throw .syntax(offset: i) }
                if u & 0xFC00 == 0xDC00 { throw .syntax(offset: i) }        // lone low surrogate
                if u & 0xFC00 != 0xD800 { return i &+ 6 }
                // High surrogate: must be followed by \u + low surrogate.
                guard i &+ 7 < n, p[i &+ 6] == UInt8(ascii: "\\"), p[i &+ 7] == UInt8(ascii: "u"),
                      let lo = hex4(i &+ 8), lo & 0xFC00 == 0xDC00 else {
                    throw .syntax(offset: i)
                }
                return i &+ 12
            default:
                throw .syntax(offset: i)
            }
        }

        func hex4(_ i: Int) -> UInt32? {
            guard i &+ 4 <= n else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 {
                guard let d = JSONReader.hexValue(p[i &+ k]) else { return nil }
                v = v &<< 4 | d
            }
            return v
        }

        /// `i` is at a byte >= 0x80; validates one UTF-8 sequence (no overlongs, no UTF-16
        /// surrogates, nothing above U+10FFFF) and returns the offset after it.
        @inline(__always)
        func utf8Sequence(_ i: Int) throws(JSONError) -> Int {
            let b0 = p[i]
            @inline(__always) func cont(_ k: Int, _ lo: UInt8 = 0x80, _ hi: UInt8 = 0xBF) -> Bool {
                i &+ k < n && p[i &+ k] >= lo && p[i &+ k] <= hi
            }
            switch b0 {
            case 0xC2...0xDF:
                if cont(1) { return i &+ 2 }
            case 0xE0:
                if cont(1, 0xA0), cont(2) { return i &+ 3 }
            case 0xE1...0xEC, 0xEE...0xEF:
                if cont(1), cont(2) { return i &+ 3 }
            case 0xED:
                if cont(1, 0x80, 0x9F), cont(2) { return i &+ 3 }
            case 0xF0:
                if cont(1, 0x90), cont(2), cont(3) { return i &+ 4 }
            case 0xF1...0xF3:
                if cont(1), cont(2), cont(3) { return i &+ 4 }
            case 0xF4:
                if cont(1, 0x80, 0x8F), cont(2), cont(3) { return i &+ 4 }
            default:
                break
            }
            throw .invalidUTF8(offset: i)
        }

        func literal(_ i: Int, _ word: StaticString) throws(JSONError) -> Int {
            let w = word.utf8Start
            let len = word.utf8CodeUnitCount
            guard i &+ len <= n else { throw .syntax(offset: i) }
            for k in 0..<len where p[i &+ k] != w[k] { throw .syntax(offset: i &+ k) }
            return i &+ len
        }

        /// `-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`; the caller checks what follows.
        func number(_ start: Int) throws(JSONError) -> Int {
            var i = start
            @inline(__always) func isDigit(_ k: Int) -> Bool { k < n && p[k] &- 0x30 < 10 }
            if i < n, p[i] == UInt8(ascii: "-") { i &+= 1 }
            guard isDigit(i) else { throw .syntax(offset: i) }
            if p[i] == UInt8(ascii: "0") {
                i &+= 1
            } else {
                while isDigit(i) { i &+= 1 }
            }
            if i < n, p[i] == UInt8(ascii: ".") {
                i &+= 1
                guard isDigit(i) else { throw .syntax(offset: i) }
                while isDigit(i) { i &+= 1 }
            }
            if i < n, p[i] | 0x20 == UInt8(ascii: "e") {
                i &+= 1
                if i < n, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") { i &+= 1 }
                guard isDigit(i) else { throw .syntax(offset: i) }
                while isDigit(i) { i &+= 1 }
            }
            return i
        }

        /// `start` is at `{` or `[` of a value nested in the top-level object. Validates the
        /// whole value iteratively and returns the offset just past its closing bracket.
        func skipComposite(_ start: Int) throws(JSONError) -> Int {
            var i = start
            var depth = 0                // open containers inside this value
            var isObject: UInt64 = 0     // bit 0 = innermost container is an object
            var needValue = true         // i is at the start of a value (whitespace skipped)
            while true {
                if needValue {
                    guard i < n else { throw .syntax(offset: i) }
                    switch p[i] {
                    case UInt8(ascii: "{"), UInt8(ascii: "["):
                        let obj = p[i] == UInt8(ascii: "{")
                        depth &+= 1
                        if depth &+ 1 > JSONReader.maxDepth { throw .tooDeep }
                        isObject = isObject &<< 1 | (obj ? 1 : 0)
                        i = skipWS(i &+ 1)
                        guard i < n else { throw .syntax(offset: i) }
                        if p[i] == (obj ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                            i &+= 1
                            depth &-= 1
                            isObject &>>= 1
                            if depth == 0 { return i }
                            needValue = false
                        } else if obj {
                            i = try memberKey(i)
                        }
                        continue
                    case UInt8(ascii: "\""):
                        i = try scanString(i &+ 1).end &+ 1
                    case UInt8(ascii: "t"):
                        i = try literal(i, "true")
                    case UInt8(ascii: "f"):
                        i = try literal(i, "false")
                    case UInt8(ascii: "n"):
                        i = try literal(i, "null")
                    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                        i = try number(i)
                    default:
                        throw .syntax(offset: i)
                    }
                    needValue = false
                } else {
                    i = skipWS(i)
                    guard i < n else { throw .syntax(offset: i) }
                    let obj = isObject & 1 == 1
                    let c = p[i]
                    if c == UInt8(ascii: ",") {
                        i = skipWS(i &+ 1)
                        if obj { i = try memberKey(i) }
                        needValue = true
                    } else if c == (obj ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                        i &+= 1
                        depth &-= 1
                        isObject &>>= 1
                        if depth == 0 { return i }
                    } else {
                        throw .syntax(offset: i)
                    }
                }
            }
        }

        /// `i` is where a member's `"key"` should start; returns the start of its value.
        func memberKey(_ i: Int) throws(JSONError) -> Int {
            guard i < n, p[i] == UInt8(ascii: "\"") else { throw .syntax(offset: i) }
            var j = skipWS(try scanString(i &+ 1).end &+ 1)
            guard j < n, p[j] == UInt8(ascii: ":") else { throw .syntax(offset: j) }
            j = skipWS(j &+ 1)
            return j
        }
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c &- 0x30)
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(c &- 0x57)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(c &- 0x37)
        default: return nil
        }
    }
}
