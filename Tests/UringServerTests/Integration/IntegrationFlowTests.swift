// Protocol v1 flows over JSON lines against a real in-process server, in both io modes.

import Foundation
import Testing
import UringServer

@Suite("Integration: protocol flows")
struct IntegrationFlowTests {

    @Test("hello → join → send → leave", arguments: allIOModes)
    func helloJoinSendLeave(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            let b = try TestClient(port: port)

            let wa = try a.hello("alice")
            #expect(wa["user"] as? String == "alice")
            let session = try #require(wa["session"] as? String)
            #expect(!session.isEmpty)
            let wb = try b.hello("bob")
            #expect(wb["user"] as? String == "bob")
            #expect(wb["session"] as? String != session, "sessions should be distinct")

            try a.send(["type": "join_room", "room": "lobby"])
            let ja = try a.read()
            #expect(ja.type == "joined")
            #expect(ja["room"] as? String == "lobby")
            #expect(ja["members"] as? Int == 1)

            try b.send(["type": "join_room", "room": "lobby"])
            let jb = try b.read()
            #expect(jb.type == "joined")
            #expect(jb["members"] as? Int == 2)

            // Presence (default on): alice learns bob joined.
            let uj = try a.read()
            #expect(uj.type == "user_joined")
            #expect(uj["room"] as? String == "lobby")
            #expect(uj["user"] as? String == "bob")

            // alice → lobby: bob gets it, with keys in the documented order.
            try a.send(["type": "send_chat", "room": "lobby", "text": "hi"])
            let raw = try b.readLineBytes()
            let chat = try J.parse(raw)
            #expect(chat.type == "chat")
            #expect(chat["room"] as? String == "lobby")
            #expect(chat["from"] as? String == "alice")
            #expect(chat["text"] as? String == "hi")
            #expect(isPlausibleTimestamp(chat["ts"]), "ts should be epoch ms: \(chat)")
            let text = String(decoding: raw, as: UTF8.self)
            let positions = ["\"type\"", "\"room\"", "\"from\"", "\"text\"", "\"ts\""].map {
                text.range(of: $0)?.lowerBound
            }
            let found = positions.compactMap { $0 }
            #expect(found.count == 5 && found == found.sorted(),
                    "chat key order should be type, room, from, text, ts: \(text)")

            // No echo by default: the sender's next message is the pong.
            try a.pingExpectingPongNext()

            // bob leaves: left for bob, user_left for alice.
            try b.send(["type": "leave_room", "room": "lobby"])
            let left = try b.read()
            #expect(left.type == "left")
            #expect(left["room"] as? String == "lobby")
            let ul = try a.read()
            #expect(ul.type == "user_left")
            #expect(ul["room"] as? String == "lobby")
            #expect(ul["user"] as? String == "bob")

            // bob is no longer a member: sending is an error, and alice's chats no longer reach him.
            try b.send(["type": "send_chat", "room": "lobby", "text": "still here?"])
            let err = try b.read()
            #expect(err.type == "error")
            #expect(err["code"] as? String == "not_in_room")
            try a.send(["type": "send_chat", "room": "lobby", "text": "anyone?"])
            try a.pingExpectingPongNext()
            try b.pingExpectingPongNext()

