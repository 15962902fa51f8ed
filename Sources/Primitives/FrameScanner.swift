/// SIMD byte scanning for line framing and JSON fast paths.
///
/// Every scanner walks the buffer 32 bytes at a time with unaligned `SIMD32<UInt8>` loads, then
/// one `SIMD16<UInt8>` step, then a scalar tail. Nothing allocates. The hit position inside a
/// vector is found by reinterpreting the comparison mask (one 0x00/0xFF byte per lane) as
/// 64-bit words and counting trailing zero bits (little-endian lane order: x86_64, arm64).
public enum FrameScanner {
    // MARK: Mask helpers

    /// Offset of the first set lane of a 32-lane byte mask; the mask must have a set lane.
    @inlinable @inline(__always)
    internal static func firstSetLane(_ m: SIMDMask<SIMD32<Int8>>) -> Int {
        let w = unsafeBitCast(m, to: SIMD4<UInt64>.self)
        if w[0] != 0 { return w[0].trailingZeroBitCount &>> 3 }
        if w[1] != 0 { return 8 &+ (w[1].trailingZeroBitCount &>> 3) }
        if w[2] != 0 { return 16 &+ (w[2].trailingZeroBitCount &>> 3) }
        return 24 &+ (w[3].trailingZeroBitCount &>> 3)
    }

    /// Offset of the first set lane of a 16-lane byte mask; the mask must have a set lane.
    @inlinable @inline(__always)
    internal static func firstSetLane(_ m: SIMDMask<SIMD16<Int8>>) -> Int {
        let w = unsafeBitCast(m, to: SIMD2<UInt64>.self)
        if w[0] != 0 { return w[0].trailingZeroBitCount &>> 3 }
        return 8 &+ (w[1].trailingZeroBitCount &>> 3)
    }

    @inlinable @inline(__always)
    internal static func anySet(_ m: SIMDMask<SIMD32<Int8>>) -> Bool {
        let w = unsafeBitCast(m, to: SIMD4<UInt64>.self)
        return (w[0] | w[1] | w[2] | w[3]) != 0
    }

    @inlinable @inline(__always)
    internal static func anySet(_ m: SIMDMask<SIMD16<Int8>>) -> Bool {
        let w = unsafeBitCast(m, to: SIMD2<UInt64>.self)
        return (w[0] | w[1]) != 0
    }

    // MARK: Single byte search

    /// Offset of the first `byte` in `buffer`, comparing 32 bytes at a time with
    /// `SIMD32<UInt8>` (and a `SIMD16`/scalar tail), or nil.
    @inlinable
    public static func firstIndex(of byte: UInt8, in buffer: UnsafeRawBufferPointer) -> Int? {
        guard let base = buffer.baseAddress else { return nil }
        return firstIndex(of: byte, base: base, from: 0, to: buffer.count)
    }

