// The server's message path with no sockets: one reactor over the in-memory backend
// (`ProtocolHarness`), a room of 50 members, one publisher. Each iteration is one receive
// carrying one `send_chat` line: parse, plugin chain, render once, frame into 50 output
// queues (pooled buffers), one "send" per member at the end of the turn.
//
// The threshold is the point: mallocCountTotal == 0 in steady state (after warm-up the output
// queues hold pooled chunks, the render buffer and the per-turn lists keep their capacity).

import Benchmark
import UringServer

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        warmupIterations: 1_000,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000,
        thresholds: [.mallocCountTotal: .init(absolute: [.p100: 0])]
    )

    for members in [1, 50] {
        Benchmark("send_chat_fanout_\(members)_members") { benchmark in
            var config = ServerConfig()
            config.presence = false
            config.rateLimitPerSec = 0
            let h = ProtocolHarness(config: config)
            h.discardsOutput = true
            var ids: [Int] = []
            for i in 0..<members {
                let id = h.connect()
                h.feed(id, Array("{\"type\":\"hello\",\"user\":\"m\(i)\"}\n{\"type\":\"join\",\"room\":\"bench\"}\n".utf8))
                ids.append(id)
            }
            let line = Array("{\"type\":\"send_chat\",\"room\":\"bench\",\"text\":\"hello everyone, 64 bytes or so of chat text\"}\n".utf8)
            let pub = ids[0]
            benchmark.startMeasurement()
            line.withUnsafeBytes { bytes in
                for _ in benchmark.scaledIterations {
                    h.feed(pub, bytes)
                }
            }
            benchmark.stopMeasurement()
        }
    }
}
