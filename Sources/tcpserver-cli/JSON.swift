// A small, tolerant JSON reader (the server's replies, and /stats) and the escaping for what we
// send. No Foundation: the replies are short objects with string and integer fields.

/// A parsed JSON value. Objects keep their key order (the stats table shows it as sent);
/// numbers keep their text, so nothing is lost to a Double round trip.
indirect enum JSON {
    case object([(key: String, value: JSON)])
    case array([JSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// Parses one JSON value from `text` (surrounding whitespace allowed); nil if malformed.
    static func parse(_ text: String) -> JSON? { parse(Array(text.utf8)) }

    static func parse(_ bytes: [UInt8]) -> JSON? {
        var p = JSONScanner(bytes)
        guard let v = p.value(depth: 0) else { return nil }
        p.skipSpace()
        return p.atEnd ? v : nil
    }

    /// The member `key` of an object (the first, if repeated).
    subscript(key: String) -> JSON? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first(where: { $0.key == key })?.value
    }

    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var int: Int? {
        if case .number(let n) = self { return Int(n) }
        return nil
    }

    var array: [JSON]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// A scalar as plain text (strings unquoted); containers as compact JSON.
    var text: String {
        switch self {
        case .string(let s): return s
        case .number(let n): return n
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .array, .object: return compact
        }
    }

    /// Compact JSON text.
    var compact: String {
        switch self {
        case .string(let s): return JSONText.quote(s)
        case .array(let a): return "[" + a.map(\.compact).joined(separator: ",") + "]"
        case .object(let o): return "{" + o.map { JSONText.quote($0.key) + ":" + $0.value.compact }.joined(separator: ",") + "}"
        default: return text
        }
    }
}

/// Recursive-descent scanner over UTF-8 bytes.
struct JSONScanner {
    private let b: [UInt8]
    private var i = 0
    init(_ bytes: [UInt8]) { b = bytes }

    var atEnd: Bool { i >= b.count }

    mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0A || b[i] == 0x0D { i += 1 }
    }

    mutating func value(depth: Int) -> JSON? {
        guard depth < 64 else { return nil }
        skipSpace()
        guard i < b.count else { return nil }
        switch b[i] {
        case UInt8(ascii: "{"): return object(depth: depth)
        case UInt8(ascii: "["): return array(depth: depth)
        case UInt8(ascii: "\""): return string().map(JSON.string)
        case UInt8(ascii: "t"): return literal("true", .bool(true))
        case UInt8(ascii: "f"): return literal("false", .bool(false))
        case UInt8(ascii: "n"): return literal("null", .null)
        default: return number()
        }
    }

    private mutating func literal(_ word: String, _ v: JSON) -> JSON? {
        let w = Array(word.utf8)
        guard i + w.count <= b.count, b[i..<(i + w.count)].elementsEqual(w) else { return nil }
        i += w.count
        return v
    }

    private mutating func number() -> JSON? {
        let start = i
        while i < b.count, "+-.eE0123456789".utf8.contains(b[i]) { i += 1 }
        guard i > start else { return nil }
        return .number(String(decoding: b[start..<i], as: UTF8.self))
    }

    private mutating func object(depth: Int) -> JSON? {
        i += 1   // {
        var pairs: [(key: String, value: JSON)] = []
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
        while true {
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: "\""), let key = string() else { return nil }
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            guard let v = value(depth: depth + 1) else { return nil }
            pairs.append((key, v))
            skipSpace()
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
            return nil
        }
    }

    private mutating func array(depth: Int) -> JSON? {
        i += 1   // [
        var items: [JSON] = []
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            guard let v = value(depth: depth + 1) else { return nil }
            items.append(v)
            skipSpace()
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            return nil
        }
    }

    /// A string starting at the opening quote; escapes decoded, bad `\u` sequences become U+FFFD.
    private mutating func string() -> String? {
        i += 1   // opening quote
        var out: [UInt8] = []
        while i < b.count {
            let c = b[i]
            i += 1
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            guard c == UInt8(ascii: "\\") else { out.append(c); continue }
            guard i < b.count else { return nil }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "u"):
                guard var u = hex4() else { return nil }
                if (0xD800..<0xDC00).contains(u), i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") {
                    let save = i
                    i += 2
                    if let lo = hex4(), (0xDC00..<0xE000).contains(lo) {
                        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        i = save
                    }
                }
                let scalar = UnicodeScalar(u) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: out.append(e)   // \" \\ \/ and, tolerantly, anything else
            }
        }
        return nil
    }

    private mutating func hex4() -> UInt32? {
        guard i + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let d = hexDigit(b[i]) else { return nil }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private func hexDigit(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(c - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(c - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(c - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}

/// Writing JSON: one flat object per message.
enum JSONText {
    /// `s` as a JSON string literal: quotes, backslashes and every control character escaped.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\u{00}"..."\u{1F}", "\u{7F}":
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// A field value: a string, an integer or a bool.
    enum Value {
        case s(String), i(Int), b(Bool)
        var json: String {
            switch self {
            case .s(let v): return JSONText.quote(v)
            case .i(let v): return String(v)
            case .b(let v): return v ? "true" : "false"
            }
        }
    }

    /// `{"k":v,…}` in the order given.
    static func object(_ fields: [(String, Value)]) -> String {
        "{" + fields.map { quote($0.0) + ":" + $0.1.json }.joined(separator: ",") + "}"
    }
}
