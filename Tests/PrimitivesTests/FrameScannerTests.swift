import Testing
import Primitives

/// Deterministic xorshift so failures reproduce.
private struct XorShift: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

/// Reference classifier for `needsJSONEscapeOrValidation`.
private func isJSONSpecial(_ b: UInt8) -> Bool {
    b < 0x20 || b >= 0x80 || b == 0x22 || b == 0x5C
}

/// Runs `body` on `bytes` copied to every start offset 0..<32 inside a larger allocation, so
/// the vector loads are exercised at every alignment.
private func withUnalignedCopies(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes.count + 64, alignment: 64)
    defer { raw.deallocate() }
    for shift in 0..<32 {
        // Poison the bytes around the window with the needle-ish values so an over-read shows up.
        raw.initializeMemory(as: UInt8.self, repeating: 0x0A, count: bytes.count + 64)
        bytes.withUnsafeBytes { src in
            if src.count > 0 { (raw + shift).copyMemory(from: src.baseAddress!, byteCount: src.count) }
        }
        try body(UnsafeRawBufferPointer(start: raw + shift, count: bytes.count))
    }
}

@Suite struct FrameScannerTests {
    @Test func emptyAndNilBuffers() {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        #expect(FrameScanner.firstIndex(of: 0x0A, in: empty) == nil)
        #expect(FrameScanner.firstIndexScalar(of: 0x0A, in: empty) == nil)
        #expect(FrameScanner.needsJSONEscapeOrValidation(empty) == false)
    }

    @Test func simdMatchesScalarForEveryLengthAndPosition() {
        var rng = XorShift(seed: 42)
        let needle: UInt8 = 0x0A
        for length in 0...200 {
            // Random filler that never contains the needle.
            var base = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            for k in base.indices where base[k] == needle { base[k] = 0x0B }

            // Absent.
            withUnalignedCopies(base) { buf in
                #expect(FrameScanner.firstIndex(of: needle, in: buf) == nil, "length \(length)")
                #expect(FrameScanner.firstIndexScalar(of: needle, in: buf) == nil)
            }
            // Present at every position (and a second copy later, which must not win).
            for pos in 0..<length {
                var bytes = base
                bytes[pos] = needle
                if pos + 7 < length { bytes[pos + 7] = needle }
                withUnalignedCopies(bytes) { buf in
                    let simd = FrameScanner.firstIndex(of: needle, in: buf)
                    let scalar = FrameScanner.firstIndexScalar(of: needle, in: buf)
                    #expect(simd == pos, "length \(length) pos \(pos)")
                    #expect(simd == scalar)
                }
            }
        }
    }

    @Test func everyByteValueAsNeedle() {
        var rng = XorShift(seed: 7)
        let bytes = (0..<300).map { _ in UInt8.random(in: 0...255, using: &rng) }
        bytes.withUnsafeBytes { buf in
            for needle in 0...255 {
                let b = UInt8(needle)
                #expect(FrameScanner.firstIndex(of: b, in: buf) == FrameScanner.firstIndexScalar(of: b, in: buf),
                        "needle \(needle)")
            }
        }
    }

    @Test func rangeVariantIsRelativeToBase() {
        let bytes: [UInt8] = Array("abc\ndef\nghi".utf8)
        bytes.withUnsafeBytes { buf in
            #expect(FrameScanner.firstIndex(of: 0x0A, base: buf.baseAddress!, from: 0, to: buf.count) == 3)
            #expect(FrameScanner.firstIndex(of: 0x0A, base: buf.baseAddress!, from: 4, to: buf.count) == 7)
            #expect(FrameScanner.firstIndex(of: 0x0A, base: buf.baseAddress!, from: 8, to: buf.count) == nil)
            #expect(FrameScanner.firstIndex(of: 0x0A, base: buf.baseAddress!, from: 4, to: 7) == nil)
        }
    }

    @Test func needsJSONEscapeClassifiesEveryByte() {
        // A plain ASCII run of every length, with each byte value planted at each position.
        for value in 0...255 {
            let b = UInt8(value)
            let special = isJSONSpecial(b)
            for length in [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100] {
                for pos in Set([0, length / 2, length - 1]) {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[pos] = b
                    withUnalignedCopies(bytes) { buf in
                        #expect(FrameScanner.needsJSONEscapeOrValidation(buf) == special,
                                "byte \(value) length \(length) pos \(pos)")
                    }
                }
            }
        }
    }

    @Test func needsJSONEscapeRandomAgainstReference() {
        var rng = XorShift(seed: 1234)
        for length in 0...200 {
            for _ in 0..<4 {
                // Mostly printable ASCII so both outcomes are common.
                var bytes = (0..<length).map { _ in UInt8.random(in: 0x20...0x7E, using: &rng) }
                for k in bytes.indices where bytes[k] == 0x22 || bytes[k] == 0x5C { bytes[k] = 0x41 }
                if length > 0, Bool.random(using: &rng) {
                    bytes[Int.random(in: 0..<length, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
                let expected = bytes.contains(where: isJSONSpecial)
                withUnalignedCopies(bytes) { buf in
                    #expect(FrameScanner.needsJSONEscapeOrValidation(buf) == expected)
                    let idx = FrameScanner.firstJSONStringSpecial(base: buf.baseAddress!, from: 0, to: buf.count)
                    #expect(idx == bytes.firstIndex(where: isJSONSpecial))
                }
            }
        }
    }

    @Test func plainTextDoesNotNeedEscaping() {
        let text = "The quick brown fox jumps over the lazy dog; 0123456789 {}[]:,.!?~`'/*+-=_"
        var s = text
        s.withUTF8 { #expect(FrameScanner.needsJSONEscapeOrValidation(UnsafeRawBufferPointer($0)) == false) }
        for extra in ["\"", "\\", "\n", "\u{7}", "é", "😀"] {
            var t = text + extra + text
            t.withUTF8 { #expect(FrameScanner.needsJSONEscapeOrValidation(UnsafeRawBufferPointer($0)), "\(extra.debugDescription)") }
        }
    }

    @Test func writerEscapeScanAgreesWithReference() {
        var rng = XorShift(seed: 99)
        func needsEscape(_ b: UInt8) -> Bool { b < 0x20 || b == 0x22 || b == 0x5C }
        for length in 0...150 {
            var bytes = (0..<length).map { _ in UInt8.random(in: 0x20...0xFF, using: &rng) }
            for k in bytes.indices where needsEscape(bytes[k]) { bytes[k] = 0xC3 }
            for pos in stride(from: 0, to: length, by: 3) {
                var b = bytes
                b[pos] = [0x00, 0x1F, 0x22, 0x5C, 0x0A][pos % 5]
                withUnalignedCopies(b) { buf in
                    #expect(FrameScanner.firstJSONEscapeNeeded(base: buf.baseAddress!, from: 0, to: buf.count) == pos)
                }
            }
            withUnalignedCopies(bytes) { buf in
                #expect(FrameScanner.firstJSONEscapeNeeded(base: buf.baseAddress!, from: 0, to: buf.count) == nil)
            }
        }
    }
}
