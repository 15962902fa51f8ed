// Inputs found by the libFuzzer target (Fuzz/, scripts/fuzz.sh), replayed against
// ProtocolHarness / JSONReader. Each test names the minimized input it came from.

import Glibc
import Primitives
import Testing
import UringServer
import UringServerTesting

@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    /// crash-76356fce… minimized to `75 ff 0a 5d 0a 0a 00 00 00 00` (control 0x75: 2
    /// connections, 16-byte chunks, replace every third segment's connection). The first two
    /// connections send a byte that matches no framing, so the server answers bad_frame and
    /// closes both; their slots are free again. The next connect() then returns the id of a
    /// connection the caller still holds, and MemoryBackend never forgets a closed slot, so
    /// `isClosed` is true for the new, open connection. The fuzzer fed the stale id and got
    /// another connection's output. (Harness bug, not a server bug.)
    @Test func harnessSlotReuseAfterServerClose() {
        let h = ProtocolHarness()
        let a = h.connect()
        h.feed(a, [0xFF, 0x0A])
        let out = h.takeOutput(a)
        #expect(String(decoding: out, as: UTF8.self).contains("\"bad_frame\""))
        #expect(h.isClosed(a))
        #expect(h.openConnections == 0)

        let b = h.connect()
        #expect(h.openConnections == 1)
        // The new connection works…
        h.feed(b, Array("{\"type\":\"hello\",\"user\":\"b\"}\n".utf8))
        #expect(String(decoding: h.takeOutput(b), as: UTF8.self).contains("\"welcome\""))
        // …and although it may reuse the closed connection's id (a slot), it is not closed.
        #expect(!h.isClosed(b))
        h.disconnect(b)
        #expect(h.openConnections == 0)
    }

    /// The same input replayed end to end: every output line is a JSON object with a type, and
    /// no connection is left open.
    @Test func replayMinimizedInput() {
        let h = ProtocolHarness()
        let c0 = h.connect(), c1 = h.connect()
        h.feed(c0, [0xFF, 0x0A])
        h.feed(c1, [0x5D, 0x0A])
        for id in [c0, c1] {
            let lines = String(decoding: h.takeOutput(id), as: UTF8.self).split(separator: "\n")
            #expect(lines.count == 1)
            #expect(lines.allSatisfy { $0.hasPrefix("{\"type\":\"error\",\"code\":\"bad_frame\"") })
        }
        let c2 = h.connect()
        h.feed(c2, [0x0A])
        h.feed(c2, [0x00, 0x00, 0x00, 0x00])     // binary framing, a length-0 frame: bad_frame
        let out = h.takeOutput(c2)
        #expect(out.count > 5)
        let n = Int(out[0]) << 24 | Int(out[1]) << 16 | Int(out[2]) << 8 | Int(out[3])
        #expect(n == out.count - 4 && out[4] == 0)
        #expect(String(decoding: out[5...], as: UTF8.self).contains("\"bad_frame\""))
        h.disconnect(c2)
        #expect(h.openConnections == 0)
    }

    /// Why the fuzzer keeps one harness for the whole run: a ProtocolHarness is never freed
    /// (ServerShared.reactors holds the Reactor, Reactor.shared holds the ServerShared), so each
    /// one leaks its reactor, plugins and the Inbox's eventfd.
    @Test func harnessIsReleased() {
        // Counts eventfds only (each harness's inbox has one): other suites run in parallel in
        // this process and open sockets meanwhile, which made a count of all fds flaky (one CI
        // run saw +410). Their servers hold a few eventfds each; 200 leaked harnesses would
        // hold 200.
        func openFDs() -> Int {
            guard let d = opendir("/proc/self/fd") else { return -1 }
            defer { closedir(d) }
            var n = 0
            var target = [CChar](repeating: 0, count: 256)
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                let len = readlink("/proc/self/fd/" + name, &target, target.count - 1)
                guard len > 0 else { continue }
                let link = target.prefix(len).withUnsafeBufferPointer { p in
                    String(decoding: UnsafeRawBufferPointer(p), as: UTF8.self)
                }
                if link.contains("eventfd") { n += 1 }
            }
            return n
        }
        let before = openFDs()
        for _ in 0..<200 {
            let h = ProtocolHarness()
            let c = h.connect()
            h.feed(c, Array("{\"type\":\"hello\",\"user\":\"x\"}\n".utf8))
            h.disconnect(c)
        }
        let after = openFDs()
        #expect(after - before < 100, "eventfds before \(before), after 200 harnesses \(after)")
    }
}
