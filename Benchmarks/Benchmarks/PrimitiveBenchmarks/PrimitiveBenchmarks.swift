// Primitives micro-benchmarks: FrameScanner SIMD vs scalar, StripedMap vs SingleLockMap with
// 2 threads, BufferPool take/give vs malloc/free.
import Benchmark
import Glibc
import Primitives

// MARK: - data

/// 64 KiB of newline-terminated chat lines (JSON-ish, 40..140 bytes each, deterministic).
let chatBuffer: UnsafeRawBufferPointer = {
    let size = 64 * 1024
    let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
    var i = 0
    let words = ["hello", "room", "general", "swift", "io_uring", "epoll", "reactor", "ok", "lgtm", "ping"]
    while i < size {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
        var line = "{\"type\":\"say\",\"room\":\"general\",\"text\":\""
        let n = Int(rng % 12) + 1
        for k in 0..<n { line += words[Int((rng >> (k * 3)) % UInt64(words.count))] + " " }
        line += "\"}\n"
        for b in line.utf8 where i < size {
            p.storeBytes(of: b, toByteOffset: i, as: UInt8.self)
            i += 1
        }
    }
    // End on a newline so both scanners see whole lines only.
    p.storeBytes(of: 0x0A, toByteOffset: size - 1, as: UInt8.self)
    return UnsafeRawBufferPointer(start: p, count: size)
}()

/// 64 KiB with no newline at all: one search scans everything.
let noNewlineBuffer: UnsafeRawBufferPointer = {
    let size = 64 * 1024
    let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    p.initializeMemory(as: UInt8.self, repeating: 0x61, count: size)
    return UnsafeRawBufferPointer(start: p, count: size)
}()

@inline(never)
func countLinesSIMD(_ buf: UnsafeRawBufferPointer) -> Int {
    var lines = 0
    var from = 0
    let base = buf.baseAddress!
    while let nl = FrameScanner.firstIndex(of: 0x0A, base: base, from: from, to: buf.count) {
        lines &+= 1
        from = nl &+ 1
    }
    return lines
}

@inline(never)
func countLinesScalar(_ buf: UnsafeRawBufferPointer) -> Int {
    var lines = 0
    var from = 0
    while from < buf.count {
        let rest = UnsafeRawBufferPointer(rebasing: buf[from...])
        guard let nl = FrameScanner.firstIndexScalar(of: 0x0A, in: rest) else { break }
        lines &+= 1
        from &+= nl &+ 1
    }
    return lines
}

// MARK: - threads

