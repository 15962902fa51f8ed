// WebSocket frames over real sockets, both io modes: chat between a WebSocket client and a
// JSON-lines client, fragmentation with control frames in between, frames split across
// writes, ping/pong, the close handshake, and every refusal's close code (1002, 1003, 1007,
// 1009).

import Foundation
import Testing
import UringServer

@Suite("WebSocket: frames")
struct WebSocketFramingTests {

    @Test("a WebSocket and a JSON-lines client chat in one room, both ways", arguments: allIOModes)
    func mixedRoom(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let ws = try WSClient(port: port)
            try ws.hello("ws-a")
            #expect(try ws.join("mixed")["members"] as? Int == 1)
            let tcp = try TestClient(port: port)
            try tcp.hello("tcp-b")
            #expect(try tcp.join("mixed")["members"] as? Int == 2)
            #expect(try ws.read(until: "user_joined")["user"] as? String == "tcp-b")

            try tcp.send(["type": "send_chat", "room": "mixed", "text": "to ws ✓"])
            let m = try ws.read(until: "chat")
            #expect(m["from"] as? String == "tcp-b" && m["text"] as? String == "to ws ✓", "\(m)")
            try ws.send(["type": "send_chat", "room": "mixed", "text": "to tcp 😀"])
            let n = try tcp.read(until: "chat")
            #expect(n["from"] as? String == "ws-a" && n["text"] as? String == "to tcp 😀", "\(n)")

            // A message over shared_block_threshold reaches the WebSocket member by reference
            // to the shared block: the frame still carries exactly the JSON, no line end.
            let big = String(repeating: "b", count: 5000)
            try tcp.send(["type": "send_chat", "room": "mixed", "text": big])
            let f = try ws.readFrame()
            #expect(f.opcode == 1 && f.fin && f.payload.last == UInt8(ascii: "}"), "last byte \(String(describing: f.payload.last))")
            #expect((try J.parse(f.payload))["text"] as? String == big)
            // And a burst to a room of 5 (batched for JSON members, one frame per message here).
            let others = try TestClient.members(3, port: port, user: "burst", room: "mixed")
            for i in 0..<20 { try tcp.send(["type": "send_chat", "room": "mixed", "text": "n\(i)"]) }
            var got: [String] = []
            while got.count < 20 {
                let c = try ws.read()
                if c.type == "chat", let t = c["text"] as? String { got.append(t) }
            }
            #expect(got == (0..<20).map { "n\($0)" })
            _ = others
        }
    }

    @Test("fragmented message with a ping in between; frames split byte by byte", arguments: allIOModes)
    func fragments(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let ws = try WSClient(port: port)
            try ws.hello("frag")
            let msg = Array(J.obj(["type": "ping", "id": 41]).utf8)
            try ws.sendFrame(1, Array(msg[..<5]), fin: false)
            try ws.sendFrame(9, Array("mid".utf8))                    // control frame between fragments
            try ws.sendFrame(0, Array(msg[5..<9]), fin: false)
            try ws.sendFrame(0, Array(msg[9...]), fin: true)
            let pong = try ws.readFrame()
            #expect(pong.opcode == 10 && pong.text == "mid", "the ping is answered before the message completes")
            #expect(try ws.read().type == "pong")
            #expect(try ws.read()["id"] as? Int == 41)
            // One frame written a byte at a time (header and masked payload across receives).
            let bytes = WSClient.encode(1, Array(J.obj(["type": "ping", "id": 42]).utf8))
            for b in bytes {
                try ws.tcp.send([b])
                Thread.sleep(forTimeInterval: 0.001)
            }
            #expect(try ws.read().type == "pong")
            #expect(try ws.read()["id"] as? Int == 42)
            // A 16-bit length frame (JSON of 300 bytes).
            try ws.send(["type": "ping", "id": String(repeating: "x", count: 300)])
            #expect(try ws.read().type == "pong")
        }
    }

    @Test("ping → pong with the same payload; close 1000 is echoed and the server closes TCP", arguments: allIOModes)
    func pingAndClose(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let ws = try WSClient(port: port)
            try ws.sendFrame(9, Array("hi there".utf8))
            let p = try ws.readFrame()
            #expect(p.opcode == 10 && p.text == "hi there")
            try ws.sendFrame(8, [0x03, 0xE8] + Array("bye".utf8))
            let c = try ws.readFrame()
            #expect(c.opcode == 8 && c.closeCode == 1000)
            #expect(ws.waitForEOF())
            // A close without a code is answered with an empty close.
            let ws2 = try WSClient(port: port)
            try ws2.sendFrame(8, [])
            #expect(try ws2.readFrame().payload.isEmpty)
            #expect(ws2.waitForEOF())
        }
    }

    @Test("refusals: unmasked, RSV, fragmented control → 1002; big length → 1009; bad UTF-8 → 1007; binary → 1003",
          arguments: allIOModes)
    func closeCodes(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            func closeCode(_ frame: [UInt8], hello: Bool = true) throws -> Int {
                let ws = try WSClient(port: port)
                if hello { try ws.hello("cc") }
                try ws.tcp.send(frame)
                let c = try ws.readClose()
                #expect(ws.waitForEOF(), "the server closes the TCP connection after its close frame")
                return c.closeCode
            }
            let ping = Array(J.obj(["type": "ping"]).utf8)
            #expect(try closeCode(WSClient.encode(1, ping, masked: false)) == 1002)
            #expect(try closeCode(WSClient.encode(1, ping, rsv: 4)) == 1002)
            #expect(try closeCode(WSClient.encode(9, [1, 2], fin: false)) == 1002)
            #expect(try closeCode(WSClient.encode(9, Array(repeating: 7, count: 126))) == 1002)
            #expect(try closeCode(WSClient.encode(0, ping)) == 1002, "continuation with nothing to continue")
            #expect(try closeCode(WSClient.encode(5, [])) == 1002, "reserved opcode")
            #expect(try closeCode(WSClient.encode(8, [0x03, 0xED])) == 1002, "close code 1005 may not be sent")
            // 1 TiB announced: refused from the header, before any payload (none is sent).
            #expect(try closeCode(WSClient.encode(2, [], forcedLength: 1 << 40)) == 1009)
            #expect(try closeCode(WSClient.encode(1, [], forcedLength: 70_000)) == 1009, "over max_frame_bytes")
            #expect(try closeCode(WSClient.encode(1, [0x7B, 0xC3, 0x28, 0x7D])) == 1007)
            #expect(try closeCode(WSClient.encode(1, [0xED, 0xA0, 0x80])) == 1007, "a UTF-16 surrogate")
            #expect(try closeCode(WSClient.encode(8, [0x03, 0xE8, 0xFF])) == 1007, "close reason not UTF-8")
            #expect(try closeCode(WSClient.encode(2, ping)) == 1003, "binary messages are not the chat protocol")
            // Fragments of an invalid UTF-8 text message.
            let split = WSClient.encode(1, [0x61, 0xF0, 0x9F], fin: false) + WSClient.encode(0, [0x28], fin: true)
            #expect(try closeCode(split) == 1007)
            // No hello in time: the JSON error, then close 1008.
            let late = try withServer(mode, configure: { $0.helloTimeoutMs = 200 }) { port in
                let ws = try WSClient(port: port)
                let e = try ws.read()
                return (e["code"] as? String, try ws.readClose().closeCode)
            }
            #expect(late.0 == "hello_timeout" && late.1 == 1008, "\(late)")
        }
    }

    @Test("ws_echo: text and binary messages come back as sent; no hello needed", arguments: allIOModes)
    func echo(mode: IOModeSetting) throws {
        try withServer(mode, configure: { setConfig(&$0, "ws_echo", "true"); $0.helloTimeoutMs = 100 }) { port in
            let ws = try WSClient(port: port)
            Thread.sleep(forTimeInterval: 0.4)   // past hello_timeout_ms: echo connections are exempt
            try ws.sendFrame(1, Array("not json ✓".utf8))
            let t = try ws.readFrame()
            #expect(t.opcode == 1 && t.text == "not json ✓")
            let blob = (0..<70_000).map { UInt8($0 & 0xFF) }
            try ws.sendFrame(2, Array(blob[..<30_000]), fin: false)
            try ws.sendFrame(0, Array(blob[30_000..<60_000]), fin: true)
            let b = try ws.readFrame()
            #expect(b.opcode == 2 && b.payload == Array(blob[..<60_000]))
        }
    }

    @Test("closes the server starts: an error message first, then its close code (1008 unauthorized, 1001 shutdown)",
          arguments: allIOModes)
    func serverCloses(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.authToken = "s3cret" }) { port in
            let ws = try WSClient(port: port)
            try ws.send(["type": "hello", "user": "intruder", "token": "wrong"])
            let e = try ws.read()
            #expect(e.type == "error" && e["code"] as? String == "unauthorized", "\(e)")
            #expect(try ws.readClose().closeCode == 1008)
            #expect(ws.waitForEOF())
        }
        try withRunningServer(mode, configure: { $0.drainTimeoutMs = 10_000 }) { server in
            let ws = try WSClient(port: server.port)
            try ws.hello("leaving")
            let t = HelperThread { server.drainAndStop() }
            #expect(try ws.read(until: "shutdown").type == "shutdown")
            #expect(try ws.readClose().closeCode == 1001)
            #expect(ws.waitForEOF())
            _ = t.join(timeout: 10)
        }
    }

    @Test("idle: a ping frame after idle_timeout_ms, close 1008 when nothing answers; a pong keeps it open",
          arguments: allIOModes)
    func idlePing(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.idleTimeoutMs = 300 }) { port in
            let quiet = try WSClient(port: port)
            try quiet.hello("quiet")
            let answering = try WSClient(port: port)
            try answering.hello("answering")
            // `read` answers each ping with a pong: this one outlives 2 × idle.
            let alive = Locked(false)
            let t = HelperThread {
                let start = Date()
                while Date().timeIntervalSince(start) < 1.2 { _ = try? answering.read(timeout: 0.1) }
                try? answering.send(["type": "ping"])
                alive.withLock { $0 = (try? answering.read(until: "pong"))?.type == "pong" }
            }
            let p = try quiet.readFrame(timeout: 3)
            #expect(p.opcode == 9, "a ping frame, not a JSON ping")
            let e = try quiet.read(timeout: 3)   // (read() would answer pings: none comes now)
            #expect(e["code"] as? String == "idle_timeout", "\(e)")
            #expect(try quiet.readClose().closeCode == 1008)
            _ = t.join(timeout: 5)
            #expect(alive.value, "the client answering pings was kept")
            // No codec is granted on a WebSocket: it has its own framing.
            let z = try WSClient(port: port)
            try z.send(["type": "hello", "user": "zip", "compress": "lz4"])
            #expect(try z.read(until: "welcome")["compress"] as? String == "none")
        }
    }
}
