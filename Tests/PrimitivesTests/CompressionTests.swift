import Testing
import CCompression
#if canImport(Glibc)
import Glibc
#endif
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

// MARK: - Payloads

private let smallJSON: [UInt8] = Array(#"{"op":"msg","room":"lobby","text":"hello there!!"}"#.utf8)

/// English-ish text: words drawn from a small vocabulary, deterministic.
private func englishText(_ count: Int, seed: UInt64 = 42) -> [UInt8] {
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "server",
                 "message", "room", "user", "joined", "left", "hello", "world", "chat", "and",
                 "a", "to", "of", "is", "in", "that", "it", "with", "for", "on", "was", "as"]
    var rng = XorShift(seed: seed)
    var out: [UInt8] = []
    out.reserveCapacity(count + 16)
    while out.count < count {
        out += Array(words[Int(rng.next() % UInt64(words.count))].utf8)
        out.append(rng.next() % 12 == 0 ? UInt8(ascii: ".") : UInt8(ascii: " "))
    }
    return Array(out.prefix(count))
}

/// 64 KiB of chat-log-like JSON lines (mixed, moderately compressible).
private func chatLog(_ count: Int) -> [UInt8] {
    var rng = XorShift(seed: 7)
    var out: [UInt8] = []
    var i = 0
    while out.count < count {
        let text = englishText(20 + Int(rng.next() % 80), seed: rng.next())
        out += Array(#"{"op":"msg","room":"room-\#(i % 17)","from":"user\#(rng.next() % 1000)","seq":\#(i),"text":""#.utf8)
        out += text
        out += Array("\"}\n".utf8)
        i += 1
    }
    return Array(out.prefix(count))
}

private func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = XorShift(seed: seed)
    return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

// MARK: - Helpers

private func compressed(_ ctx: CompressionContext, _ codec: CompressionCodec, _ input: [UInt8]) -> [UInt8] {
    var out = ByteBuffer()
    input.withUnsafeBytes { ctx.compress(codec, $0, into: &out) }
    return Array(out.readable)
}

private func decompressed(_ ctx: CompressionContext, _ codec: CompressionCodec, _ payload: [UInt8],
                          maxOutput: Int = 1 << 20) -> Result<[UInt8], CompressionError> {
    var out = ByteBuffer()
    var failure: CompressionError?
    payload.withUnsafeBytes { p in
        do throws(CompressionError) {
            try ctx.decompress(codec, p, maxOutput: maxOutput, into: &out)
        } catch {
            failure = error
        }
    }
    if let failure {
        // A failed decode leaves the output untouched.
        #expect(out.readableCount == 0)
        return .failure(failure)
    }
    return .success(Array(out.readable))
}

private func isCorrupt(_ r: Result<[UInt8], CompressionError>) -> Bool {
    if case .failure(.corrupt) = r { return true }
    return false
}

private let allCodecs: [CompressionCodec] = [.raw, .lz4, .zstd]

// MARK: - Tests

@Suite struct CompressionTests {
    @Test func codecNames() {
        for codec in allCodecs { #expect(CompressionCodec(name: codec.name) == codec) }
        #expect(CompressionCodec(name: "lz4") == .lz4)
        #expect(CompressionCodec(name: "zstd") == .zstd)
        #expect(CompressionCodec(name: "gzip") == nil)
        #expect(CompressionCodec(rawValue: 1) == .lz4)
        #expect(CompressionCodec(rawValue: 2) == .zstd)
    }

    @Test(arguments: [CompressionCodec.raw, .lz4, .zstd])
    func roundTrips(codec: CompressionCodec) {
        let ctx = CompressionContext()
        let inputs: [[UInt8]] = [[], [0x41], [0], smallJSON, englishText(4096), chatLog(65536),
                                 randomBytes(4096, seed: 3), [UInt8](repeating: 0, count: 65536)]
        for input in inputs {
            let c = compressed(ctx, codec, input)
            #expect(decompressed(ctx, codec, c) == .success(input), "\(codec.name) \(input.count) B")
            // Exact limit is allowed, one below is not (except empty input).
            #expect(decompressed(ctx, codec, c, maxOutput: input.count) == .success(input))
            if input.count > 0 {
                #expect(decompressed(ctx, codec, c, maxOutput: input.count - 1) == .failure(.tooLarge))
            }
        }
        // Compressible payloads actually shrink.
        if codec != .raw {
            #expect(compressed(ctx, codec, englishText(4096)).count < 4096 * 3 / 4)
            #expect(compressed(ctx, codec, chatLog(65536)).count < 65536 / 2)
        }
    }

    @Test func contextIsReusableAndAppends() {
        // One context, interleaved codecs and sizes, appending after existing bytes.
        let ctx = CompressionContext(zstdLevel: 1, lz4Acceleration: 4)
        let payloads = [smallJSON, englishText(4096), chatLog(65536), [], smallJSON]
        for round in 0..<3 {
            for codec in allCodecs {
                var enc = ByteBuffer()
                enc.append("prefix")
                for p in payloads { p.withUnsafeBytes { ctx.compress(codec, $0, into: &enc) } }
                #expect(enc.readableCount > 6, "round \(round)")
                // Decode each piece by re-compressing individually (the formats are not
                // self-delimiting across concatenation) and check decode appends.
                var dec = ByteBuffer()
                dec.append("x")
                for p in payloads {
                    let c = compressed(ctx, codec, p)
                    c.withUnsafeBytes { try? ctx.decompress(codec, $0, maxOutput: 1 << 20, into: &dec) }
                }
                #expect(Array(dec.readable) == [UInt8(ascii: "x")] + payloads.flatMap { $0 })
            }
        }
    }

    @Test func lz4FormatIsSizeHeaderPlusBlock() {
        let ctx = CompressionContext()
        for input in [[], [0x41], smallJSON, englishText(4096), chatLog(65536)] {
            let c = compressed(ctx, .lz4, input)
            #expect(c.count >= 5)
            let size = Int(c[0]) << 24 | Int(c[1]) << 16 | Int(c[2]) << 8 | Int(c[3])
            #expect(size == input.count)
            // Decode the block independently with LZ4_decompress_safe.
            var plain = [UInt8](repeating: 0, count: max(size, 1))
            let n = c.withUnsafeBytes { src in
                plain.withUnsafeMutableBytes { dst in
                    LZ4_decompress_safe((src.baseAddress! + 4).assumingMemoryBound(to: CChar.self),
                                        dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                                        Int32(c.count - 4), Int32(size))
                }
            }
            #expect(Int(n) == input.count)
            #expect(Array(plain.prefix(Int(max(n, 0)))) == input)
            // The reused stream carries no history: the same input, after other messages,
            // compresses to the same bytes.
            _ = compressed(ctx, .lz4, chatLog(65536))
            #expect(compressed(ctx, .lz4, input) == c)
            #expect(compressed(CompressionContext(), .lz4, input) == c)
        }
    }

    @Test func zstdFrameCarriesContentSize() {
        let ctx = CompressionContext()
        for input in [[], [0x41], smallJSON, englishText(4096), chatLog(65536)] {
            let c = compressed(ctx, .zstd, input)
            let fcs = c.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress!, $0.count) }
            #expect(fcs == UInt64(input.count))
            let frame = c.withUnsafeBytes { ZSTD_findFrameCompressedSize($0.baseAddress!, $0.count) }
            #expect(frame == c.count)
            // Independently decodable with the one-shot API.
            var plain = [UInt8](repeating: 0, count: max(input.count, 1))
            let n = c.withUnsafeBytes { src in
                plain.withUnsafeMutableBytes { ZSTD_decompress($0.baseAddress!, input.count, src.baseAddress!, src.count) }
            }
            #expect(ZSTD_isError(n) == 0)
            #expect(Array(plain.prefix(n)) == input)
        }
    }

    @Test func lz4HeaderClaimingHugeSizeIsTooLarge() {
        let ctx = CompressionContext()
        // 0xFFFF_FFFF (~4 GiB, the most a u32 can claim) and ~2.5 GB, with a plausible block.
        for header: [UInt8] in [[0xFF, 0xFF, 0xFF, 0xFF], [0x95, 0x02, 0xF9, 0x00]] {
            let payload = header + [0x1F, 0x41, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]
            #expect(decompressed(ctx, .lz4, payload, maxOutput: 64 << 10) == .failure(.tooLarge))
            // Even with a huge limit the size is refused before allocating: beyond LZ4's range.
            #expect(isCorrupt(decompressed(ctx, .lz4, payload, maxOutput: Int.max)))
        }
        // A 10 GB claim cannot even be expressed in the u32 header; a header claiming 1 MiB
        // against a 64 KiB limit must fail without decoding.
        #expect(decompressed(ctx, .lz4, [0, 0x10, 0, 0, 0], maxOutput: 64 << 10) == .failure(.tooLarge))
    }

    @Test func zstdContentSizeAboveLimitIsTooLarge() {
        let ctx = CompressionContext()
        let input = chatLog(65536)
        let c = compressed(ctx, .zstd, input)
        #expect(decompressed(ctx, .zstd, c, maxOutput: 65535) == .failure(.tooLarge))
        #expect(decompressed(ctx, .zstd, c, maxOutput: 0) == .failure(.tooLarge))
        #expect(decompressed(ctx, .zstd, c, maxOutput: -1) == .failure(.tooLarge))
    }

    @Test func zstdBombIsTooLarge() {
        let ctx = CompressionContext()
        let zeros = [UInt8](repeating: 0, count: 10_000_000)
        let bomb = compressed(ctx, .zstd, zeros)
        #expect(bomb.count < 2000)   // ~5000:1
        #expect(decompressed(ctx, .zstd, bomb, maxOutput: 64 << 10) == .failure(.tooLarge))
        let lz4Bomb = compressed(ctx, .lz4, zeros)
        #expect(decompressed(ctx, .lz4, lz4Bomb, maxOutput: 64 << 10) == .failure(.tooLarge))
        // Within a large enough limit the same payloads decode.
        #expect(decompressed(ctx, .zstd, bomb, maxOutput: 10_000_000) == .success(zeros))
        #expect(decompressed(ctx, .lz4, lz4Bomb, maxOutput: 10_000_000) == .success(zeros))
    }

    @Test func zstdWithoutContentSizeOrWithTrailingFramesIsRejected() throws {
        let ctx = CompressionContext()
        let input = englishText(4096)
        // A frame with the content-size flag off (built with a raw CCtx).
        let cctx = try #require(ZSTD_createCCtx())
        defer { ZSTD_freeCCtx(cctx) }
        _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)
        var buf = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = input.withUnsafeBytes { src in
            buf.withUnsafeMutableBytes { ZSTD_compress2(cctx, $0.baseAddress!, $0.count, src.baseAddress!, src.count) }
        }
        #expect(ZSTD_isError(n) == 0)
        let noSize = Array(buf.prefix(n))
        #expect(noSize.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress!, $0.count) }
                == ccompression_zstd_contentsize_unknown())
        #expect(isCorrupt(decompressed(ctx, .zstd, noSize)))

        // A small frame followed by a second (bomb) frame: the first's size must not vouch
        // for the whole payload.
        let small = compressed(ctx, .zstd, smallJSON)
        let big = compressed(ctx, .zstd, [UInt8](repeating: 0, count: 1_000_000))
        #expect(isCorrupt(decompressed(ctx, .zstd, small + big, maxOutput: 64 << 10)))
        #expect(isCorrupt(decompressed(ctx, .zstd, small + small)))
        #expect(isCorrupt(decompressed(ctx, .zstd, small + [0])))
    }

    @Test(arguments: [CompressionCodec.lz4, .zstd])
    func corruptInputIsRejectedWithoutCrashing(codec: CompressionCodec) {
        let ctx = CompressionContext()
        var rng = XorShift(seed: 0xC0FFEE)
        for input in [smallJSON, englishText(4096), chatLog(65536)] {
            let good = compressed(ctx, codec, input)
            // Truncations at every length for small payloads, a sample for larger ones.
            let cuts = good.count <= 128 ? Array(0..<good.count)
                                         : (0..<200).map { _ in Int(rng.next() % UInt64(good.count)) }
            for cut in cuts {
                let r = decompressed(ctx, codec, Array(good.prefix(cut)))
                #expect(isCorrupt(r), "\(codec.name) truncated to \(cut) of \(good.count)")
            }
            // Flipped bytes: must never crash or overrun; if it still decodes (e.g. a flipped
            // literal in LZ4, which has no checksum) it decodes to the declared size.
            for _ in 0..<500 {
                var bad = good
                let flips = 1 + Int(rng.next() % 4)
                for _ in 0..<flips {
                    let i = Int(rng.next() % UInt64(bad.count))
                    bad[i] ^= UInt8(truncatingIfNeeded: 1 | rng.next())
                }
                switch decompressed(ctx, codec, bad, maxOutput: 1 << 20) {
                case .success(let out): #expect(out.count <= 1 << 20)
                case .failure: break
                }
            }
            // Flipping the size field specifically is always caught.
            if codec == .lz4 {
                var bad = good
                bad[3] ^= 0x01
                let r = decompressed(ctx, codec, bad)
                #expect(isCorrupt(r) || r == .failure(.tooLarge))
            }
        }
        // Random garbage of many lengths.
        for len in Array(0...64) + [100, 255, 256, 1000, 4096, 65536] {
            for s in 0..<8 {
                let garbage = randomBytes(len, seed: UInt64(len * 31 + s + 1))
                switch decompressed(ctx, codec, garbage, maxOutput: 64 << 10) {
                case .success(let out): #expect(out.count <= 64 << 10)
                case .failure: break
                }
            }
        }
        // Garbage after a valid zstd magic / a small lz4 size header is (almost always) refused:
        // .corrupt, or .tooLarge when a random zstd header declares a big content size.
        var refused = 0
        for s in 0..<200 {
            var garbage = randomBytes(8 + s, seed: UInt64(s) &+ 99)
            if codec == .zstd {
                garbage[0] = 0x28; garbage[1] = 0xB5; garbage[2] = 0x2F; garbage[3] = 0xFD
            } else {
                garbage[0] = 0; garbage[1] = 0; garbage[2] = 0x01; garbage[3] = 0x00   // 256 B
            }
            let r = decompressed(ctx, codec, garbage, maxOutput: 64 << 10)
            if case .failure = r { refused += 1 }
        }
        #expect(refused >= 190)
        // The context still works after all that.
        #expect(decompressed(ctx, codec, compressed(ctx, codec, smallJSON)) == .success(smallJSON))
    }

    @Test func emptyAndShortPayloads() {
        let ctx = CompressionContext()
        #expect(isCorrupt(decompressed(ctx, .lz4, [])))
        #expect(isCorrupt(decompressed(ctx, .lz4, [0, 0, 0])))
        #expect(isCorrupt(decompressed(ctx, .lz4, [0, 0, 0, 0])))          // header, no block
        #expect(decompressed(ctx, .lz4, [0, 0, 0, 0, 0]) == .success([])) // empty block
        #expect(isCorrupt(decompressed(ctx, .lz4, [0, 0, 0, 1, 0])))       // claims 1, has 0
        #expect(isCorrupt(decompressed(ctx, .lz4, [0, 0, 0, 0, 0x10, 0x41]))) // claims 0, has 1
        #expect(isCorrupt(decompressed(ctx, .zstd, [])))
        #expect(isCorrupt(decompressed(ctx, .zstd, [0x28, 0xB5, 0x2F, 0xFD])))
        #expect(decompressed(ctx, .raw, [], maxOutput: 0) == .success([]))
        #expect(decompressed(ctx, .raw, [1, 2], maxOutput: 1) == .failure(.tooLarge))
    }

    /// Not a timing assertion: prints ratio and MB/s for docs/compression-notes.md. Off unless
    /// COMPRESSION_BENCH is set; only meaningful in release mode:
    /// `COMPRESSION_BENCH=1 swift test -c release --filter compressionBench`.
    @Test(.enabled(if: getenv("COMPRESSION_BENCH") != nil))
    func compressionBenchPrintsNumbers() {
        let payloads: [(String, [UInt8])] = [("json-50B", smallJSON), ("text-4KiB", englishText(4096)),
                                             ("chatlog-64KiB", chatLog(65536))]
        let configs: [(String, CompressionCodec, CompressionContext)] = [
            ("lz4 a1", .lz4, CompressionContext(lz4Acceleration: 1)),
            ("zstd -1", .zstd, CompressionContext(zstdLevel: 1)),
            ("zstd -3", .zstd, CompressionContext(zstdLevel: 3)),
        ]
        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        print("payload        codec    size -> comp  ratio   comp MB/s  decomp MB/s")
        for (pname, input) in payloads {
            for (cname, codec, ctx) in configs {
                let iterations = max(200, 20_000_000 / max(input.count, 1))
                var enc = ByteBuffer()
                var dec = ByteBuffer()
                input.withUnsafeBytes { ctx.compress(codec, $0, into: &enc) }
                let compSize = enc.readableCount
                let tc = clock.measure {
                    input.withUnsafeBytes { src in
                        for _ in 0..<iterations { enc.removeAll(); ctx.compress(codec, src, into: &enc) }
                    }
                }
                let td = clock.measure {
                    for _ in 0..<iterations {
                        dec.removeAll()
                        try? ctx.decompress(codec, enc.readable, maxOutput: 1 << 20, into: &dec)
                    }
                }
                #expect(Array(dec.readable) == input)
                let mb = Double(input.count * iterations) / 1e6
                let line = "\(pname.padding(14)) \(cname.padding(8)) \(String(input.count).padding(5, left: true)) -> \(String(compSize).padding(5, left: true))  "
                    + "\(fmt(Double(input.count) / Double(compSize)).padding(5, left: true))  "
                    + "\(fmt(mb / seconds(tc), 0).padding(9, left: true))  \(fmt(mb / seconds(td), 0).padding(11, left: true))"
                    + "   (\(fmt(seconds(tc) / Double(iterations) * 1e9, 0)) ns / \(fmt(seconds(td) / Double(iterations) * 1e9, 0)) ns per msg)"
                print(line)
            }
        }
    }
}

private func fmt(_ v: Double, _ decimals: Int = 2) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let r = (v * scale).rounded() / scale
    if decimals == 0 { return String(Int(r)) }
    let whole = Int(r)
    var frac = String(Int(((r - Double(whole)) * scale).rounded()))
    while frac.count < decimals { frac = "0" + frac }
    return "\(whole).\(frac)"
}

private extension String {
    func padding(_ n: Int, left: Bool = false) -> String {
        count >= n ? self : (left ? String(repeating: " ", count: n - count) + self
                                  : self + String(repeating: " ", count: n - count))
    }
}
