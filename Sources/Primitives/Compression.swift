import CCompression

/// The payload encodings a message can travel in.
public enum CompressionCodec: UInt8, Sendable {
    case raw = 0
    case lz4 = 1
    case zstd = 2

    /// Parses a negotiated codec name ("raw", "lz4", "zstd"; ASCII case-insensitive).
    public init?(name: String) {
        switch name.lowercased() {
        case "raw", "none": self = .raw
        case "lz4": self = .lz4
        case "zstd": self = .zstd
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .raw: return "raw"
        case .lz4: return "lz4"
        case .zstd: return "zstd"
        }
    }
}

public enum CompressionError: Error, Equatable {
    /// The decompressed size would exceed the caller's limit (checked before anything is
    /// allocated or decoded).
    case tooLarge
    /// The payload is not a valid encoding; the string is a short reason for logs.
    case corrupt(String)
}

/// Per-reactor compression state: one LZ4 stream and one ZSTD_CCtx + ZSTD_DCtx, created
/// once and reused, so compressing or decompressing a message allocates nothing in steady state
/// (beyond growing the caller's `ByteBuffer`; zstd sizes its workspace on first use and then
/// reuses it).
///
/// Not thread-safe: one per reactor thread.
///
/// Formats:
/// - lz4:  `[u32 big-endian original size][one LZ4 block]` (the LZ4 block format, no frame).
/// - zstd: one Zstandard frame with its content-size field set, no checksum.
/// - raw:  the bytes as is.
public final class CompressionContext {
    private let lz4State: UnsafeMutablePointer<LZ4_stream_t>
    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    /// A valid address to hand the libraries for empty inputs (never read or written).
    private let emptySource: UnsafeMutableRawPointer
    private let lz4Acceleration: Int32
    public let zstdLevel: Int

    /// The largest input LZ4 handles in one block (about 2 GiB).
    private static let lz4MaxInput = Int(ccompression_lz4_max_input_size())

