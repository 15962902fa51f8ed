// Framing: binary frames, mixed rooms, partial and coalesced writes, the frame size limit, HTTP.

import Foundation
import Testing
import UringServer

@Suite("Integration: framing")
struct IntegrationFramingTests {

    @Test("binary frames: hello/join/send, replies are codec-0 frames", arguments: allIOModes)
    func binaryFlow(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port, framing: .binary)
            let b = try TestClient(port: port, framing: .binary)

            try a.send(["type": "hello", "user": "bin-a", "id": 1])
            let f = try a.readFrame()
            #expect(f.codec == 0, "reply codec")
            let w = try J.parse(f.payload)
            #expect(w.type == "welcome" && w["user"] as? String == "bin-a", "\(w)")
            let ack = try a.read()
            #expect(ack.type == "ack" && ack["id"] as? Int == 1)

            try b.hello("bin-b")
            #expect(try a.join("binroom")["members"] as? Int == 1)
            #expect(try b.join("binroom")["members"] as? Int == 2)
            let uj = try a.read()
            #expect(uj.type == "user_joined" && uj["user"] as? String == "bin-b")

            let text = "binary \"hello\" 😀 \n done"
            try a.send(["type": "send_chat", "room": "binroom", "text": text])
            let chat = try b.read()
            #expect(chat.type == "chat" && chat["from"] as? String == "bin-a" && chat["text"] as? String == text
                    && chat["room"] as? String == "binroom", "\(chat)")
            #expect(isPlausibleTimestamp(chat["ts"]))
            try a.pingExpectingPongNext()
            try b.pingExpectingPongNext()

            // Several frames in one write, and a frame split across writes.
            var many: [UInt8] = []
            for i in 0..<20 {
                many += Frame.encode(codec: 0, payload: Array(J.obj(["type": "ping", "id": i]).utf8))
            }
            try a.send(many)
            for i in 0..<20 {
                #expect(try a.read().type == "pong")
                let k = try a.read()
                #expect(k.type == "ack" && k["id"] as? Int == i, "\(k)")
            }
            let one = Frame.encode(codec: 0, payload: Array(J.obj(["type": "ping", "id": "split"]).utf8))
            for chunk in [one[0..<2], one[2..<5], one[5..<9], one[9...]] {
                try a.send(Array(chunk))
                Thread.sleep(forTimeInterval: 0.01)
            }
            #expect(try a.read().type == "pong")
            #expect(try a.read()["id"] as? String == "split")
        }
    }

    @Test("bad_frame for an unknown codec and a zero length; the connection stays open", arguments: allIOModes)
    func badFrame(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port, framing: .binary)
            try c.hello("bf")
            try c.send(Frame.encode(codec: 7, payload: Array(J.obj(["type": "ping"]).utf8)))
            try expectError(c, "bad_frame", "for codec 7")
            try c.pingExpectingPongNext()
            try c.send(Frame.header(length: 0))
            try expectError(c, "bad_frame", "for a zero-length frame")
            try c.pingExpectingPongNext()
            // Malformed JSON inside a well-formed frame is bad_json.
            try c.send(Frame.encode(codec: 0, payload: Array(#"{"type":"#.utf8)))
            try expectError(c, "bad_json", "inside a binary frame")
            try c.pingExpectingPongNext()
        }
    }

    @Test("mixed room: a JSON-lines member and a binary member get the same chat", arguments: allIOModes)
    func mixedRoom(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.presence = false }) { port in
            let lines = try TestClient(port: port, framing: .jsonLines)
            let bin = try TestClient(port: port, framing: .binary)
            let sender = try TestClient(port: port, framing: .jsonLines)
            try lines.hello("lines")
            try bin.hello("bin")
            try sender.hello("sender")
            try lines.join("mixed")
            try bin.join("mixed")
            try sender.join("mixed")

            let text = "to everyone ✓ \"q\""
            try sender.send(["type": "send_chat", "room": "mixed", "text": text])
            let l = try lines.read()
            let b = try bin.read()   // read() in binary framing requires a codec-0 frame
            for (who, m) in [("lines", l), ("binary", b)] {
                #expect(m.type == "chat" && m["from"] as? String == "sender" && m["text"] as? String == text
                        && m["room"] as? String == "mixed", "\(who) got \(m)")
            }

            // And the other way: the binary member's chat reaches the JSON-lines members as lines.
            try bin.send(["type": "send_chat", "room": "mixed", "text": "from bin"])
            for c in [lines, sender] {
                let m = try c.read()
                #expect(m.type == "chat" && m["from"] as? String == "bin" && m["text"] as? String == "from bin", "\(m)")
            }
            try bin.pingExpectingPongNext()
        }
    }

    @Test("a line written one byte at a time; many lines in one write", arguments: allIOModes)
    func partialAndCoalescedWrites(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            let hello = Array((J.obj(["type": "hello", "user": "tiny 😀"]) + "\n").utf8)
            for (i, byte) in hello.enumerated() {
                try c.send([byte])
                if i % 4 == 0 { Thread.sleep(forTimeInterval: 0.002) }
            }
            let w = try c.read()
            #expect(w.type == "welcome" && w["user"] as? String == "tiny 😀", "\(w)")

            // A multi-byte character split between writes, on an established connection.
            let join = Array((J.obj(["type": "join_room", "room": "ü€"]) + "\n").utf8)
            for byte in join {
                try c.send([byte])
            }
            let j = try c.read()
            #expect(j.type == "joined" && j["room"] as? String == "ü€", "\(j)")

            // 300 lines in one write.
            var batch = ""
            for i in 0..<300 { batch += J.obj(["type": "ping", "id": i]) + "\n" }
            try c.send(batch)
            for i in 0..<300 {
                let p = try c.read()
                let a = try c.read()
                guard p.type == "pong", a.type == "ack", a["id"] as? Int == i else {
                    Issue.record("reply \(i): \(p) / \(a)")
                    return
                }
            }
            // A write ending mid-line, then the rest.
            let two = J.obj(["type": "ping", "id": "a"]) + "\n" + J.obj(["type": "ping", "id": "b"]) + "\n"
            let bytes = Array(two.utf8)
            let cut = bytes.count - 7
            try c.send(Array(bytes[..<cut]))
            #expect(try c.read().type == "pong")
            #expect(try c.read()["id"] as? String == "a")
            Thread.sleep(forTimeInterval: 0.05)
            try c.send(Array(bytes[cut...]))
            #expect(try c.read().type == "pong")
            #expect(try c.read()["id"] as? String == "b")
        }
    }

    @Test("a 60 KB line is accepted; a 70 KB line gets frame_too_large and the connection is closed",
          arguments: allIOModes)
    func frameSizeLimitLines(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.maxFrameBytes = 65536 }) { port in
            let s = try TestClient(port: port)
            let r = try TestClient(port: port)
            try s.hello("big")
            try r.hello("bigr")
            try s.join("big")
            try r.join("big")
            _ = try s.read(until: "user_joined")

            let text60 = String(repeating: "abcdefghij", count: 6000)   // 60,000 bytes of text
            try s.send(["type": "send_chat", "room": "big", "text": text60, "id": "big"])
            let ack = try s.read()
            #expect(ack.type == "ack" && ack["id"] as? String == "big", "60 KB line should be accepted: \(ack)")
            let got = try r.read()
            #expect(got.type == "chat" && (got["text"] as? String) == text60,
                    "60 KB chat text should arrive intact (\((got["text"] as? String)?.utf8.count ?? -1) bytes)")

            let text70 = String(repeating: "abcdefghij", count: 7000)   // 70,000 bytes
            try? s.send(J.obj(["type": "send_chat", "room": "big", "text": text70]) + "\n")
            var msgs: [JSONObject] = []
            #expect(throws: Never.self, "the server should close the connection after frame_too_large") {
                msgs = try s.readUntilClosed()
            }
            #expect(msgs.first?.type == "error" && msgs.first?["code"] as? String == "frame_too_large",
                    "expected frame_too_large before the close, got \(msgs)")
            // Nothing of the oversized line reached the room.
            try r.pingExpectingPongNext(skipPresence: true)
        }
    }

    @Test("binary frame over max_frame_bytes → frame_too_large and close", arguments: allIOModes)
    func frameSizeLimitBinary(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.maxFrameBytes = 65536 }) { port in
            let c = try TestClient(port: port, framing: .binary)
            try c.hello("bigbin")
            let ok = Array(J.obj(["type": "ping", "pad": String(repeating: "p", count: 60000)]).utf8)
            try c.send(Frame.encode(codec: 0, payload: ok))
            #expect(try c.read().type == "pong", "a 60 KB frame is accepted")
            // Header announcing 70,000 bytes, followed by the payload.
            let payload = Array(J.obj(["type": "ping", "pad": String(repeating: "p", count: 70000)]).utf8)
            try? c.send(Frame.encode(codec: 0, payload: payload))
            var msgs: [JSONObject] = []
            #expect(throws: Never.self, "the server should close the connection after frame_too_large") {
                msgs = try c.readUntilClosed()
            }
            #expect(msgs.first?.type == "error" && msgs.first?["code"] as? String == "frame_too_large",
                    "expected frame_too_large before the close, got \(msgs)")
        }
    }

    /// The limit must be enforced while the line/frame is still arriving: the server cannot wait
    /// for a newline (or a payload) that may never come.
    @Test("frame_too_large without waiting for the end of the line / frame", arguments: allIOModes)
    func frameSizeLimitStreaming(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.maxFrameBytes = 65536 }) { port in
            // 70 KB of a line, no newline, then nothing more.
            let l = try TestClient(port: port)
            try l.hello("nonl")
            try? l.send("{\"type\":\"send_chat\",\"room\":\"x\",\"text\":\"" + String(repeating: "z", count: 70000))
            var msgs: [JSONObject] = []
            #expect(throws: Never.self, "an unterminated 70 KB line should be rejected and closed") {
                msgs = try l.readUntilClosed()
            }
            #expect(msgs.first?["code"] as? String == "frame_too_large", "line: got \(msgs)")

            // A frame header announcing 70,000 bytes, and no payload.
            let b = try TestClient(port: port, framing: .binary)
            try b.hello("hdronly")
            try b.send(Frame.header(length: 70000) + [0])
            msgs = []
            #expect(throws: Never.self, "a frame header over the limit should be rejected and closed") {
                msgs = try b.readUntilClosed()
            }
            #expect(msgs.first?["code"] as? String == "frame_too_large", "frame header: got \(msgs)")
        }
    }

    @Test("protocol detection waits for enough first bytes", arguments: allIOModes)
    func detectionWithPartialFirstBytes(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            // HTTP, "G" alone first.
            let h = try TestClient(port: port)
            let req = Array("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
            for chunk in [req[0..<1], req[1..<3], req[3..<6], req[6...]] {
                try h.send(Array(chunk))
                Thread.sleep(forTimeInterval: 0.02)
            }
            let status = try h.readLine()
            #expect(status.hasPrefix("HTTP/1.1 200"), "split GET: \(status)")

            // Binary, the first zero byte alone first.
            let b = try TestClient(port: port, framing: .binary)
            let f = Frame.encode(codec: 0, payload: Array(J.obj(["type": "hello", "user": "slowbin"]).utf8))
            for chunk in [f[0..<1], f[1..<4], f[4..<5], f[5...]] {
                try b.send(Array(chunk))
                Thread.sleep(forTimeInterval: 0.02)
            }
            let w = try b.read()
            #expect(w.type == "welcome" && w["user"] as? String == "slowbin", "\(w)")

            // JSON lines, whitespace alone first.
            let j = try TestClient(port: port)
            try j.send("  ")
            Thread.sleep(forTimeInterval: 0.02)
            try j.send(J.obj(["type": "hello", "user": "slowjson"]) + "\n")
            #expect(try j.read()["user"] as? String == "slowjson")
        }
    }

    @Test("HTTP: GET /health → 200 ok; unknown path → 404", arguments: allIOModes)
    func health(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let h = try httpRequest(port: port, "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            #expect(h.statusLine.hasPrefix("HTTP/1.1 200"), "status line: \(h.statusLine)")
            #expect(h.body == "ok", "body: \(String(reflecting: h.body))")

            let nf = try httpRequest(port: port, "GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            #expect(nf.statusLine.hasPrefix("HTTP/1.1 404"), "status line: \(nf.statusLine)")

            let head = try httpRequest(port: port, "HEAD /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                                       head: true)
            #expect(head.statusLine.hasPrefix("HTTP/1.1 200"), "HEAD status line: \(head.statusLine)")
            #expect(head.body.isEmpty, "HEAD must not carry a body: \(String(reflecting: head.body))")

            // The server still speaks the chat protocol afterwards.
            let c = try TestClient(port: port)
            try c.hello("after-http")
        }
    }
}
