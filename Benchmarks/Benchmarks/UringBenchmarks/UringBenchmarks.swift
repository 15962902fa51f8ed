// io_uring micro-benchmarks: nop submit+reap per batch size, a 64-byte TCP round trip over
// loopback through io_uring (one-shot send/recv, and multishot recv into a provided-buffer ring
// as the server does it) against the same round trip through epoll + read/write, and the cost
// of recycling provided buffers; and each io_uring technique the server can switch on, alone
// (TechniqueStream: fixed vs regular files, bundle vs single recv, incremental vs whole
// buffers), so a user sees what each is worth on their kernel. The workloads live in UringBenchSupport (see there for why).
//
// Rings and sockets are created lazily inside the benchmark body, on the thread that then
// submits (SINGLE_ISSUER), and dropped in teardown.
import Benchmark
import UringBenchSupport

/// Created on first use (on the benchmark thread), dropped by `reset()`.
final class Lazy<T: AnyObject> {
    private var value: T?
    private let make: () -> T
    init(_ make: @escaping () -> T) { self.make = make }
    var get: T {
        if let v = value { return v }
        let v = make()
        value = v
        return v
    }
    func reset() { value = nil }
}

let benchmarks: @Sendable () -> Void = {
    // Every loop here is allocation-free once set up: each benchmark has a committed
    // mallocCountTotal threshold of 0 (Thresholds/), checked with zero tolerance.
    // Names have no spaces or slashes (threshold file names, see PrimitiveBenchmarks).
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000,
        thresholds: [.mallocCountTotal: .init(relative: [.p90: 0], absolute: [.p90: 0])]
    )

    // One scaled iteration = one batch. Time per batch; divide by the batch size for per-nop.
    for batch in [1, 8, 32, 128] {
        let nops = Lazy { NopBatches(batch: batch) }
        Benchmark("nop_submit+reap_batch=\(batch)") { benchmark in
            let n = nops.get
            benchmark.startMeasurement()
            blackHole(n.run(iterations: benchmark.scaledIterations.count))
        } teardown: {
            nops.reset()
        }
    }

    // One scaled iteration = one 64-byte round trip (a → b → a) on a loopback TCP pair.
    let variants: [(String, () -> RoundTripper)] = [
        ("tcp_roundtrip_64B_io_uring_send+recv", { UringEcho() }),
        ("tcp_roundtrip_64B_io_uring_multishot+bufring", { UringMultishotEcho() }),
        ("tcp_roundtrip_64B_epoll+read+write", { EpollEcho() }),
    ]
    for (name, make) in variants {
        let echo = Lazy<AnyObject> { make() }
        Benchmark(name) { benchmark in
            let e = echo.get as! RoundTripper
            benchmark.startMeasurement()
            e.run(iterations: benchmark.scaledIterations.count)
        } teardown: {
            echo.reset()
        }
    }

    // One scaled iteration = one burst sent with IORING_OP_SEND and received by a multishot
    // recv from a provided-buffer ring. Pairs differ in one technique; a technique this kernel
    // lacks is reported and its benchmark skipped.
    let techniques: [(String, TechniqueStream.Options)] = [
        ("technique_64B_regular_fd", .init(bytes: 64)),
        ("technique_64B_fixed_file", .init(bytes: 64, fixedFiles: true)),
        ("technique_512B_whole_buffers", .init(bytes: 512)),
        ("technique_512B_incremental_buffers", .init(bytes: 512, incremental: true)),
        ("technique_64KiB_single_recv", .init(bytes: 65536)),
        ("technique_64KiB_bundle_recv", .init(bytes: 65536, bundle: true)),
        ("technique_64KiB_bundle+incremental", .init(bytes: 65536, bundle: true, incremental: true)),
    ]
    for (name, options) in techniques {
        guard TechniqueStream(options) != nil else {
            print("\(name): this kernel lacks the technique; skipped")
            continue
        }
        let stream = Lazy { TechniqueStream(options)! }
        Benchmark(name) { benchmark in
            let t = stream.get
            benchmark.startMeasurement()
            blackHole(t.run(iterations: benchmark.scaledIterations.count))
        } teardown: {
            stream.reset()
        }
    }

    // One scaled iteration = one buffer handed back (perAdvance = 1), or 32 buffers and one
    // tail update (perAdvance = 32).
    let recycler = Lazy { BufRingRecycler() }
    for perAdvance in [1, 32] {
        Benchmark("bufring_recycle_\(perAdvance)_per_advance") { benchmark in
            let r = recycler.get
            benchmark.startMeasurement()
            r.run(iterations: benchmark.scaledIterations.count, perAdvance: perAdvance)
        } teardown: {
            recycler.reset()
        }
    }
}
