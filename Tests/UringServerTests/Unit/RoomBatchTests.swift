// Per-turn room batches (Reactor.flushBatch): small messages to a room are delivered together at
// the end of the turn. What a client sees must not change: every member gets exactly the
// messages sent while it was a member, in processing order, interleaved correctly with its
// replies; senders do not get their own messages (no echo); binary members get frames.
// Driven through ProtocolHarness so that several receives share one turn.

import Foundation
import Testing
import UringServer
import UringServerTesting

private func lines(_ bytes: [UInt8]) -> [JSONObject] {
    bytes.split(separator: UInt8(ascii: "\n")).compactMap { try? J.parse(Array($0)) }
}

private func chat(_ text: String, id: Int? = nil) -> String {
    "{\"type\":\"send_chat\",\"room\":\"r\",\"text\":\"\(text)\"" + (id.map { ",\"id\":\($0)" } ?? "") + "}\n"
}

/// A harness with `n` members of room "r" (presence off), outputs drained.
private func room(_ n: Int) -> (ProtocolHarness, [Int]) {
    var c = ServerConfig()
    c.presence = false
    c.rateLimitPerSec = 0
    let h = ProtocolHarness(config: c)
    var ids: [Int] = []
    for i in 0..<n {
        let id = h.connect()
        h.feed(id, Array("{\"type\":\"hello\",\"user\":\"m\(i)\"}\n{\"type\":\"join_room\",\"room\":\"r\"}\n".utf8))
        _ = h.takeOutput(id)
        ids.append(id)
    }
    return (h, ids)
}

private func texts(_ out: [JSONObject]) -> [String] { out.filter { $0.type == "chat" }.compactMap { $0["text"] as? String } }

@Suite("Room batches: delivery order and membership")
struct RoomBatchTests {

    @Test("one receive, many chats: everyone else gets all in order, the sender only its acks")
    func batchInOneReceive() {
        let (h, ids) = room(6)
        let before = h.deliveries
        var burst = ""
        for i in 0..<40 { burst += chat("m" + String(i), id: i) }
        h.feed(ids[0], Array(burst.utf8))
        let want = (0..<40).map { "m\($0)" }
        for id in ids.dropFirst() { #expect(texts(lines(h.takeOutput(id))) == want) }
        let own = lines(h.takeOutput(ids[0]))
        #expect(own.allSatisfy { $0.type == "ack" } && own.count == 40, "sender: \(own.prefix(3))")
        #expect(h.deliveries - before == 40 * 5 + 40, "40 chats to 5 members, 40 acks")
    }

    @Test("two senders in one turn: order of processing kept; each skips only its own")
    func mixedSenders() {
        let (h, ids) = room(5)
        h.receive(ids[0], Array((chat("a1") + chat("a2")).utf8))
        h.receive(ids[1], Array(chat("b1").utf8))
        h.receive(ids[0], Array(chat("a3").utf8))
        h.endTurn()
        #expect(texts(lines(h.takeOutput(ids[0]))) == ["b1"])
        #expect(texts(lines(h.takeOutput(ids[1]))) == ["a1", "a2", "a3"])
        for id in ids.dropFirst(2) { #expect(texts(lines(h.takeOutput(id))) == ["a1", "a2", "b1", "a3"]) }
    }

    @Test("a reply to a member does not overtake batched chats it receives")
    func replyAfterBatchedChat() {
        let (h, ids) = room(5)
        h.receive(ids[0], Array(chat("first").utf8))
        h.receive(ids[1], Array("{\"type\":\"ping\"}\n".utf8))
        h.endTurn()
        let out = lines(h.takeOutput(ids[1]))
        #expect(out.map(\.type) == ["chat", "pong"], "\(out)")
    }

    @Test("join and leave within a turn: exactly the messages sent while a member")
    func membershipInATurn() {
        let (h, ids) = room(5)
        let late = h.connect()
        h.feed(late, Array("{\"type\":\"hello\",\"user\":\"late\"}\n".utf8))
        _ = h.takeOutput(late)
        h.receive(ids[0], Array(chat("before").utf8))
        h.receive(late, Array("{\"type\":\"join_room\",\"room\":\"r\"}\n".utf8))
        h.receive(ids[4], Array("{\"type\":\"leave_room\",\"room\":\"r\"}\n".utf8))
        h.receive(ids[0], Array(chat("after").utf8))
        h.endTurn()
        #expect(texts(lines(h.takeOutput(late))) == ["after"], "the late joiner gets only what came after it joined")
        #expect(texts(lines(h.takeOutput(ids[4]))) == ["before"], "the leaver gets what came before it left")
        #expect(texts(lines(h.takeOutput(ids[2]))) == ["before", "after"])
    }

    @Test("a binary-framed member gets the batch as frames, in order")
    func binaryMember() {
        let (h, ids) = room(5)
        let bin = h.connect()
        var hello: [UInt8] = []
        for json in ["{\"type\":\"hello\",\"user\":\"bin\"}", "{\"type\":\"join_room\",\"room\":\"r\"}"] {
            let body = [UInt8(0)] + Array(json.utf8)
            let n = UInt32(body.count)
            hello += [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + body
        }
        h.feed(bin, hello)
        _ = h.takeOutput(bin)
        h.feed(ids[0], Array((0..<5).map { chat("f\($0)") }.joined().utf8))
        var out = h.takeOutput(bin)
        var got: [String] = []
        while out.count >= 5 {
            let n = Int(out[0]) << 24 | Int(out[1]) << 16 | Int(out[2]) << 8 | Int(out[3])
            #expect(out[4] == 0, "codec 0")
            if let m = try? J.parse(Array(out[5..<(4 + n)])), m.type == "chat" { got.append(m["text"] as? String ?? "?") }
            out.removeFirst(4 + n)
        }
        #expect(got == (0..<5).map { "f\($0)" } && out.isEmpty)
        #expect(texts(lines(h.takeOutput(ids[1]))) == (0..<5).map { "f\($0)" })
    }

    @Test("another room's message in the same turn keeps the order for members of both")
    func twoRooms() {
        let (h, ids) = room(5)
        for id in ids.prefix(2) { h.feed(id, Array("{\"type\":\"join_room\",\"room\":\"s\"}\n".utf8)); _ = h.takeOutput(id) }
        for id in ids { _ = h.takeOutput(id) }
        h.receive(ids[2], Array(chat("r1").utf8))
        h.receive(ids[0], Array("{\"type\":\"send_chat\",\"room\":\"s\",\"text\":\"s1\"}\n".utf8))
        h.receive(ids[2], Array(chat("r2").utf8))
        h.endTurn()
        #expect(texts(lines(h.takeOutput(ids[1]))) == ["r1", "s1", "r2"])
    }
}