    public init(zstdLevel: Int = 3, lz4Acceleration: Int = 1) {
        let level = min(max(zstdLevel, Int(ZSTD_minCLevel())), Int(ZSTD_maxCLevel()))
        self.zstdLevel = level
        self.lz4Acceleration = Int32(min(max(lz4Acceleration, 1), 65_537))
        let lz4Bytes = MemoryLayout<LZ4_stream_t>.size
        let raw = UnsafeMutableRawPointer.allocate(byteCount: lz4Bytes, alignment: 16)
        guard let stream = LZ4_initStream(raw, lz4Bytes) else { fatalError("LZ4_initStream failed") }
        lz4State = stream
        emptySource = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        guard let c = ZSTD_createCCtx(), let d = ZSTD_createDCtx() else {
            fatalError("ZSTD_createCCtx/ZSTD_createDCtx failed (out of memory)")
        }
        cctx = c
        dctx = d
        // Parameters stick across ZSTD_compress2 calls (it resets the session only).
        var r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, Int32(level))
        precondition(ZSTD_isError(r) == 0, "zstd: cannot set level \(level)")
        r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
        precondition(ZSTD_isError(r) == 0)
        r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0)
        precondition(ZSTD_isError(r) == 0)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeDCtx(dctx)
        lz4State.deallocate()
        emptySource.deallocate()
    }

    // MARK: - Compress

    /// Appends the payload for `codec` to `out`: lz4 → `[u32 BE original size][LZ4 block]`,
    /// zstd → one frame with its content size set, raw → the input as is.
    ///
    /// Inputs larger than LZ4's block limit (~2 GiB) are a programming error for lz4.
    public func compress(_ codec: CompressionCodec, _ input: UnsafeRawBufferPointer,
                         into out: inout ByteBuffer) {
        switch codec {
        case .raw:
            out.append(input)
        case .lz4:
            compressLZ4(input, into: &out)
        case .zstd:
            compressZstd(input, into: &out)
        }
    }

    private func compressLZ4(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        let n = input.count
        precondition(n <= Self.lz4MaxInput, "lz4: input of \(n) bytes exceeds the block limit")
        let bound = Int(LZ4_compressBound(Int32(n)))
        let src = input.baseAddress ?? UnsafeRawPointer(emptySource)
        let state = lz4State
        let accel = lz4Acceleration
        out.writeWithUnsafeMutableBytes(minimumCapacity: 4 + bound) { dst in
            let base = dst.baseAddress!
            base.storeBytes(of: UInt32(truncatingIfNeeded: n).bigEndian, as: UInt32.self)
            // Equivalent to LZ4_compress_fast_extState, minus its 16 KiB memset per call:
            // resetStream_fast drops the history (the block stays independent) and only
            // offsets the hash table. (LZ4_compress_fast_extState_fastReset would do the same
            // but is not exported by distro builds of liblz4.)
            LZ4_resetStream_fast(state)
            let written = LZ4_compress_fast_continue(
                state,
                src.assumingMemoryBound(to: CChar.self),
                (base + 4).assumingMemoryBound(to: CChar.self),
                Int32(n), Int32(bound), accel)
            // With dstCapacity >= LZ4_compressBound compression cannot fail.
            precondition(written > 0, "LZ4_compress_fast_continue failed")
            return 4 + Int(written)
        }
    }

    private func compressZstd(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        let n = input.count
        let bound = ZSTD_compressBound(n)
        precondition(ZSTD_isError(bound) == 0, "zstd: input of \(n) bytes too large")
        let src = input.baseAddress ?? UnsafeRawPointer(emptySource)
        let cctx = self.cctx
        out.writeWithUnsafeMutableBytes(minimumCapacity: bound) { dst in
            // ZSTD_compress2 knows the whole input, so it pledges its size and writes the
            // content-size field into the frame header.
            let written = ZSTD_compress2(cctx, dst.baseAddress!, dst.count, src, n)
            precondition(ZSTD_isError(written) == 0,
                         "ZSTD_compress2: \(String(cString: ZSTD_getErrorName(written)))")
            return written
        }
    }

    // MARK: - Decompress

    /// Decompresses a payload of `codec` and appends the result to `out`.
    ///
    /// Throws `.tooLarge` when the declared decompressed size exceeds `maxOutput` (before
    /// reserving any space), `.corrupt` for anything malformed: missing or inconsistent size
    /// fields, truncated or trailing data, invalid blocks. On error `out` is left unchanged
    /// (its spare capacity may have been scribbled on, never its readable bytes).
    public func decompress(_ codec: CompressionCodec, _ payload: UnsafeRawBufferPointer,
                           maxOutput: Int, into out: inout ByteBuffer) throws(CompressionError) {
        let limit = max(maxOutput, 0)
        switch codec {
        case .raw:
            if payload.count > limit { throw .tooLarge }
            out.append(payload)
        case .lz4:
            try decompressLZ4(payload, limit: limit, into: &out)
        case .zstd:
            try decompressZstd(payload, limit: limit, into: &out)
        }
    }

    private func decompressLZ4(_ payload: UnsafeRawBufferPointer, limit: Int,
                               into out: inout ByteBuffer) throws(CompressionError) {
        guard payload.count >= 4, let p = payload.baseAddress else {
            throw .corrupt("lz4: truncated size header")
        }
        let size = Int(UInt32(bigEndian: p.loadUnaligned(as: UInt32.self)))
        if size > limit { throw .tooLarge }
        guard size <= Self.lz4MaxInput else { throw .corrupt("lz4: size field out of range") }
        let blockCount = payload.count - 4
        // The smallest block (empty input) is one token byte.
        guard blockCount >= 1 else { throw .corrupt("lz4: missing block") }
        guard blockCount <= Int(Int32.max) else { throw .corrupt("lz4: block too large") }
        let src = (p + 4).assumingMemoryBound(to: CChar.self)
        var result: Int32 = -1
        // Capacity is exactly the declared size: a block that decodes to more fails, and one
        // that decodes to less is caught below. Nothing is committed unless both agree.
        out.writeWithUnsafeMutableBytes(minimumCapacity: max(size, 1)) { dst in
            result = LZ4_decompress_safe(src, dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                         Int32(blockCount), Int32(size))
            return Int(result) == size ? size : 0
        }
        if result < 0 { throw .corrupt("lz4: invalid block") }
        if Int(result) != size { throw .corrupt("lz4: size mismatch") }
    }

    private func decompressZstd(_ payload: UnsafeRawBufferPointer, limit: Int,
                                into out: inout ByteBuffer) throws(CompressionError) {
        guard payload.count > 0, let src = payload.baseAddress else {
            throw .corrupt("zstd: empty payload")
        }
        let contentSize = ZSTD_getFrameContentSize(src, payload.count)
        if contentSize == ccompression_zstd_contentsize_error() {
            throw .corrupt("zstd: invalid frame header")
        }
        if contentSize == ccompression_zstd_contentsize_unknown() {
            // Our encoder always writes the size; a frame without it could claim anything.
            throw .corrupt("zstd: frame has no content size")
        }
        if contentSize > UInt64(limit) { throw .tooLarge }
        let size = Int(contentSize)
        // Exactly one frame: ZSTD_decompressDCtx would go on into concatenated frames, whose
        // sizes the check above did not see.
        let frameLength = ZSTD_findFrameCompressedSize(src, payload.count)
        if ZSTD_isError(frameLength) != 0 { throw Self.zstdError(frameLength) }
        if frameLength != payload.count { throw .corrupt("zstd: trailing data after frame") }
        let dctx = self.dctx
        var result = 0
        out.writeWithUnsafeMutableBytes(minimumCapacity: max(size, 1)) { dst in
            result = ZSTD_decompressDCtx(dctx, dst.baseAddress!, size, src, payload.count)
            return ZSTD_isError(result) == 0 && result == size ? size : 0
        }
        if ZSTD_isError(result) != 0 { throw Self.zstdError(result) }
        if result != size { throw .corrupt("zstd: size mismatch") }
    }

    private static func zstdError(_ code: Int) -> CompressionError {
        .corrupt("zstd: " + String(cString: ZSTD_getErrorName(code)))
    }
}
