// Batched waiting (wait_batch, io_uring on kernels with IORING_FEAT_MIN_TIMEOUT): a reactor
// that waits for a batch of completions must still answer a lone request promptly (the
// min-wait timer releases a partial batch) and deliver everything. Epoll mode ignores it.

import Foundation
import Testing
import UringServer

@Suite("Integration: batched waiting")
struct IntegrationWaitBatchTests {

    @Test("wait_batch 32: lone pings answered, fan-out complete and in order", arguments: allIOModes)
    func batched(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in
            c.waitBatch = 32
            c.waitBatchMicros = 200
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            let a = try TestClient(port: port)
            let b = try TestClient(port: port)
            try a.hello("wb-a")
            try b.hello("wb-b")
            try a.join("wb")
            try b.join("wb")
            // One request at a time: far fewer completions than the batch size.
            let start = Date()
            for _ in 0..<20 { try a.pingExpectingPongNext() }
            let elapsed = Date().timeIntervalSince(start)
            // 20 round trips; a wait that ignored the min-wait timer would take the 100 ms
            // tick each (2 s). Generous bound for a loaded CI box.
            #expect(elapsed < 1.5, "20 lone pings took \(elapsed) s")
            for i in 0..<300 { try a.send(["type": "send_chat", "room": "wb", "text": "m\(i)"]) }
            for i in 0..<300 {
                let m = try b.read(until: "chat")
                #expect(m["text"] as? String == "m\(i)", "\(m)")
            }
        }
    }

    @Test("wait_batch and wait_batch_us: parsed, bad values refused")
    func config() throws {
        var c = ServerConfig()
        #expect(c.waitBatch == 0 && c.waitBatchMicros == 50)
        try c.set("wait_batch", "16")
        try c.set("wait_batch_us", "20")
        #expect(c.waitBatch == 16 && c.waitBatchMicros == 20)
        #expect(throws: ConfigError.self) { try c.set("wait_batch", "-1") }
        #expect(throws: ConfigError.self) { try c.set("wait_batch_us", "forever") }
    }
}
