import Foundation
import Primitives
import Testing
import UringServer

/// Per-connection LZ4/Zstd over binary frames, against a real server in both io modes.
@Suite("Compression over binary frames")
struct CompressionIntegrationTests {
    /// Reads one frame and returns its JSON, decompressing codec 1/2 with our own context.
    static func readDecoded(_ c: TestClient, codecSeen: inout [UInt8]) throws -> JSONObject {
        let f = try c.readFrame()
        codecSeen.append(f.codec)
        if f.codec == 0 { return try J.parse(f.payload) }
        let ctx = CompressionContext()
        var out = ByteBuffer()
        var failure: CompressionError?
        f.payload.withUnsafeBytes { p in
            do throws(CompressionError) {
                try ctx.decompress(CompressionCodec(rawValue: f.codec)!, p, maxOutput: 1 << 20, into: &out)
            } catch { failure = error }
        }
        if let failure { throw ClientError.protocolViolation("server sent a bad compressed frame: \(failure)") }
        return try J.parse(Array(out.readable))
    }

    static func compressed(_ codec: CompressionCodec, _ json: String) -> [UInt8] {
        let ctx = CompressionContext()
        var out = ByteBuffer()
        Array(json.utf8).withUnsafeBytes { ctx.compress(codec, $0, into: &out) }
        return Frame.encode(codec: codec.rawValue, payload: Array(out.readable))
    }

    /// A JSON-lines client that asks for `codec`: the welcome comes as a line, then frames.
    static func compressedClient(_ port: Int, _ user: String, _ codec: String) throws -> TestClient {
        let c = try TestClient(port: port)
        try c.send(J.obj(["type": "hello", "user": user, "compress": codec]) + "\n")
        let w = try c.read()
        #expect(w.type == "welcome" && w["compress"] as? String == codec, "\(w)")
        c.framing = .binary
        return c
    }

    @Test("each codec round-trips a large chat; small ones stay raw", arguments: allIOModes, ["lz4", "zstd"])
    func roundTrip(mode: IOModeSetting, codec: String) throws {
        try withServer(mode, configure: { $0.compressionThreshold = 512; $0.presence = false }) { port in
            let r = try Self.compressedClient(port, "reader", codec)
            try r.send(J.obj(["type": "join_room", "room": "z"]) + "\n")
            var seen: [UInt8] = []
            #expect(try Self.readDecoded(r, codecSeen: &seen).type == "joined")
            let s = try TestClient(port: port)
            _ = try s.hello("sender")
            _ = try s.join("z")
            let big = String(repeating: "compress me please, ", count: 200)   // 4000 bytes
            let edgeBelow = String(repeating: "a", count: 400)  // message < 512 bytes → raw
            for text in [big, "short", edgeBelow] {
                try s.send(["type": "send_chat", "room": "z", "text": text])
            }
            seen.removeAll()
            for text in [big, "short", edgeBelow] {
                let m = try Self.readDecoded(r, codecSeen: &seen)
                #expect(m.type == "chat" && m["text"] as? String == text)
            }
            let expected = UInt8(codec == "lz4" ? 1 : 2)
            #expect(seen == [expected, 0, 0], "codec bytes of the three deliveries")
        }
    }

    /// Text that compresses only about 1.5–2×, so a 6 KB message stays over 1 KiB compressed.
    static func wordy(_ seed: Int, _ count: Int) -> String {
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
                     "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
        var rng = UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 | 1
        var out = ""
        while out.utf8.count < count {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
            out += words[Int(rng % UInt64(words.count))] + String(rng % 997) + " "
        }
        return out
    }