/// Runs `body(i)` on `count` pthreads at once and joins them.
func runOnThreads(_ count: Int, _ body: @escaping (Int) -> Void) {
    final class Job {
        let index: Int
        let body: (Int) -> Void
        init(_ index: Int, _ body: @escaping (Int) -> Void) { self.index = index; self.body = body }
    }
    var threads: [pthread_t] = []
    threads.reserveCapacity(count)
    for i in 0..<count {
        var t = pthread_t()
        let job = Unmanaged.passRetained(Job(i, body)).toOpaque()
        let rc = pthread_create(&t, nil, { arg in
            let job = Unmanaged<Job>.fromOpaque(arg!).takeRetainedValue()
            job.body(job.index)
            return nil
        }, job)
        precondition(rc == 0)
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

/// `ops` operations per thread over 1024 keys: 3 reads to 1 read-modify-write.
@inline(never)
func mapWorkload<M: ConcurrentMap>(_ map: M, thread: Int, ops: Int) where M.Key == Int, M.Value == Int {
    var rng = UInt64(thread + 1) &* 0x9E37_79B9_7F4A_7C15
    var sum = 0
    for i in 0..<ops {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
        let key = Int(rng & 1023)
        if i & 3 == 0 {
            map.update(key: key) { $0 = ($0 ?? 0) &+ 1 }
        } else {
            sum &+= map.withValue(forKey: key) { $0 ?? 0 }
        }
    }
    blackHole(sum)
}

// MARK: - benchmarks

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .one,
        maxDuration: .seconds(2),
        maxIterations: 10_000
    )

    // Names have no spaces or slashes: package-benchmark writes threshold files with spaces
    // turned into underscores but reads them back under the raw name.
    //
    // The zero-allocation benchmarks carry a mallocCountTotal threshold of 0 (Thresholds/);
    // zero tolerance, so a single malloc in the loop fails `benchmark thresholds check`.
    let zeroMallocs: [BenchmarkMetric: BenchmarkThresholds] = [
        .mallocCountTotal: .init(relative: [.p90: 0], absolute: [.p90: 0]),
    ]
    // Timing varies too much across machines for a committed threshold: only mallocs are checked.
    let zeroMallocConfig = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .one,
        maxDuration: .seconds(2),
        maxIterations: 10_000,
        thresholds: zeroMallocs
    )

    // Sanity: both scanners agree before anything is timed.
    let expectedLines = countLinesScalar(chatBuffer)
    precondition(countLinesSIMD(chatBuffer) == expectedLines)

    // One iteration = frame the whole 64 KiB buffer into lines (~720 searches).
    Benchmark("FrameScanner_lines_64KiB_SIMD", configuration: zeroMallocConfig) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(countLinesSIMD(chatBuffer))
        }
    }
    Benchmark("FrameScanner_lines_64KiB_scalar", configuration: zeroMallocConfig) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(countLinesScalar(chatBuffer))
        }
    }
    // One iteration = one search that scans all 64 KiB and finds nothing.
    Benchmark("FrameScanner_nomatch_64KiB_SIMD", configuration: zeroMallocConfig) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(FrameScanner.firstIndex(of: 0x0A, in: noNewlineBuffer))
        }
    }
    Benchmark("FrameScanner_nomatch_64KiB_scalar", configuration: zeroMallocConfig) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(FrameScanner.firstIndexScalar(of: 0x0A, in: noNewlineBuffer))
        }
    }

    // One iteration = 2 threads x 1M operations (75% reads) over 1024 keys, threads started
    // and joined inside the iteration (~2 x 50 us of ~50 ms). Wall clock only: asking for OS
    // metrics such as contextSwitches starts a sampling thread, which on a 2-core machine
    // takes a core away from the two workers and turned the comparison upside down.
    let mapOps = 1_000_000
    let mapConfig = Benchmark.Configuration(
        metrics: [.wallClock, .throughput],
        warmupIterations: 2,
        scalingFactor: .one,
        maxDuration: .seconds(4),
        maxIterations: 60
    )
    Benchmark("StripedMap16_2threads_1M_ops_each", configuration: mapConfig) { benchmark in
        let map = StripedMap<Int, Int>(stripes: 16)
        for k in 0..<1024 { map.updateValue(0, forKey: k) }
        benchmark.startMeasurement()
        runOnThreads(2) { t in mapWorkload(map, thread: t, ops: mapOps) }
        benchmark.stopMeasurement()
    }
    Benchmark("SingleLockMap_2threads_1M_ops_each", configuration: mapConfig) { benchmark in
        let map = SingleLockMap<Int, Int>()
        for k in 0..<1024 { map.updateValue(0, forKey: k) }
        benchmark.startMeasurement()
        runOnThreads(2) { t in mapWorkload(map, thread: t, ops: mapOps) }
        benchmark.stopMeasurement()
    }
    Benchmark("StripedMap16_1thread_1M_ops", configuration: mapConfig) { benchmark in
        let map = StripedMap<Int, Int>(stripes: 16)
        for k in 0..<1024 { map.updateValue(0, forKey: k) }
        benchmark.startMeasurement()
        mapWorkload(map, thread: 0, ops: mapOps)
        benchmark.stopMeasurement()
    }
    Benchmark("SingleLockMap_1thread_1M_ops", configuration: mapConfig) { benchmark in
        let map = SingleLockMap<Int, Int>()
        for k in 0..<1024 { map.updateValue(0, forKey: k) }
        benchmark.startMeasurement()
        mapWorkload(map, thread: 0, ops: mapOps)
        benchmark.stopMeasurement()
    }

    // One iteration = 1000 take/give (or malloc/free) pairs. The pool is warmed before the
    // measurement, so the measured loop must not allocate (threshold: 0 mallocs).
    let poolConfig = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 10_000,
        thresholds: zeroMallocs
    )
    var mallocConfig = poolConfig
    mallocConfig.thresholds = nil
    let pool = BufferPool()
    Benchmark("BufferPool_take+give_4KiB", configuration: poolConfig) { benchmark in
        pool.reserve(capacity: 4096, count: 1)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let c = pool.take(capacity: 4096)
            blackHole(c.base)
            pool.give(c)
        }
    }
    Benchmark("malloc+free_4KiB", configuration: mallocConfig) { benchmark in
        for _ in benchmark.scaledIterations {
            let p = malloc(4096)
            blackHole(p)
            free(p)
        }
    }
    // A burst: 16 buffers of mixed sizes out at once, then all back (as a reactor turn might).
    let burstSizes = [256, 1024, 4096, 16_384, 512, 2048, 8192, 65_536, 300, 700, 3000, 9000, 100, 1500, 6000, 40_000]
    let burstPool = BufferPool()
    Benchmark("BufferPool_burst16_mixed_sizes", configuration: poolConfig) { benchmark in
        for s in burstSizes { burstPool.reserve(capacity: s, count: 2) }
        var out = [PooledChunk](repeating: burstPool.take(capacity: 1), count: 16)
        burstPool.give(out[0])
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for i in 0..<16 { out[i] = burstPool.take(capacity: burstSizes[i]) }
            for i in 0..<16 { burstPool.give(out[i]) }
        }
        benchmark.stopMeasurement()
        blackHole(out)
    }
    Benchmark("malloc_burst16_mixed_sizes", configuration: mallocConfig) { benchmark in
        var out = [UnsafeMutableRawPointer?](repeating: nil, count: 16)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for i in 0..<16 { out[i] = malloc(burstSizes[i]) }
            for i in 0..<16 { free(out[i]) }
        }
        benchmark.stopMeasurement()
        blackHole(out)
    }
}