            // The connection-level ping works after all that.
            try a.send(["type": "ping"])
            let pong = try a.read()
            #expect(pong.type == "pong")
            #expect(isPlausibleTimestamp(pong["ts"]))
        }
    }

    @Test("a message reaches exactly the room's members", arguments: allIOModes)
    func routingToExactMembers(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.presence = false }) { port in
            let names = ["c1", "c2", "c3", "c4", "c5", "c6"]
            var c: [String: TestClient] = [:]
            for n in names {
                let cl = try TestClient(port: port)
                try cl.hello(n)
                c[n] = cl
            }
            // r1 = {c1, c2, c3}; r2 = {c3, c4}; r3 = {c5}; c6 in no room.
            #expect(try c["c1"]!.join("r1")["members"] as? Int == 1)
            #expect(try c["c2"]!.join("r1")["members"] as? Int == 2)
            #expect(try c["c3"]!.join("r1")["members"] as? Int == 3)
            #expect(try c["c3"]!.join("r2")["members"] as? Int == 1)
            #expect(try c["c4"]!.join("r2")["members"] as? Int == 2)
            #expect(try c["c5"]!.join("r3")["members"] as? Int == 1)

            try c["c1"]!.send(["type": "send_chat", "room": "r1", "text": "to r1"])
            for n in ["c2", "c3"] {
                let m = try c[n]!.read()
                #expect(m.type == "chat" && m["room"] as? String == "r1" && m["text"] as? String == "to r1"
                        && m["from"] as? String == "c1", "\(n) got \(m)")
            }
            for n in ["c1", "c4", "c5", "c6"] {
                #expect(throws: Never.self, "\(n) must get nothing from r1") { try c[n]!.pingExpectingPongNext() }
            }

            try c["c3"]!.send(["type": "send_chat", "room": "r2", "text": "to r2"])
            let m4 = try c["c4"]!.read()
            #expect(m4.type == "chat" && m4["room"] as? String == "r2" && m4["text"] as? String == "to r2"
                    && m4["from"] as? String == "c3", "c4 got \(m4)")
            for n in ["c1", "c2", "c3", "c5", "c6"] {
                #expect(throws: Never.self, "\(n) must get nothing from r2") { try c[n]!.pingExpectingPongNext() }
            }

            // Sole member of r3: nobody else gets anything.
            try c["c5"]!.send(["type": "send_chat", "room": "r3", "text": "alone"])
            for n in names {
                #expect(throws: Never.self, "\(n) must get nothing from r3") { try c[n]!.pingExpectingPongNext() }
            }
        }
    }

    @Test("one sender's 500 messages arrive in order at every receiver", arguments: allIOModes)
    func orderingPreserved(mode: IOModeSetting) throws {
        let count = 500
        try withServer(mode, configure: { $0.presence = false }) { port in
            let sender = try TestClient(port: port)
            try sender.hello("sender")
            try sender.join("ord")
            let receivers = try TestClient.members(4, port: port, user: "r", room: "ord")
            let results = Locked<[Int: Result<[String], ClientError>]>([:])
            let threads = receivers.enumerated().map { (i, r) in
                HelperThread {
                    var texts: [String] = []
                    do {
                        while texts.count < count {
                            let m = try r.read()
                            guard m.type == "chat" else { throw ClientError.protocolViolation("unexpected \(m)") }
                            guard m["from"] as? String == "sender", m["room"] as? String == "ord" else {
                                throw ClientError.protocolViolation("wrong chat \(m)")
                            }
                            texts.append(m["text"] as? String ?? "<nil>")
                        }
                        results.withLock { $0[i] = .success(texts) }
                    } catch {
                        let e = error as? ClientError ?? .protocolViolation("\(error)")
                        results.withLock { $0[i] = .failure(e) }
                    }
                }
            }
            // Mix single-message writes and batched writes.
            var i = 0
            while i < count {
                if i % 100 < 50 {
                    try sender.send(message: J.obj(["type": "send_chat", "room": "ord", "text": "m\(i)"]))
                    i += 1
                } else {
                    var batch = ""
                    for j in i..<min(count, i + 25) {
                        batch += J.obj(["type": "send_chat", "room": "ord", "text": "m\(j)"]) + "\n"
                    }
                    try sender.send(batch)
                    i = min(count, i + 25)
                }
            }
            for t in threads { #expect(t.join(timeout: 20), "a receiver did not finish") }
            let expected = (0..<count).map { "m\($0)" }
            for idx in 0..<receivers.count {
                switch results.value[idx] {
                case .success(let texts)?:
                    let firstBad = firstMismatch(texts, expected)
                    #expect(texts == expected, "receiver \(idx): \(texts.count) messages, first mismatch at \(firstBad.map(String.init) ?? "-"): \(firstBad.map { texts.indices.contains($0) ? texts[$0] : "<end>" } ?? "-")")
                case .failure(let e)?:
                    Issue.record("receiver \(idx) failed: \(e)")
                case nil:
                    Issue.record("receiver \(idx) has no result")
                }
            }
            try sender.pingExpectingPongNext()
        }
    }

    @Test("ack with a numeric and a string id, after the reply", arguments: allIOModes)
    func acks(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)

            try a.send(["type": "hello", "user": "ack", "id": 42])
            let w = try a.read()
            #expect(w.type == "welcome")
            let ack1 = try a.read()
            #expect(ack1.type == "ack")
            #expect(ack1["id"] as? Int == 42, "numeric id must come back as the same number: \(ack1)")
            #expect(!(ack1["id"] is String), "numeric id must not be stringified")

            try a.send(["type": "join_room", "room": "acks", "id": "join-1"])
            let j = try a.read()
            #expect(j.type == "joined")
            let ack2 = try a.read()
            #expect(ack2.type == "ack")
            #expect(ack2["id"] as? String == "join-1", "\(ack2)")

            try a.send(["type": "ping", "id": "p\"q\\z"])
            #expect(try a.read().type == "pong")
            let ack3 = try a.read()
            #expect(ack3["id"] as? String == "p\"q\\z", "string id with escapes must round-trip: \(ack3)")

            try a.send(["type": "ping", "id": J.Raw("-12.5e1")])
            #expect(try a.read().type == "pong")
            let ack4 = try a.read()
            #expect((ack4["id"] as? NSNumber)?.doubleValue == -125, "non-integer numeric id: \(ack4)")

            // send_chat without echo has no reply: the ack is the next message.
            try a.send(["type": "send_chat", "room": "acks", "text": "x", "id": 7])
            let ack5 = try a.read()
            #expect(ack5.type == "ack" && ack5["id"] as? Int == 7, "\(ack5)")

            try a.send(["type": "leave_room", "room": "acks", "id": 9])
            #expect(try a.read().type == "left")
            let ack6 = try a.read()
            #expect(ack6.type == "ack" && ack6["id"] as? Int == 9, "\(ack6)")

            // No id, no ack.
            try a.pingExpectingPongNext()
            try a.pingExpectingPongNext()
        }
    }

    /// "optional id on any message → ack after handling it, i.e. after the reply/error of that
    /// message": an error reply is followed by the ack too. Each case sends a plain ping right
    /// after, so a missing ack shows up at once as the pong arriving first.
    @Test("ack with id also follows an error reply", arguments: allIOModes)
    func ackAfterError(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            func check(_ msg: String, code: String, id: Any, _ what: String) throws {
                try a.send(message: msg)
                try a.send(["type": "ping"])
                let e = try a.read()
                #expect(e.type == "error" && e["code"] as? String == code, "\(what): expected error \(code), got \(e)")
                let k = try a.read()
                #expect(k.type == "ack" && "\(k["id"] ?? "nil")" == "\(id)",
                        "\(what): expected {\"type\":\"ack\",\"id\":\(id)} after the error, got \(k) (error was \(e))")
                if k.type == "ack" { _ = try a.read(until: "pong") }
            }
            // Before hello: hello_required, then the ack (the pong is hello_required too).
            try a.send(["type": "join_room", "room": "r", "id": 1])
            let e0 = try a.read()
            #expect(e0["code"] as? String == "hello_required", "\(e0)")
            try a.send(["type": "hello", "user": "ackerr"])
            let next = try a.read()
            #expect(next.type == "ack" && next["id"] as? Int == 1,
                    "hello_required error should be followed by ack id 1, got \(next) (error was \(e0))")
            if next.type == "ack" { _ = try a.read(until: "welcome") }

            try check(J.obj(["type": "no_such_type", "id": 8]), code: "unsupported_type", id: 8, "unsupported_type")
            try check(J.obj(["type": "send_chat", "room": "elsewhere", "text": "x", "id": "nir"]),
                      code: "not_in_room", id: "nir", "not_in_room")
            try check(J.obj(["type": "join_room", "id": 10]), code: "missing_field", id: 10, "missing_field")
        }
    }

    @Test("echo:true delivers the sender's own chat", arguments: allIOModes)
    func echo(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let e = try TestClient(port: port)
            try e.hello("echoer", echo: true)
            try e.join("echo")
            let other = try TestClient(port: port)
            try other.hello("other")
            try other.join("echo")
            _ = try e.read(until: "user_joined")

            try e.send(["type": "send_chat", "room": "echo", "text": "me too", "id": 1])
            let own = try e.read()
            #expect(own.type == "chat" && own["from"] as? String == "echoer" && own["text"] as? String == "me too",
                    "echo sender should get its own chat first: \(own)")
            let ack = try e.read()
            #expect(ack.type == "ack" && ack["id"] as? Int == 1, "ack after the echoed chat: \(ack)")
            let o = try other.read()
            #expect(o.type == "chat" && o["text"] as? String == "me too")

            // The non-echo member does not get its own message back.
            try other.send(["type": "send_chat", "room": "echo", "text": "back"])
            let got = try e.read()
            #expect(got.type == "chat" && got["from"] as? String == "other")
            try other.pingExpectingPongNext()

            // echo:false is the same as absent.
            let n = try TestClient(port: port)
            try n.hello("noecho", echo: false)
            try n.join("echo")
            try n.send(["type": "send_chat", "room": "echo", "text": "quiet"])
            try n.pingExpectingPongNext()
        }
    }

    @Test("presence: user_joined / user_left on join, leave and disconnect", arguments: allIOModes)
    func presence(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            try a.hello("pa")
            try a.join("pres")
            try a.join("other-room")

            let b = try TestClient(port: port)
            try b.hello("pb")
            try b.join("pres")
            let j = try a.read()
            #expect(j.type == "user_joined" && j["room"] as? String == "pres" && j["user"] as? String == "pb", "\(j)")
            // The joiner itself gets no user_joined about itself.
            try b.pingExpectingPongNext()

            try b.send(["type": "leave_room", "room": "pres"])
            #expect(try b.read().type == "left")
            let l = try a.read()
            #expect(l.type == "user_left" && l["room"] as? String == "pres" && l["user"] as? String == "pb", "\(l)")
            try b.pingExpectingPongNext()

            // Disconnect without leaving: remaining members get user_left.
            let c = try TestClient(port: port)
            try c.hello("pc")
            try c.join("pres")
            let jc = try a.read()
            #expect(jc.type == "user_joined" && jc["user"] as? String == "pc", "\(jc)")
            c.close()
            let lc = try a.read()
            #expect(lc.type == "user_left" && lc["room"] as? String == "pres" && lc["user"] as? String == "pc", "\(lc)")

            // Abrupt disconnect (RST) too.
            let d = try TestClient(port: port)
            try d.hello("pd")
            try d.join("pres")
            #expect(try a.read()["user"] as? String == "pd")
            d.closeAbruptly()
            let ld = try a.read()
            #expect(ld.type == "user_left" && ld["user"] as? String == "pd", "\(ld)")

            // b, no longer in "pres", heard nothing about c and d.
            try b.pingExpectingPongNext()
            try a.pingExpectingPongNext()
        }
    }

    @Test("presence = false: no user_joined / user_left", arguments: allIOModes)
    func presenceDisabled(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.presence = false }) { port in
            let a = try TestClient(port: port)
            try a.hello("qa")
            try a.join("quiet")
            let b = try TestClient(port: port)
            try b.hello("qb")
            try b.join("quiet")
            try b.send(["type": "leave_room", "room": "quiet"])
            #expect(try b.read().type == "left")
            let c = try TestClient(port: port)
            try c.hello("qc")
            try c.join("quiet")
            c.close()
            // give the disconnect a moment to be processed
            Thread.sleep(forTimeInterval: 0.1)
            try a.pingExpectingPongNext()
        }
    }

    @Test("strings are escaped correctly both ways", arguments: allIOModes)
    func stringEscaping(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let userName = "al\"i\\ce ü 😀"
            let room = "r/\"oom\" ∑"
            let s = try TestClient(port: port)
            let w = try s.hello(userName)
            #expect(w["user"] as? String == userName, "welcome.user: \(w)")
            #expect(try s.join(room)["room"] as? String == room)
            let r = try TestClient(port: port)
            try r.hello("reader")
            try r.join(room)

            // Hand-written escapes: \u escapes, a surrogate pair, \/, \b \f \r \t \n.
            let escapedLiteral = #"q\"uote \\back\\slash \/ \b\f\n\r\t \u0001\u001f \u00e9 \u4e2d \ud83d\ude00 end"#
            let expectedText = "q\"uote \\back\\slash / \u{8}\u{c}\n\r\t \u{1}\u{1f} é 中 😀 end"
            try s.send(message: #"{"type":"send_chat","room":"# + J.quote(room) + #","text":""# + escapedLiteral + #""}"#)
            let raw1 = try r.readLineBytes()
            #expect(!raw1.contains { $0 < 0x20 }, "raw control characters in server output: \(raw1.filter { $0 < 0x20 })")
            let m1 = try J.parse(raw1)
            #expect(m1["text"] as? String == expectedText, "got \(String(reflecting: m1["text"] as? String))")
            #expect(m1["from"] as? String == userName)
            #expect(m1["room"] as? String == room)

            // Raw multi-byte UTF-8 and every control character, escaped by our encoder.
            var tricky = "multi-byte: ñ ß 日本語 𝄞 👩‍👩‍👧 \u{7f} ctl:"
            for c in 0..<0x20 { tricky.unicodeScalars.append(Unicode.Scalar(UInt8(c))) }
            tricky += " \"\\ done"
            try s.send(["type": "send_chat", "room": room, "text": tricky])
            let raw2 = try r.readLineBytes()
            #expect(!raw2.contains { $0 < 0x20 }, "raw control characters in server output")
            let m2 = try J.parse(raw2)
            #expect(m2["text"] as? String == tricky, "got \(String(reflecting: m2["text"] as? String))")
        }
    }

    @Test("server messages keep the documented key order", arguments: allIOModes)
    func keyOrder(mode: IOModeSetting) throws {
        /// Checks that `keys` appear in this order as top-level keys of the raw message (the
        /// values used here never contain a quoted key name).
        func check(_ raw: [UInt8], _ keys: [String], sourceLocation: SourceLocation = #_sourceLocation) {
            let text = String(decoding: raw, as: UTF8.self)
            let pos = keys.map { text.range(of: "\"\($0)\":")?.lowerBound }
            let found = pos.compactMap { $0 }
            #expect(found.count == keys.count && found == found.sorted() && text.hasPrefix("{\"type\":"),
                    "expected keys in order \(keys): \(text)", sourceLocation: sourceLocation)
        }
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            let b = try TestClient(port: port)
            try a.send(["type": "ping"])
            check(try a.readLineBytes(), ["type", "code", "message"])           // hello_required
            try a.send(["type": "hello", "user": "ka"])
            check(try a.readLineBytes(), ["type", "user", "session"])
            try b.hello("kb")
            try a.send(["type": "join_room", "room": "k"])
            check(try a.readLineBytes(), ["type", "room", "members"])
            try b.join("k")
            check(try a.readLineBytes(), ["type", "room", "user"])              // user_joined
            try b.send(["type": "send_chat", "room": "k", "text": "t"])
            check(try a.readLineBytes(), ["type", "room", "from", "text", "ts"])
            try b.send(["type": "leave_room", "room": "k", "id": 3])
            check(try b.readLineBytes(), ["type", "room"])                      // left
            check(try b.readLineBytes(), ["type", "id"])                        // ack
            check(try a.readLineBytes(), ["type", "room", "user"])              // user_left
            try a.send(["type": "ping"])
            check(try a.readLineBytes(), ["type", "ts"])
        }
    }

    @Test("stop() closes client connections and the listener", arguments: allIOModes)
    func stopClosesEverything(mode: IOModeSetting) throws {
        // An address of its own (other tests listen on 127.0.0.1), so once this server is
        // gone no other test's server can be answering on host:port.
        let host = mode == .uring ? "127.0.0.77" : "127.0.0.78"
        var c = ServerConfig()
        c.host = host
        c.port = 0
        c.io = mode
        c.threads = 2
        let server = Server(config: c)
        try server.start()
        let port = server.port
        let a = try TestClient(port: port, host: host)
        try a.hello("bye")
        try a.join("gone")
        let idle = try TestClient(port: port, host: host)   // no bytes sent yet
        stopWithWatchdog(server)
        #expect(throws: Never.self, "an authenticated client should see EOF after stop()") {
            try a.readUntilClosed(timeout: 3)
        }
        #expect(throws: Never.self, "a silent client should see EOF after stop()") {
            try idle.readUntilClosed(timeout: 3)
        }
        #expect(throws: ClientError.self, "nothing should listen on the port after stop()") {
            _ = try TestClient(port: port, host: host)
        }
    }

    @Test("whitespace before the first { still selects JSON lines", arguments: allIOModes)
    func leadingWhitespace(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            try a.send("  \t" + J.obj(["type": "hello", "user": "ws"]) + "\n")
            let w = try a.read()
            #expect(w.type == "welcome" && w["user"] as? String == "ws", "\(w)")
            try a.pingExpectingPongNext()
        }
    }
}
