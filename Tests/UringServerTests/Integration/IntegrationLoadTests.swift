// Many connections, abrupt disconnects under load, the connection limit.

import Foundation
import Testing
import UringServer

@Suite("Integration: load and limits")
struct IntegrationLoadTests {

    @Test("1000 clients in one room: one chat reaches all 999 others", arguments: allIOModes)
    func thousandClientRoom(mode: IOModeSetting) throws {
        let n = 1000
        let limit = raiseFileLimit(to: 8192)
        try #require(limit >= 2 * UInt(n) + 200, "RLIMIT_NOFILE too low: \(limit)")
        // presence off: with it on, every join fans out to all earlier members (~500k events).
        try withServer(mode, configure: { $0.presence = false }) { port in
            var clients: [TestClient] = []
            clients.reserveCapacity(n)
            for i in 0..<n {
                let c = try TestClient(port: port)
                // hello and join pipelined in one write
                try c.send(J.obj(["type": "hello", "user": "u\(i)"]) + "\n" + J.obj(["type": "join_room", "room": "big"]) + "\n")
                let w = try c.read()
                let j = try c.read()
                guard w.type == "welcome", j.type == "joined", j["members"] as? Int == i + 1 else {
                    Issue.record("client \(i): \(w) / \(j) (expected members \(i + 1))")
                    return
                }
                clients.append(c)
            }
            try clients[0].send(["type": "send_chat", "room": "big", "text": "hello 999"])
            var missing: [Int] = []
            var wrong: [(Int, String)] = []
            for i in 1..<n {
                do {
                    let m = try clients[i].read()
                    if m.type != "chat" || m["text"] as? String != "hello 999" || m["from"] as? String != "u0" {
                        wrong.append((i, "\(m)"))
                    }
                } catch {
                    missing.append(i)
                    if missing.count > 5 { break }  // don't wait 5 s for each of 999
                }
            }
            #expect(missing.isEmpty, "clients without the chat: \(missing.prefix(10))")
            #expect(wrong.isEmpty, "clients with a wrong message: \(wrong.prefix(5))")
            try clients[0].pingExpectingPongNext()
            try clients[n - 1].pingExpectingPongNext()
        }
    }

    @Test("receivers resetting mid-stream do not disturb the others", arguments: allIOModes)
    func disconnectsMidSend(mode: IOModeSetting) throws {
        let total = 2000
        try withServer(mode) { port in
            let sender = try TestClient(port: port)
            try sender.hello("pusher")
            try sender.join("storm")

            struct Receiver { let client: TestClient; let dropAfter: Int? }   // nil: stays
            var receivers: [Receiver] = []
            let plan: [Int?] = [nil, 1, nil, 50, nil, 400, nil, 1200, nil, 0]
            for (i, d) in plan.enumerated() {
                let c = try TestClient(port: port)
                try c.hello("rcv\(i)")
                try c.join("storm")
                receivers.append(Receiver(client: c, dropAfter: d))
            }
            // One more that never reads and is reset by the test thread half-way.
            let idle = try TestClient(port: port)
            try idle.hello("idle")
            try idle.join("storm")

            let results = Locked<[Int: Result<[String], ClientError>]>([:])
            let threads = receivers.enumerated().map { (i, r) in
                HelperThread {
                    var texts: [String] = []
                    do {
                        if r.dropAfter == 0 {
                            // reset as soon as the first byte is there, without reading it
                            try r.client.waitForData()
                            Thread.sleep(forTimeInterval: 0.01)
                            r.client.closeAbruptly()
                            results.withLock { $0[i] = .success([]) }
                            return
                        }
                        while texts.count < (r.dropAfter ?? total) {
                            let m = try r.client.read()
                            if m.type == "user_joined" || m.type == "user_left" { continue }
                            guard m.type == "chat", m["from"] as? String == "pusher" else {
                                throw ClientError.protocolViolation("unexpected \(m)")
                            }
                            texts.append(m["text"] as? String ?? "<nil>")
                        }
                        if r.dropAfter != nil { r.client.closeAbruptly() }
                        results.withLock { $0[i] = .success(texts) }
                    } catch {
                        let e = error as? ClientError ?? .protocolViolation("\(error)")
                        results.withLock { $0[i] = .failure(e) }
                    }
                }
            }

            var sent = 0
            while sent < total {
                var batch = ""
                for k in sent..<min(total, sent + 20) {
                    batch += J.obj(["type": "send_chat", "room": "storm", "text": "n\(k)"]) + "\n"
                }
                try sender.send(batch)
                sent = min(total, sent + 20)
                if sent == total / 2 { idle.closeAbruptly() }
            }

            for t in threads { #expect(t.join(timeout: 30), "a receiver did not finish") }
            let expected = (0..<total).map { "n\($0)" }
            for (i, r) in receivers.enumerated() {
                switch results.value[i] {
                case .success(let texts)?:
                    let want = Array(expected.prefix(r.dropAfter ?? total))
                    if texts != want {
                        let bad = firstMismatch(texts, want)
                        Issue.record("receiver \(i) (dropAfter \(String(describing: r.dropAfter))): got \(texts.count) messages, first mismatch at \(String(describing: bad))")
                    }
                case .failure(let e)?:
                    Issue.record("receiver \(i) (dropAfter \(String(describing: r.dropAfter))) failed: \(e)")
                case nil:
                    Issue.record("receiver \(i) has no result")
                }
            }
            // The server is healthy: sender and survivors answer pings, newcomers can join.
            try sender.pingExpectingPongNext(skipPresence: true)
            for r in receivers where r.dropAfter == nil {
                try r.client.pingExpectingPongNext(skipPresence: true)
            }
            let late = try TestClient(port: port)
            try late.hello("late")
            let j = try late.join("storm")
            #expect(j["members"] as? Int == 1 + plan.filter { $0 == nil }.count + 1,
                    "members after the resets should count sender + survivors + newcomer: \(j)")
        }
    }

    @Test("server_full past maxConnections; a slot frees up after a close", arguments: allIOModes)
    func serverFull(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.maxConnections = 3 }) { port in
            var held: [TestClient] = []
            for i in 0..<3 {
                let c = try TestClient(port: port)
                try c.hello("h\(i)")
                held.append(c)
            }
            let extra = try TestClient(port: port)
            var msgs: [JSONObject] = []
            #expect(throws: Never.self, "the 4th connection should be closed") {
                msgs = try extra.readUntilClosed()
            }
            #expect(msgs.first?.type == "error" && msgs.first?["code"] as? String == "server_full",
                    "4th connection should get server_full: \(msgs)")
            // The held connections are unaffected.
            for c in held { try c.pingExpectingPongNext() }

            // Close one; a new connection gets in (allow the server a moment to notice).
            held.removeLast().close()
            var admitted = false
            var lastFailure = ""
            let deadline = Date().addingTimeInterval(3)
            while Date() < deadline {
                do {
                    let c = try TestClient(port: port, timeout: 1)
                    let w = try c.hello("newcomer")
                    admitted = w.type == "welcome"
                    if admitted { held.append(c); break }
                } catch {
                    lastFailure = "\(error)"
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
            #expect(admitted, "a slot should free up after a close; last failure: \(lastFailure)")
        }
    }
}