    @Test("compressed payloads over shared_block_threshold are shared: several readers, both codecs, in order",
          arguments: allIOModes)
    func sharedCompressedBlocks(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in
            c.presence = false
            c.rateLimitPerSec = 0
            c.sharedBlockThreshold = 1024
        }) { port in
            var readers: [(TestClient, UInt8)] = []
            for (i, codec) in ["lz4", "zstd", "lz4", "zstd"].enumerated() {
                let r = try Self.compressedClient(port, "sb\(i)", codec)
                try r.send(J.obj(["type": "join_room", "room": "sb"]) + "\n")
                var seen: [UInt8] = []
                #expect(try Self.readDecoded(r, codecSeen: &seen).type == "joined")
                readers.append((r, codec == "lz4" ? 1 : 2))
            }
            let s = try TestClient(port: port)
            _ = try s.hello("sb-sender")
            _ = try s.join("sb")
            // Big ones (compressed well over 1 KiB) between small ones (sent raw).
            let texts = (0..<12).map { i in i % 3 == 2 ? "small \(i)" : Self.wordy(i, 6000) }
            for t in texts { try s.send(["type": "send_chat", "room": "sb", "text": t]) }
            for (r, codec) in readers {
                var seen: [UInt8] = []
                for (i, t) in texts.enumerated() {
                    let m = try Self.readDecoded(r, codecSeen: &seen)
                    #expect(m.type == "chat" && m["text"] as? String == t, "delivery \(i)")
                }
                #expect(seen == texts.map { $0.hasPrefix("small") ? 0 : codec }, "codec bytes: \(seen)")
            }
        }
    }

    @Test("threshold edge: a frame of exactly the threshold is compressed, one byte less is not", arguments: allIOModes)
    func thresholdEdge(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.presence = false }) { port in
            let r = try Self.compressedClient(port, "edge", "lz4")
            try r.send(J.obj(["type": "join_room", "room": "e"]) + "\n")
            var seen: [UInt8] = []
            _ = try Self.readDecoded(r, codecSeen: &seen)
            let s = try TestClient(port: port)
            _ = try s.hello("s")
            _ = try s.join("e")
            // The chat envelope around the text (offsets 1 and 2: one digit each); find the
            // text length that makes the body 512.
            let envelope = #"{"type":"chat","room":"e","from":"s","text":"","ts":1795573783532,"offset":1}"#.utf8.count
            let atThreshold = String(repeating: "b", count: 512 - envelope)
            let below = String(repeating: "b", count: 511 - envelope)
            try s.send(["type": "send_chat", "room": "e", "text": atThreshold])
            try s.send(["type": "send_chat", "room": "e", "text": below])
            seen.removeAll()
            #expect(try Self.readDecoded(r, codecSeen: &seen)["text"] as? String == atThreshold)
            #expect(try Self.readDecoded(r, codecSeen: &seen)["text"] as? String == below)
            #expect(seen == [1, 0])
        }
    }

    @Test("mixed codecs in one room: lz4, zstd, raw binary and JSON lines all get the message", arguments: allIOModes)
    func mixedRoom(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.presence = false }) { port in
            let l = try Self.compressedClient(port, "l", "lz4")
            let z = try Self.compressedClient(port, "z", "zstd")
            let b = try TestClient(port: port, framing: .binary)
            try b.send(Frame.encode(codec: 0, payload: Array(J.obj(["type": "hello", "user": "b"]).utf8)))
            #expect(try b.read().type == "welcome")
            let j = try TestClient(port: port)
            _ = try j.hello("j")
            var seen: [UInt8] = []
            for c in [l, z] {
                try c.send(J.obj(["type": "join_room", "room": "mix"]) + "\n")
                _ = try Self.readDecoded(c, codecSeen: &seen)
            }
            try b.send(Frame.encode(codec: 0, payload: Array(J.obj(["type": "join_room", "room": "mix"]).utf8)))
            _ = try b.read()
            _ = try j.join("mix")
            let text = String(repeating: "everyone gets this; ", count: 100)
            try j.send(["type": "send_chat", "room": "mix", "text": text, "id": 1])
            #expect(try j.read().type == "ack")
            seen.removeAll()
            #expect(try Self.readDecoded(l, codecSeen: &seen)["text"] as? String == text)
            #expect(try Self.readDecoded(z, codecSeen: &seen)["text"] as? String == text)
            #expect(seen == [1, 2])
            #expect(try b.read()["text"] as? String == text)
        }
    }

    @Test("clients may send compressed frames; corrupt ones get bad_frame and the connection stays", arguments: allIOModes)
    func clientCompressedAndCorrupt(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port, framing: .binary)
            try c.send(Self.compressed(.zstd, J.obj(["type": "hello", "user": "zc"])))
            #expect(try c.read().type == "welcome")
            try c.send(Self.compressed(.lz4, J.obj(["type": "ping"])))
            #expect(try c.read().type == "pong")
            // Corrupt lz4: header claims 100 bytes, block is garbage.
            try c.send(Frame.encode(codec: 1, payload: [0, 0, 0, 100, 0xff, 0xff, 0xff, 0xff, 0x00]))
            let e1 = try c.read()
            #expect(e1.type == "error" && e1["code"] as? String == "bad_frame", "\(e1)")
            // Corrupt zstd: not a frame at all.
            try c.send(Frame.encode(codec: 2, payload: Array("definitely not zstd".utf8)))
            let e2 = try c.read()
            #expect(e2.type == "error" && e2["code"] as? String == "bad_frame", "\(e2)")
            try c.send(Frame.encode(codec: 0, payload: Array(J.obj(["type": "ping"]).utf8)))
            #expect(try c.read().type == "pong", "connection still usable after corrupt frames")
        }
    }

    @Test("a zip bomb gets frame_too_large and the connection is closed", arguments: allIOModes, ["lz4", "zstd"])
    func zipBomb(mode: IOModeSetting, codec: String) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port, framing: .binary)
            try c.send(Frame.encode(codec: 0, payload: Array(J.obj(["type": "hello", "user": "bomb"]).utf8)))
            _ = try c.read()
            // 1 MiB of spaces inside a JSON string compresses to a few KB; max_frame_bytes is 64 KiB.
            let bomb = #"{"type":"ping","pad":""# + String(repeating: " ", count: 1 << 20) + #""}"#
            try c.send(Self.compressed(CompressionCodec(name: codec)!, bomb))
            let e = try c.read()
            #expect(e.type == "error" && e["code"] as? String == "frame_too_large", "\(e)")
            _ = try c.readUntilClosed(timeout: 3)
        }
    }

    @Test("compression refused while enable_compression is off", arguments: allIOModes)
    func refusedWhenFlagOff(mode: IOModeSetting) throws {
        try withServer(mode, configure: { try! $0.set("flag_enable_compression", "off") }) { port in
            let c = try TestClient(port: port)
            try c.send(J.obj(["type": "hello", "user": "nope", "compress": "zstd"]) + "\n")
            let w = try c.read()
            #expect(w.type == "welcome" && w["compress"] as? String == "none", "\(w)")
            try c.send(["type": "ping"])
            #expect(try c.read().type == "pong", "still JSON lines when compression is refused")
        }
    }

    @Test("an unknown codec name is an error", arguments: allIOModes)
    func unknownCodec(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            try c.send(J.obj(["type": "hello", "user": "x", "compress": "brotli"]) + "\n")
            let e = try c.read()
            #expect(e.type == "error" && e["code"] as? String == "unsupported_codec", "\(e)")
        }
    }
}
