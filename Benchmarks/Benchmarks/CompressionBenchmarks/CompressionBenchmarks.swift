// Compression micro-benchmarks: CompressionContext compress/decompress for lz4 (acceleration 1)
// and zstd (levels 1 and 3) on three payloads (a ~100 B JSON chat message, 4 KiB of
// English-like text, 64 KiB of chat log). One context and one output buffer per benchmark,
// warmed before the measurement, so the measured loop must not allocate (threshold: 0 mallocs).
//
// One scaled iteration = one message compressed (or decompressed), so `throughput` is messages
// per second; the custom metric `MBps` is uncompressed MB (10^6 bytes) per second, measured
// around each iteration's loop. The compression ratio is recorded as the custom metrics
// `compressedBytes` and `ratio_x100` (constant per benchmark; not printed, because
// package-benchmark runs every benchmark in a process of its own, which would repeat it 18 times).
import Benchmark
import Glibc
import Primitives

// MARK: - data (deterministic)

private struct XorShift {
    var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}

/// A chat message as the server delivers it (104 bytes).
private let smallJSON: [UInt8] = Array(
    #"{"type":"chat","room":"lobby","from":"alice","text":"is the deploy still on for 3pm?","ts":1732500000000}"#.utf8)

/// English-like text: words drawn from a 30-word vocabulary (the same generator as
/// Tests/PrimitivesTests/CompressionTests.swift, so the numbers compare with
/// docs/compression-notes.md).
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

/// Chat-log JSON lines (the same generator as the tests).
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

/// A stable copy of `bytes` (never freed) so the loops take no `withUnsafeBytes` detours.
private func pinned(_ bytes: [UInt8]) -> UnsafeRawBufferPointer {
    let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
    bytes.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    return UnsafeRawBufferPointer(start: p, count: bytes.count)
}

/// Holds a (noncopyable) ByteBuffer for the benchmark closures.
private final class Buffer {
    var bytes = ByteBuffer()
}

private func monoNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

// MARK: - benchmarks

let benchmarks: @Sendable () -> Void = {
    let mbps = BenchmarkMetric.custom("MBps", polarity: .prefersLarger, useScalingFactor: false)
    let compressedBytes = BenchmarkMetric.custom("compressedBytes", polarity: .prefersSmaller, useScalingFactor: false)
    let ratio = BenchmarkMetric.custom("ratio_x100", polarity: .prefersLarger, useScalingFactor: false)

    // Names have no spaces or slashes: package-benchmark 1.38.1 writes threshold files with
    // spaces turned into underscores but reads them back under the raw name.
    let zeroMallocs: [BenchmarkMetric: BenchmarkThresholds] = [
        .mallocCountTotal: .init(relative: [.p90: 0], absolute: [.p90: 0]),
    ]
    func config(_ scaling: BenchmarkScalingFactor) -> Benchmark.Configuration {
        .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal, mbps, compressedBytes, ratio],
            warmupIterations: 3,
            scalingFactor: scaling,
            maxDuration: .seconds(1),
            maxIterations: 10_000,
            thresholds: zeroMallocs
        )
    }

    let payloads: [(name: String, bytes: UnsafeRawBufferPointer, scaling: BenchmarkScalingFactor)] = [
        ("json100B", pinned(smallJSON), .kilo),     // 1000 messages per iteration
        ("text4KiB", pinned(englishText(4096)), .one),
        ("chatlog64KiB", pinned(chatLog(65536)), .one),
    ]
    let codecs: [(name: String, codec: CompressionCodec, make: () -> CompressionContext)] = [
        ("lz4", .lz4, { CompressionContext(lz4Acceleration: 1) }),
        ("zstd1", .zstd, { CompressionContext(zstdLevel: 1) }),
        ("zstd3", .zstd, { CompressionContext(zstdLevel: 3) }),
    ]

    for p in payloads {
        for c in codecs {
            let input = p.bytes
            let codec = c.codec
            // One context per benchmark: its zstd workspace is sized for this payload.
            let ctx = c.make()
            let enc = Buffer()
            let dec = Buffer()
            // Warm-up outside the measurement: grows both buffers and zstd's workspaces, and
            // checks the round trip.
            ctx.compress(codec, input, into: &enc.bytes)
            let compressed = pinned(Array(enc.bytes.readable))
            do {
                try ctx.decompress(codec, compressed, maxOutput: input.count, into: &dec.bytes)
            } catch {
                fatalError("\(c.name) \(p.name): round trip failed: \(error)")
            }
            precondition(Array(dec.bytes.readable) == Array(input), "\(c.name) \(p.name): round trip mismatch")
            let r100 = input.count * 100 / max(compressed.count, 1)

            Benchmark("\(c.name)_compress_\(p.name)", configuration: config(p.scaling)) { benchmark in
                enc.bytes.removeAll()
                ctx.compress(codec, input, into: &enc.bytes)
                benchmark.startMeasurement()
                let t0 = monoNanos()
                for _ in benchmark.scaledIterations {
                    enc.bytes.removeAll()
                    ctx.compress(codec, input, into: &enc.bytes)
                }
                let ns = monoNanos() - t0
                benchmark.stopMeasurement()
                blackHole(enc.bytes.readableCount)
                benchmark.measurement(mbps, Int(Double(input.count * benchmark.scaledIterations.count) * 1e3 / Double(max(ns, 1))))
                benchmark.measurement(compressedBytes, enc.bytes.readableCount)
                benchmark.measurement(ratio, input.count * 100 / max(enc.bytes.readableCount, 1))
            }
            Benchmark("\(c.name)_decompress_\(p.name)", configuration: config(p.scaling)) { benchmark in
                dec.bytes.removeAll()
                try? ctx.decompress(codec, compressed, maxOutput: input.count, into: &dec.bytes)
                benchmark.startMeasurement()
                let t0 = monoNanos()
                for _ in benchmark.scaledIterations {
                    dec.bytes.removeAll()
                    do {
                        try ctx.decompress(codec, compressed, maxOutput: input.count, into: &dec.bytes)
                    } catch {
                        fatalError("decompress failed: \(error)")
                    }
                }
                let ns = monoNanos() - t0
                benchmark.stopMeasurement()
                blackHole(dec.bytes.readableCount)
                benchmark.measurement(mbps, Int(Double(input.count * benchmark.scaledIterations.count) * 1e3 / Double(max(ns, 1))))
                benchmark.measurement(compressedBytes, compressed.count)
                benchmark.measurement(ratio, r100)
            }
        }
    }
}
