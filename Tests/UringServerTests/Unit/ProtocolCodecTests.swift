import Testing
import UringServer
import Primitives

// MARK: Helpers

/// Parses `bytes`; returns the table or the error.
private func parse(_ bytes: [UInt8]) -> Result<JSONFieldTable, JSONError> {
    bytes.withUnsafeBytes { buf in
        var table = JSONFieldTable()
        do throws(JSONError) {
            try JSONReader.parse(buf, into: &table)
            return .success(table)
        } catch {
            return .failure(error)
        }
    }
}

private func parse(_ s: String) -> Result<JSONFieldTable, JSONError> { parse(Array(s.utf8)) }

private func error(_ bytes: [UInt8]) -> JSONError? {
    if case .failure(let e) = parse(bytes) { return e }
    return nil
}

private func error(_ s: String) -> JSONError? { error(Array(s.utf8)) }

private func isValid(_ s: String) -> Bool { error(s) == nil }

/// `{"k":"` + bytes + `"}`, for planting raw bytes inside a string value.
private func objectWithStringBytes(_ inner: [UInt8]) -> [UInt8] {
    Array(#"{"k":""#.utf8) + inner + Array(#""}"#.utf8)
}

private func isUTF8Error(_ e: JSONError?) -> Bool {
    if case .invalidUTF8 = e { return true }
    return false
}

private func isSyntaxError(_ e: JSONError?) -> Bool {
    if case .syntax = e { return true }
    return false
}

/// Parses `json` and hands the buffer and table to `body`.
private func withParsed<R>(_ json: String, _ body: (UnsafeRawBufferPointer, JSONFieldTable) throws -> R) throws -> R {
    let bytes = Array(json.utf8)
    return try bytes.withUnsafeBytes { buf in
        var table = JSONFieldTable()
        try JSONReader.parse(buf, into: &table)
        return try body(buf, table)
    }
}

private func key(_ f: JSONField, _ buf: UnsafeRawBufferPointer) -> String {
    String(decoding: buf[f.keyStart..<f.keyEnd], as: UTF8.self)
}

private func raw(_ f: JSONField, _ buf: UnsafeRawBufferPointer) -> String {
    String(decoding: buf[f.valueStart..<f.valueEnd], as: UTF8.self)
}

private func written(_ body: (inout ByteBuffer) -> Void) -> [UInt8] {
    var b = ByteBuffer()
    body(&b)
    return Array(b.readable)
}

// MARK: Reader: valid input

@Suite struct JSONReaderValidTests {
    @Test func protocolMessageFields() throws {
        let json = #"{"type":"send_chat","room":"lobby","text":"hi","id":7}"#
        try withParsed(json) { buf, t in
            #expect(t.count == 4)
            #expect((0..<t.count).map { key(t[$0], buf) } == ["type", "room", "text", "id"])
            #expect(t[0].kind == .string && raw(t[0], buf) == "send_chat")
            #expect(t[3].kind == .number && raw(t[3], buf) == "7")

            let type = try #require(t.find("type", in: buf))
            #expect(JSONReader.stringEquals(type, "send_chat", in: buf))
            #expect(!JSONReader.stringEquals(type, "send_cha", in: buf))
            #expect(!JSONReader.stringEquals(type, "send_chatx", in: buf))
            #expect(JSONReader.string(try #require(t.find("room", in: buf)), in: buf) == "lobby")
            #expect(JSONReader.string(try #require(t.find("text", in: buf)), in: buf) == "hi")
            #expect(JSONReader.int(try #require(t.find("id", in: buf)), in: buf) == 7)
            #expect(t.find("missing", in: buf) == nil)
            #expect(t.find("typ", in: buf) == nil)
        }
    }

    @Test func allValueKindsAndRanges() throws {
        let json = #"{"s":"x","n":-12.5e+3,"t":true,"f":false,"z":null,"o":{"a":[1,{"b":null}]},"a":[ 1 , "two" ]}"#
        try withParsed(json) { buf, t in
            #expect(t.count == 7)
            let kinds = (0..<t.count).map { t[$0].kind }
            #expect(kinds == [.string, .number, .bool, .bool, .null, .object, .array])
            let raws = (0..<t.count).map { raw(t[$0], buf) }
            #expect(raws == ["x", "-12.5e+3", "true", "false", "null", #"{"a":[1,{"b":null}]}"#, #"[ 1 , "two" ]"#])
            #expect(JSONReader.bool(t[2], in: buf) == true)
            #expect(JSONReader.bool(t[3], in: buf) == false)
            #expect(JSONReader.bool(t[0], in: buf) == nil)
            #expect(JSONReader.int(t[1], in: buf) == nil)   // not an integer
            #expect(JSONReader.int(t[0], in: buf) == nil)   // not a number
            #expect(!JSONReader.stringEquals(t[2], "true", in: buf))   // bool, not string
        }
    }

    @Test func whitespaceEverywhereAndTrailingCR() throws {
        let json = " \t{ \"a\" : 1 ,\n\"b\"\t:\r[ ] , \"c\" : { } }  \r"
        try withParsed(json) { buf, t in
            #expect(t.count == 3)
            #expect(raw(t[0], buf) == "1")
            #expect(t[1].kind == .array && raw(t[1], buf) == "[ ]")
            #expect(t[2].kind == .object && raw(t[2], buf) == "{ }")
        }
        #expect(isValid("{}"))
        #expect(isValid("{ }\r"))
        #expect(isValid("{}\r\n"))
        try withParsed("{}") { _, t in #expect(t.count == 0) }
    }

    @Test func validNumbers() {
        for n in ["0", "-0", "1", "-1", "10", "123456789", "0.5", "-0.0", "1e5", "1E5", "1e+5", "1e-5",
                  "1.25e10", "-9223372036854775808", "99999999999999999999999", "0e0"] {
            #expect(isValid(#"{"n":\#(n)}"#), "\(n)")
            #expect(isValid(#"{"a":[\#(n),\#(n)]}"#), "\(n) in array")
        }
    }

    @Test func intExtraction() throws {
        let cases: [(String, Int?)] = [
            ("0", 0), ("-0", 0), ("7", 7), ("-42", -42),
            ("9223372036854775807", Int.max), ("-9223372036854775808", Int.min),
            ("9223372036854775808", nil), ("-9223372036854775809", nil), ("123456789012345678901", nil),
            ("1.0", nil), ("1e3", nil), ("-5.5", nil),
        ]
        for (text, expected) in cases {
            try withParsed(#"{"n":\#(text)}"#) { buf, t in
                #expect(JSONReader.int(t[0], in: buf) == expected, "\(text)")
            }
        }
    }

    @Test func allSimpleEscapesDecode() throws {
        let json = #"{"s":"q\"b\\s\/b\bf\fn\nr\rt\tend"}"#
        try withParsed(json) { buf, t in
            let f = t[0]
            #expect(f.valueEscaped)
            #expect(!f.keyEscaped)
            #expect(JSONReader.string(f, in: buf) == "q\"b\\s/b\u{8}f\u{C}n\nr\rt\tend")
            #expect(JSONReader.stringEquals(f, "q\"b\\s/b\u{8}f\u{C}n\nr\rt\tend", in: buf))
            #expect(!JSONReader.stringEquals(f, "q\"b\\s/b\u{8}f\u{C}n\nr\rt\ten", in: buf))
        }
    }

    @Test func unicodeEscapesAndSurrogatePairs() throws {
        let json = #"{"a":"\u0041\u00e9\u20AC\uD83D\uDE00\u0000x","b":"\ud834\udd1e"}"#
        try withParsed(json) { buf, t in
            #expect(JSONReader.string(t[0], in: buf) == "Aé€😀\u{0}x")
            #expect(JSONReader.stringEquals(t[0], "Aé€😀\u{0}x", in: buf))
            #expect(JSONReader.string(t[1], in: buf) == "𝄞")
            #expect(Array(JSONReader.string(t[1], in: buf).utf8) == [0xF0, 0x9D, 0x84, 0x9E])
        }
    }

    @Test func rawUTF8IsAccepted() throws {
        // 2-, 3- and 4-byte sequences including the boundary code points.
        let text = "é ß € 中文 😀 \u{80} \u{7FF} \u{800} \u{D7FF} \u{E000} \u{FFFF} \u{10000} \u{10FFFF}"
        try withParsed(#"{"t":"\#(text)","\#(text)":1}"#) { buf, t in
            #expect(t.count == 2)
            #expect(!t[0].valueEscaped)
            #expect(JSONReader.string(t[0], in: buf) == text)
            #expect(key(t[1], buf) == text)
        }
    }

    @Test func longStringsExerciseVectorPath() throws {
        for length in [0, 1, 15, 16, 17, 31, 32, 33, 64, 100, 1000] {
            let plain = String(repeating: "x", count: length)
            let mixed = String(repeating: "ab\\\"é", count: length / 5 + 1)
            let json = #"{"p":"\#(plain)","m":"\#(mixed)","z":1}"#
            try withParsed(json) { buf, t in
                #expect(t.count == 3)
                #expect(JSONReader.string(t[0], in: buf) == plain)
                #expect(JSONReader.string(t[1], in: buf)
                        == String(repeating: "ab\"é", count: length / 5 + 1))
                #expect(JSONReader.int(t[2], in: buf) == 1)
            }
        }
    }

    @Test func duplicateKeysLastWins() throws {
        try withParsed(#"{"id":1,"x":true,"id":2}"#) { buf, t in
            #expect(t.count == 3)
            let f = try #require(t.find("id", in: buf))
            #expect(JSONReader.int(f, in: buf) == 2)
        }
    }

    @Test func findMatchesEscapedKeys() throws {
        // "t\u0079pe" is "type"; "r\u006fom" is "room"; "a\"b" is a"b.
        try withParsed(#"{"t\u0079pe":"join","r\u006fom":"lob\u0062y","a\"b":3,"\u00e9":4}"#) { buf, t in
            #expect(t[0].keyEscaped && t[1].keyEscaped && t[2].keyEscaped && t[3].keyEscaped)
            let type = try #require(t.find("type", in: buf))
            #expect(JSONReader.stringEquals(type, "join", in: buf))
            let room = try #require(t.find("room", in: buf))
            #expect(JSONReader.stringEquals(room, "lobby", in: buf))
            #expect(JSONReader.string(room, in: buf) == "lobby")
            #expect(JSONReader.int(try #require(t.find("a\"b", in: buf)), in: buf) == 3)
            #expect(JSONReader.int(try #require(t.find("é", in: buf)), in: buf) == 4)
            #expect(t.find("typ", in: buf) == nil)
            #expect(t.find("types", in: buf) == nil)
        }
        // Escaped and plain spellings of the same key are duplicates: the last wins.
        try withParsed(#"{"id":1,"\u0069d":2}"#) { buf, t in
            let f = try #require(t.find("id", in: buf))
            #expect(JSONReader.int(f, in: buf) == 2)
        }
    }

    @Test func sixteenFieldsFitSeventeenDoNot() throws {
        let sixteen = "{" + (0..<16).map { #""k\#($0)":\#($0)"# }.joined(separator: ",") + "}"
        try withParsed(sixteen) { buf, t in
            #expect(t.count == 16)
            let k15 = try #require(t.find("k15", in: buf))
            let k0 = try #require(t.find("k0", in: buf))
            #expect(JSONReader.int(k15, in: buf) == 15)
            #expect(JSONReader.int(k0, in: buf) == 0)
        }
        let seventeen = "{" + (0..<17).map { #""k\#($0)":\#($0)"# }.joined(separator: ",") + "}"
        #expect(error(seventeen) == .tooManyFields)
        // Nested members do not count toward the limit.
        let nested = #"{"o":{"# + (0..<40).map { #""k\#($0)":\#($0)"# }.joined(separator: ",") + "}}"
        try withParsed(nested) { _, t in #expect(t.count == 1) }
    }

    @Test func tableIsResetBetweenParses() throws {
        var table = JSONFieldTable()
        let a = Array(#"{"a":1,"b":2,"c":3}"#.utf8)
        let b = Array(#"{"x":"y"}"#.utf8)
        try a.withUnsafeBytes { try JSONReader.parse($0, into: &table) }
        #expect(table.count == 3)
        try b.withUnsafeBytes { buf in
            try JSONReader.parse(buf, into: &table)
            #expect(table.count == 1)
            #expect(table.find("a", in: buf) == nil)
            #expect(JSONReader.string(try #require(table.find("x", in: buf)), in: buf) == "y")
        }
    }

    @Test func depthLimit() {
        // Top-level object is depth 1, so 31 nested brackets reach the limit of 32.
        func nested(_ d: Int) -> String {
            #"{"a":"# + String(repeating: "[", count: d) + String(repeating: "]", count: d) + "}"
        }
        #expect(JSONReader.maxDepth == 32)
        #expect(isValid(nested(31)))
        #expect(error(nested(32)) == .tooDeep)
        #expect(error(nested(200)) == .tooDeep)
        let objects31 = #"{"a":"# + String(repeating: #"{"b":"#, count: 30) + "{}" + String(repeating: "}", count: 31)
        #expect(isValid(objects31))
        let objects32 = #"{"a":"# + String(repeating: #"{"b":"#, count: 31) + "{}" + String(repeating: "}", count: 32)
        #expect(error(objects32) == .tooDeep)
        // Mixed nesting with values at every level.
        #expect(isValid(#"{"a":[{"b":[1,{"c":[true,null,"s",{}]}]},[[]]]}"#))
    }
}

// MARK: Reader: invalid input

@Suite struct JSONReaderInvalidTests {
    @Test func nonObjectTopLevel() {
        for s in ["", "   ", "[]", "[1]", "\"s\"", "1", "true", "null", "x", "\r\n"] {
            #expect(error(s) == .notAnObject, "\(s.debugDescription)")
        }
    }

    @Test func trailingGarbage() {
        #expect(error(#"{"a":1}x"#) == .syntax(offset: 7))
        #expect(error(#"{"a":1} {}"#) == .syntax(offset: 8))
        #expect(error(#"{"a":1}}"#) == .syntax(offset: 7))
        #expect(error("{}\u{0}") == .syntax(offset: 2))
    }

    @Test func structuralErrors() {
        let bad = [
            "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":1,", "{\"a\":1,}", "{,}", "{\"a\" 1}",
            "{\"a\":1 \"b\":2}", "{a:1}", "{'a':1}", "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}",
            "{\"a\":{\"b\"}}", "{\"a\":{\"b\":1,}}", "{\"a\":[}", "{\"a\":{]}", "{\"a\":tru}",
            "{\"a\":truex}", "{\"a\":nul}", "{\"a\":False}", "{\"a\":undefined}", "{\"a\":\"x}",
            "{\"a\":\"x\\\"}", "{\"a\":'x'}", "{\"a\":[\"x]}", "{\"a\":1}\u{0B}", "{\u{A0}}",
        ]
        for s in bad {
            #expect(isSyntaxError(error(s)), "\(s.debugDescription) → \(String(describing: error(s)))")
        }
    }

    @Test func badNumbers() {
        for n in ["01", "-01", "00", "1.", "-", "1e", "1e+", "1E-", ".5", "+1", "1.e5", "--1", "0x10",
                  "1.5.5", "Infinity", "NaN", "-.5", "1e5.5"] {
            #expect(isSyntaxError(error(#"{"n":\#(n)}"#)), "\(n)")
            #expect(isSyntaxError(error(#"{"a":[\#(n)]}"#)), "\(n) in array")
        }
        #expect(error(#"{"n":01}"#) == .syntax(offset: 6))
        #expect(error(#"{"n":1.}"#) == .syntax(offset: 7))
    }

    @Test func badEscapes() {
        for e in [#"\x"#, #"\a"#, #"\'"#, #"\U0041"#, #"\u"#, #"\u12"#, #"\u12G4"#, #"\0"#, "\\\u{E9}"] {
            #expect(isSyntaxError(error(#"{"s":"\#(e)"}"#)), "\(e)")
            #expect(isSyntaxError(error(#"{"\#(e)":1}"#)), "key \(e)")
        }
    }

    @Test func loneAndMisorderedSurrogatesRejected() {
        let bad = [
            #"\uD800"#, #"\uDBFF"#, #"\uDC00"#, #"\uDFFF"#,   // lone high / low
            #"\uD83Dx"#, #"\uD83D\n"#, #"\uD83D\u0041"#,      // high not followed by low
            #"\uDE00\uD83D"#,                                 // reversed pair
            #"\uD83D\uD83D"#,                                 // two highs
            #"\uD83D\"#,                                      // cut short
        ]
        for s in bad {
            #expect(isSyntaxError(error(#"{"s":"\#(s)"}"#)), "\(s)")
            #expect(isSyntaxError(error(#"{"o":{"s":["\#(s)"]}}"#)), "nested \(s)")
        }
        #expect(isValid(#"{"s":"\uD83D\uDE00"}"#))
        #expect(isValid(#"{"s":"\uDBFF\uDFFF"}"#))
    }

    @Test func rawControlCharactersInStringsRejected() {
        for c in UInt8(0)..<0x20 {
            let e = error(objectWithStringBytes([UInt8(ascii: "a"), c, UInt8(ascii: "b")]))
            #expect(e == .syntax(offset: 7), "control \(c)")
        }
        // In a key, and in a long string where the vector path finds it.
        #expect(isSyntaxError(error("{\"a\tb\":1}")))
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: 70) + [0x0A] + [UInt8](repeating: UInt8(ascii: "y"), count: 5)
        #expect(error(objectWithStringBytes(long)) == .syntax(offset: 6 + 70))
        // DEL (0x7F) is not a control character for JSON.
        #expect(error(objectWithStringBytes([0x7F])) == nil)
    }

    @Test func invalidUTF8Rejected() {
        let bad: [(String, [UInt8])] = [
            ("overlong NUL C0 80", [0xC0, 0x80]),
            ("overlong C1 BF", [0xC1, 0xBF]),
            ("overlong E0 80 80", [0xE0, 0x80, 0x80]),
            ("overlong E0 9F BF", [0xE0, 0x9F, 0xBF]),
            ("overlong F0 80 80 80", [0xF0, 0x80, 0x80, 0x80]),
            ("overlong F0 8F BF BF", [0xF0, 0x8F, 0xBF, 0xBF]),
            ("surrogate ED A0 80", [0xED, 0xA0, 0x80]),
            ("surrogate ED BF BF", [0xED, 0xBF, 0xBF]),
            ("above U+10FFFF F4 90 80 80", [0xF4, 0x90, 0x80, 0x80]),
            ("F5 lead", [0xF5, 0x80, 0x80, 0x80]),
            ("FF byte", [0xFF]),
            ("FE byte", [0xFE]),
            ("truncated 2-byte", [0xC3]),
            ("truncated 3-byte", [0xE2, 0x82]),
            ("truncated 4-byte", [0xF0, 0x9F, 0x98]),
            ("truncated then ASCII", [0xE2, 0x82, 0x41]),
            ("stray continuation", [0x80]),
            ("stray continuation BF", [0xBF]),
            ("extra continuation", [0xC3, 0xA9, 0xA9]),
            ("lead then lead", [0xC3, 0xC3, 0xA9]),
        ]
        for (name, seq) in bad {
            let bytes = objectWithStringBytes([UInt8(ascii: "a")] + seq + [UInt8(ascii: "b")])
            let e = error(bytes)
            #expect(isUTF8Error(e), "\(name): \(String(describing: e))")
            // In a key, and nested inside arrays/objects.
            let keyed = Array("{\"".utf8) + seq + Array("\":1}".utf8)
            #expect(isUTF8Error(error(keyed)), "key \(name)")
            let nested = Array(#"{"a":[{"b":""#.utf8) + seq + Array(#""}]}"#.utf8)
            #expect(isUTF8Error(error(nested)), "nested \(name)")
        }
        // The offset is the first byte of the bad sequence.
        #expect(error(objectWithStringBytes([0x41, 0xC0, 0x80])) == .invalidUTF8(offset: 7))
        #expect(error(objectWithStringBytes([0xC3, 0xA9, 0x80])) == .invalidUTF8(offset: 8))
        // Boundary sequences that are valid.
        for ok: [UInt8] in [[0xC2, 0x80], [0xDF, 0xBF], [0xE0, 0xA0, 0x80], [0xED, 0x9F, 0xBF], [0xEE, 0x80, 0x80],
                            [0xF0, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF]] {
            #expect(error(objectWithStringBytes(ok)) == nil, "\(ok)")
        }
    }

    @Test func nonASCIIOutsideStringsRejected() {
        #expect(isSyntaxError(error(Array("{\"a\":1}".utf8) + [0xC3, 0xA9])))
        #expect(isSyntaxError(error(Array("{\"a\":".utf8) + [0xE2, 0x82, 0xAC] + Array("}".utf8))))
    }
}

// MARK: Writer

@Suite struct JSONWriterTests {
    @Test func escapesExactly() {
        let out = written { $0.appendJSONString("a\"b\\c\nd\re\tf\u{8}g\u{C}h\u{0}i\u{1F}j\u{7F}é😀/") }
        #expect(String(decoding: out, as: UTF8.self)
                == #""a\"b\\c\nd\re\tf\bg\fh\u0000i\u001fj"# + "\u{7F}é😀/\"")
        #expect(written { $0.appendJSONString("") } == Array("\"\"".utf8))
        #expect(written { $0.appendJSONString("plain") } == Array("\"plain\"".utf8))
    }

    @Test func bytesAndStringOverloadsAgree() {
        let s = String(repeating: "long text with a \"quote\" and \\ and \n ", count: 5) + "中文😀"
        let viaString = written { $0.appendJSONString(s) }
        let viaBytes = written { b in Array(s.utf8).withUnsafeBytes { b.appendJSONString(bytes: $0) } }
        #expect(viaString == viaBytes)
        #expect(written { $0.appendJSONString(bytes: UnsafeRawBufferPointer(start: nil, count: 0)) } == Array("\"\"".utf8))
    }

    @Test func roundTripThroughReader() throws {
        var controls = ""
        for c in 0..<0x20 { controls.unicodeScalars.append(Unicode.Scalar(UInt8(c))) }
        let samples = [
            "",
            "hello",
            #"she said "hi" \ bye"#,
            controls,
            "emoji 😀👍🏽🇫🇷 and CJK 中文 and é",
            String(repeating: "x", count: 100) + "\"" + String(repeating: "y", count: 40) + "\n",
            #"\u0041 is not an escape here \n"#,
            "\u{10FFFF}\u{FFFF}\u{7F}/",
        ]
        for s in samples {
            var buf = ByteBuffer()
            buf.append(#"{"type":"chat","text":"#)
            buf.appendJSONString(s)
            buf.append(",\"n\":")
            buf.appendDecimal(-5)
            buf.append("}")
            let line = buf.readable
            var t = JSONFieldTable()
            try JSONReader.parse(line, into: &t)
            let f = try #require(t.find("text", in: line))
            #expect(f.kind == .string)
            #expect(JSONReader.string(f, in: line) == s, "\(s.debugDescription)")
            #expect(JSONReader.int(try #require(t.find("n", in: line)), in: line) == -5)
        }
    }

    @Test func rawCopyIsValidAndDecodesTheSame() throws {
        let json = #"{"text":"a\"b\\c\n\u00e9\uD83D\uDE00 中"}"#
        try withParsed(json) { buf, t in
            let f = try #require(t.find("text", in: buf))
            var out = ByteBuffer()
            out.append("{\"echo\":")
            out.appendJSONStringRaw(escapedContents: UnsafeRawBufferPointer(rebasing: buf[f.valueStart..<f.valueEnd]))
            out.append("}")
            #expect(String(decoding: out.readable, as: UTF8.self) == #"{"echo":"a\"b\\c\n\u00e9\uD83D\uDE00 中"}"#)
            let line = out.readable
            var t2 = JSONFieldTable()
            try JSONReader.parse(line, into: &t2)
            let echo = try #require(t2.find("echo", in: line))
            #expect(JSONReader.string(echo, in: line) == "a\"b\\c\né😀 中")
            #expect(JSONReader.string(echo, in: line) == JSONReader.string(f, in: buf))
        }
    }
}