    /// Offset (relative to `base`) of the first `byte` in `base[from..<to]`, or nil.
    @inlinable
    public static func firstIndex(of byte: UInt8, base: UnsafeRawPointer, from: Int, to end: Int) -> Int? {
        var i = from
        let n32 = SIMD32<UInt8>(repeating: byte)
        while i &+ 32 <= end {
            let v = base.loadUnaligned(fromByteOffset: i, as: SIMD32<UInt8>.self)
            let m = v .== n32
            if anySet(m) { return i &+ firstSetLane(m) }
            i &+= 32
        }
        if i &+ 16 <= end {
            let v = base.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self)
            let m = v .== SIMD16<UInt8>(repeating: byte)
            if anySet(m) { return i &+ firstSetLane(m) }
            i &+= 16
        }
        while i < end {
            if base.load(fromByteOffset: i, as: UInt8.self) == byte { return i }
            i &+= 1
        }
        return nil
    }

    /// Plain byte-at-a-time loop; the reference the SIMD path is tested and benchmarked against.
    @inlinable
    public static func firstIndexScalar(of byte: UInt8, in buffer: UnsafeRawBufferPointer) -> Int? {
        var i = 0
        let n = buffer.count
        while i < n {
            if buffer[i] == byte { return i }
            i &+= 1
        }
        return nil
    }

    // MARK: JSON string classes

    /// True when any byte in the buffer is a quote (0x22), backslash (0x5C), control (< 0x20)
    /// or >= 0x80, i.e. the bytes cannot be emitted inside a JSON string verbatim / need the
    /// slow path. SIMD.
    @inlinable
    public static func needsJSONEscapeOrValidation(_ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress else { return false }
        return firstJSONStringSpecial(base: base, from: 0, to: buffer.count) != nil
    }

    /// Offset of the first byte in `base[from..<to]` that ends a run of plain JSON string bytes:
    /// `"`, `\`, a control byte (< 0x20) or a non-ASCII byte (>= 0x80). Used by the JSON reader.
    @inlinable
    public static func firstJSONStringSpecial(base: UnsafeRawPointer, from: Int, to end: Int) -> Int? {
        var i = from
        // (b - 0x20) wraps controls to >= 0xE0 and maps >= 0x80 to >= 0x60, so one unsigned
        // compare catches both classes; quote and backslash are two equality tests.
        let off32 = SIMD32<UInt8>(repeating: 0x20)
        let lim32 = SIMD32<UInt8>(repeating: 0x60)
        let q32 = SIMD32<UInt8>(repeating: 0x22)
        let bs32 = SIMD32<UInt8>(repeating: 0x5C)
        while i &+ 32 <= end {
            let v = base.loadUnaligned(fromByteOffset: i, as: SIMD32<UInt8>.self)
            let m = ((v &- off32) .>= lim32) .| (v .== q32) .| (v .== bs32)
            if anySet(m) { return i &+ firstSetLane(m) }
            i &+= 32
        }
        if i &+ 16 <= end {
            let v = base.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self)
            let m = ((v &- SIMD16<UInt8>(repeating: 0x20)) .>= SIMD16<UInt8>(repeating: 0x60))
                .| (v .== SIMD16<UInt8>(repeating: 0x22)) .| (v .== SIMD16<UInt8>(repeating: 0x5C))
            if anySet(m) { return i &+ firstSetLane(m) }
            i &+= 16
        }
        while i < end {
            let b = base.load(fromByteOffset: i, as: UInt8.self)
            if b &- 0x20 >= 0x60 || b == 0x22 || b == 0x5C { return i }
            i &+= 1
        }
        return nil
    }

    /// Offset of the first byte in `base[from..<to]` that must be escaped when writing a JSON
    /// string: `"`, `\` or a control byte (< 0x20). Non-ASCII bytes pass. Used by the JSON writer.
    @inlinable
    public static func firstJSONEscapeNeeded(base: UnsafeRawPointer, from: Int, to end: Int) -> Int? {
        var i = from
        let sp32 = SIMD32<UInt8>(repeating: 0x20)
        let q32 = SIMD32<UInt8>(repeating: 0x22)
        let bs32 = SIMD32<UInt8>(repeating: 0x5C)
        while i &+ 32 <= end {
            let v = base.loadUnaligned(fromByteOffset: i, as: SIMD32<UInt8>.self)
            let m = (v .< sp32) .| (v .== q32) .| (v .== bs32)
            if anySet(m) { return i &+ firstSetLane(m) }
            i &+= 32
        }
        if i &+ 16 <= end {
            let v = base.loadUnaligned(fromByteOffset: i, as: SIMD16<UInt8>.self)
            let m = (v .< SIMD16<UInt8>(repeating: 0x20))
                .| (v .== SIMD16<UInt8>(repeating: 0x22)) .| (v .== SIMD16<UInt8>(repeating: 0x5C))
            if anySet(m) { return i &+ firstSetLane(m) }
            i &+= 16
        }
        while i < end {
            let b = base.load(fromByteOffset: i, as: UInt8.self)
            if b < 0x20 || b == 0x22 || b == 0x5C { return i }
            i &+= 1
        }
        return nil
    }
}
