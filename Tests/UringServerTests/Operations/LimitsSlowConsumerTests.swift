// Slow consumers: a room member that never reads is cut (hard cap at once, soft cap after
// outbound_soft_seconds) while a well-behaved member keeps receiving everything in order.
// Real in-process server, real sockets, both io modes.

import Foundation
import Testing
import UringServer

/// One flood: `good` reads (on a helper thread), `slow` never reads, `sender` sends `n` chats of
/// ~30 KB, paced so that `good` is never more than `window` messages behind (the flood is
/// meant to overrun only the member that does not read).
private struct SlowConsumerRig {
    let port: Int
    let good: TestClient
    let slow: QuietClient
    let sender: TestClient

    init(port: Int) throws {
        self.port = port
        good = try TestClient(port: port, timeout: 10)
        try good.hello("good")
        try good.join("slow-room")
        slow = try QuietClient(port: port)
        try slow.send("{\"type\":\"hello\",\"user\":\"slow\"}\n{\"type\":\"join_room\",\"room\":\"slow-room\"}\n")
        let uj = try good.read(until: "user_joined")
        #expect(uj["user"] as? String == "slow")
        sender = try TestClient(port: port)
        try sender.hello("sender")
        try sender.join("slow-room")
        _ = try good.read(until: "user_joined")
    }

    static func text(_ i: Int) -> String { "\(i):" + String(repeating: "z", count: 30_000) }

    /// Returns the indexes `good` received, in order, and any reader failure.
    func flood(_ n: Int, window: Int = 4) throws -> (received: [Int], failure: String?) {
        let got = Locked<[Int]>([])
        let failure = Locked<String?>(nil)
        let good = self.good
        let reader = HelperThread {
            do {
                while got.value.count < n {
                    let m = try good.read(timeout: 10)
                    switch m.type {
                    case "chat":
                        let t = m["text"] as? String ?? ""
                        guard let colon = t.firstIndex(of: ":"), let i = Int(t[..<colon]), t == Self.text(i),
                              m["from"] as? String == "sender" else {
                            failure.withLock { $0 = "mangled chat: \(t.prefix(40))… (\(t.count) chars)" }
                            return
                        }
                        got.withLock { $0.append(i) }
                    case "user_left", "user_joined":
                        continue
                    default:
                        failure.withLock { $0 = "unexpected message \(m)" }
                        return
                    }
                }
            } catch {
                failure.withLock { $0 = "after \(got.value.count) chats: \(error)" }
            }
        }
        for i in 0..<n {
            let ok = pollUntil(10) { got.value.count >= i - window || failure.value != nil }
            if !ok || failure.value != nil { break }
            try sender.send(["type": "send_chat", "room": "slow-room", "text": Self.text(i)])
        }
        #expect(reader.join(timeout: 15), "the good reader never finished")
        return (got.value, failure.value)
    }
}

@Suite("Limits: slow consumers")
struct LimitsSlowConsumerTests {

    @Test("outbound_hard_bytes=1 MiB: the member that never reads is cut; the reader gets every message in order",
          arguments: allIOModes)
    func hardCap(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.outboundHardBytes = 1 << 20
            c.outboundSoftBytes = 2 << 20      // soft bigger: the hard cap alone decides
            c.outboundSoftSeconds = 60
        }) { server in
            let rig = try SlowConsumerRig(port: server.port)
            let n = 200                        // ~6 MB: more than the kernel buffers on both sides
            let (received, failure) = try rig.flood(n)
            #expect(failure == nil, "\(failure ?? "")")
            #expect(received == Array(0..<n), "the reading member gets all \(n) chats in order; got \(received.count), first gap at \(firstMismatch(received.map(String.init), (0..<n).map(String.init)) ?? -1)")

            let (s, cut) = statsEventually(server.port) { statsLimit($0, "slow_consumer") >= 1 }
            #expect(cut, "limits.slow_consumer: \(s["limits"] ?? "")")
            #expect(statsLimit(s, "slow_consumer") == 1, "only the member that does not read is cut: \(s["limits"] ?? "")")

            // Cut means closed: the server lets go of the connection even though the client
            // still does not read (good + sender remain).
            let released = pollUntil(3) { server.connectionCount == 2 }
            #expect(released, "the cut connection is still open on the server \(3) s later: connectionCount=\(server.connectionCount)")

            // From the client's side the connection ends, whatever was in flight.
            let tail = try rig.slow.drainToEOF(timeout: 10)
            #expect(tail.bytes >= 0)
            // The reader is still served.
            try rig.good.pingExpectingPongNext(skipPresence: true)
        }
    }

    @Test("outbound_soft_bytes=256 KiB for 1 s: a member that stays over it is cut after ~1 s", arguments: allIOModes)
    func softCap(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            c.outboundSoftBytes = 256 << 10
            c.outboundSoftSeconds = 1
        }) { server in
            let rig = try SlowConsumerRig(port: server.port)
            let n = 150
            let floodStart = Date()
            let (received, failure) = try rig.flood(n)
            let floodEnd = Date()
            #expect(failure == nil, "\(failure ?? "")")
            #expect(received == Array(0..<n), "got \(received.count) of \(n)")

            let (s, cut) = statsEventually(server.port, timeout: 4) { statsLimit($0, "slow_consumer") >= 1 }
            let cutSeen = Date()
            #expect(cut, "limits.slow_consumer: \(s["limits"] ?? "")")
            #expect(statsLimit(s, "slow_consumer") == 1, "\(s["limits"] ?? "")")
            #expect(cutSeen.timeIntervalSince(floodStart) >= 0.95,
                    "cut seen \(cutSeen.timeIntervalSince(floodStart)) s after the flood began: the soft cap allows 1 s")
            #expect(cutSeen.timeIntervalSince(floodEnd) < 3.5, "cut seen \(cutSeen.timeIntervalSince(floodEnd)) s after the flood")

            let released = pollUntil(3) { server.connectionCount == 2 }
            #expect(released, "the cut connection is still open on the server: connectionCount=\(server.connectionCount)")
            _ = try rig.slow.drainToEOF(timeout: 10)
            try rig.good.pingExpectingPongNext(skipPresence: true)
        }
    }
}
