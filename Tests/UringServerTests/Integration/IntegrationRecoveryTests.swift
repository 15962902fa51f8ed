// Room offsets, one order across reactors, history and recovery on rejoin (issue #15, single
// node), over real sockets in both io modes.

import Foundation
import Testing
import UringServer

/// Chat lines' offsets (other messages skipped) until `last` is seen (or `count` of them).
private func readOffsets(_ c: TestClient, through last: Int, count: Int = .max, timeout: Double = 10) throws -> [Int] {
    var out: [Int] = []
    let deadline = Date().addingTimeInterval(timeout)
    while out.last ?? -1 < last && out.count < count {
        guard Date() < deadline else { throw ClientError.timeout("offset \(last), got \(out.suffix(5))") }
        let m = try c.read()
        if m.type == "chat", let n = m["offset"] as? Int { out.append(n) }
    }
    return out
}

/// `count` chats from `c` to `room` (no ids, no replies to wait for).
private func sendNumbered(_ c: TestClient, room: String, _ range: ClosedRange<Int>) throws {
    for i in range { try c.send(["type": "send_chat", "room": room, "text": "m\(i)"]) }
}

private func noRateLimit(_ c: inout ServerConfig) { c.rateLimitPerSec = 0 }

@Suite("Integration: room offsets and recovery")
struct IntegrationRecoveryTests {

    @Test("joined carries epoch and offset; chat and ack carry the offset", arguments: allIOModes)
    func offsetsAndAcks(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port), b = try TestClient(port: port)
            try a.hello("alice")
            try b.hello("bob")
            let ja = try a.join("r")
            let epoch = try #require(ja["epoch"] as? String)
            #expect(!epoch.isEmpty)
            #expect(ja["offset"] as? Int == 0)
            #expect(ja["recovered"] == nil, "no since: no recovered field")
            let jb = try b.join("r")
            #expect(jb["epoch"] as? String == epoch)
            for i in 1...3 {
                try a.send(["type": "send_chat", "room": "r", "text": "t\(i)", "id": 7 + i])
                let ack = try a.read(until: "ack")
                #expect(ack["id"] as? Int == 7 + i)
                #expect(ack["offset"] as? Int == i, "ack should carry the offset: \(ack)")
                let chat = try b.read(until: "chat")
                #expect(chat["offset"] as? Int == i)
                #expect(chat["text"] as? String == "t\(i)")
            }
            // Other acks carry no offset.
            try a.send(["type": "ping", "id": 1])
            _ = try a.read(until: "pong")
            let ack = try a.read(until: "ack")
            #expect(ack["offset"] == nil)
            let jc = try TestClient(port: port)
            try jc.hello("carol")
            #expect(try jc.join("r")["offset"] as? Int == 3)
        }
    }

    /// Without the log, two senders on different reactors reach members on different reactors
    /// in different orders; with it every member sees 1, 2, 3 … in order.
    @Test("senders on different reactors: every member sees offsets 1, 2, 3 … in order", arguments: allIOModes)
    func totalOrderAcrossReactors(mode: IOModeSetting) throws {
        try withRunningServer(mode, threads: 2, configure: noRateLimit) { server in
            let port = server.port
            let receivers = try TestClient.members(6, port: port, user: "rx", room: "o")
            let senders = try TestClient.members(4, port: port, user: "tx", room: "o")
            let perSender = 300
            DispatchQueue.concurrentPerform(iterations: senders.count) { i in
                try? sendNumbered(senders[i], room: "o", 1...perSender)
            }
            let total = perSender * senders.count
            for (i, r) in (receivers + senders).enumerated() {
                // A sender does not get its own lines (no echo): a gap of exactly those.
                let got = try readOffsets(r, through: total, count: i < receivers.count ? .max : total - perSender, timeout: 20)
                if i < receivers.count {
                    #expect(got == Array(1...total), "receiver \(i): first out-of-order at \(String(describing: got.indices.first { got[$0] != $0 + 1 }))")
                } else {
                    #expect(got == got.sorted() && Set(got).count == got.count, "sender \(i): offsets not increasing")
                    #expect(got.count == total - perSender)
                }
            }
        }
    }

    @Test("reconnect mid-stream and rejoin with since: exactly the missed ones, then live ones", arguments: allIOModes)
    func recoverMidStream(mode: IOModeSetting) throws {
        try withRunningServer(mode, threads: 2, configure: { c in noRateLimit(&c); c.historySize = 1000 }) { server in
            let port = server.port
            let pub = try TestClient(port: port)
            try pub.hello("pub")
            try pub.join("s")
            var member = try TestClient(port: port)
            try member.hello("m")
            let epoch = try #require(try member.join("s")["epoch"] as? String)
            let total = 400
            let publisher = Thread {
                for i in 1...total {
                    try? pub.send(["type": "send_chat", "room": "s", "text": "m\(i)"])
                    if i % 5 == 0 { usleep(2000) }
                }
            }
            publisher.start()
            var seen = try readOffsets(member, through: 60)
            member.closeAbruptly()
            usleep(20_000)
            member = try TestClient(port: port)
            try member.hello("m")
            try member.send(["type": "join_room", "room": "s", "epoch": epoch, "since": seen.last!])
            let joined = try member.read(until: "joined")
            #expect(joined["recovered"] as? Bool == true, "\(joined)")
            let offset = try #require(joined["offset"] as? Int)
            #expect(joined["missed"] as? Int == offset - seen.last!)
            var texts: [String] = []
            let deadline = Date().addingTimeInterval(20)
            while seen.last! < total && Date() < deadline {
                let m = try member.read()
                guard m.type == "chat", let n = m["offset"] as? Int else { continue }
                seen.append(n)
                texts.append(m["text"] as? String ?? "")
            }
            #expect(seen == Array(1...total), "no hole, no duplicate: first bad index \(String(describing: seen.indices.first { seen[$0] != $0 + 1 }))")
            #expect(texts.last == "m\(total)")
        }
    }

    @Test("across an eviction: recovered false, the right missed, what history remains", arguments: allIOModes)
    func recoverAcrossEviction(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in noRateLimit(&c); c.historySize = 5 }) { port in
            let pub = try TestClient(port: port)
            try pub.hello("pub")
            let epoch = try #require(try pub.join("e")["epoch"] as? String)
            try sendNumbered(pub, room: "e", 1...20)
            try pub.pingExpectingPongNext()
            let m = try TestClient(port: port)
            try m.hello("m")
            try m.send(["type": "join_room", "room": "e", "epoch": epoch, "since": 3])
            let joined = try m.read(until: "joined")
            #expect(joined["recovered"] as? Bool == false)
            #expect(joined["missed"] as? Int == 17)
            #expect(joined["offset"] as? Int == 20)
            #expect(try readOffsets(m, through: 20) == Array(16...20))
            // Within what history holds: recovered.
            try m.send(["type": "join_room", "room": "e", "epoch": epoch, "since": 17])
            let again = try m.read(until: "joined")
            #expect(again["recovered"] as? Bool == true, "re-join with since replays: \(again)")
            #expect(again["missed"] as? Int == 3)
            #expect(try readOffsets(m, through: 20) == Array(18...20))
            // Another epoch: recovered false, the whole room's offset missed, history replayed.
            try m.send(["type": "join_room", "room": "e", "epoch": "other", "since": 2])
            let other = try m.read(until: "joined")
            #expect(other["recovered"] as? Bool == false)
            #expect(other["missed"] as? Int == 20)
            #expect(try readOffsets(m, through: 20) == Array(16...20))
            usleep(1_200_000)   // the stats snapshot is a second old at most
            let stats = try fetchStats(port)
            #expect(statsTotal(stats, "recoveries_ok") == 1)
            #expect(statsTotal(stats, "recoveries_failed_evicted") == 1)
            #expect(statsTotal(stats, "recoveries_failed_epoch") == 1)
            #expect(statsTotal(stats, "messages_replayed") == 13)
        }
    }

    @Test("bad since or epoch: bad_since, the connection stays", arguments: allIOModes)
    func badSince(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            try a.hello("a")
            let epoch = try #require(try a.join("b")["epoch"] as? String)
            try a.send(["type": "send_chat", "room": "b", "text": "x"])
            let bad: [String] = [
                #"{"type":"join_room","room":"b","epoch":"\#(epoch)","since":-1}"#,
                #"{"type":"join_room","room":"b","epoch":"\#(epoch)","since":"3"}"#,
                #"{"type":"join_room","room":"b","epoch":"\#(epoch)","since":1.5}"#,
                #"{"type":"join_room","room":"b","epoch":"\#(epoch)","since":2}"#,
                #"{"type":"join_room","room":"b","epoch":7,"since":0}"#,
                #"{"type":"join_room","room":"b","since":0}"#,
                #"{"type":"join_room","room":"b","epoch":"\#(epoch)"}"#,
                #"{"type":"join_room","room":"nb","epoch":7,"since":0}"#,
            ]
            for line in bad {
                try a.send(message: line)
                try expectError(a, "bad_since", line)
            }
            try a.pingExpectingPongNext()
            // A since beyond the latest is fine in another epoch (not comparable): recovered false.
            try a.send(["type": "join_room", "room": "b", "epoch": "old", "since": 99])
            #expect(try a.read(until: "joined")["recovered"] as? Bool == false)
        }
    }

    @Test("history TTL, and a room kept for its history after its last member left", arguments: allIOModes)
    func ttlAndRetention(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in c.historyTTLSeconds = 2 }) { port in
            var a = try TestClient(port: port)
            try a.hello("a")
            let epoch = try #require(try a.join("t")["epoch"] as? String)
            try sendNumbered(a, room: "t", 1...3)
            try a.pingExpectingPongNext()
            a.close()
            usleep(100_000)
            // The lone member comes back: the room kept its log and epoch.
            a = try TestClient(port: port)
            try a.hello("a")
            try a.send(["type": "join_room", "room": "t", "epoch": epoch, "since": 1])
            let j = try a.read(until: "joined")
            #expect(j["recovered"] as? Bool == true, "\(j)")
            #expect(j["epoch"] as? String == epoch)
            #expect(try readOffsets(a, through: 3) == [2, 3])
            a.close()
            // After the TTL the history is gone and the room forgotten: a new epoch.
            usleep(3_600_000)
            let b = try TestClient(port: port)
            try b.hello("b")
            try b.send(["type": "join_room", "room": "t", "epoch": epoch, "since": 3])
            let j2 = try b.read(until: "joined")
            #expect(j2["recovered"] as? Bool == false)
            #expect(j2["epoch"] as? String != epoch)
            #expect(j2["offset"] as? Int == 0)
            let stats = try fetchStats(port)
            #expect(statsTotal(stats, "history_bytes") == 0)
            #expect(stats["rooms"] as? Int == 1)
        }
    }

    @Test("history bounded in bytes per room: early evictions counted", arguments: allIOModes)
    func bytesBound(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in noRateLimit(&c); c.historyMaxBytesPerRoom = 1000 }) { port in
            let a = try TestClient(port: port)
            try a.hello("a")
            let epoch = try #require(try a.join("bb")["epoch"] as? String)
            try sendNumbered(a, room: "bb", 1...50)
            try a.pingExpectingPongNext()
            let b = try TestClient(port: port)
            try b.hello("b")
            try b.send(["type": "join_room", "room": "bb", "epoch": epoch, "since": 0])
            let j = try b.read(until: "joined")
            #expect(j["recovered"] as? Bool == false)
            let got = try readOffsets(b, through: 50)
            // Lines are ~90 B + 24 B each: about 8 fit in 1000 B.
            #expect(got.count >= 5 && got.count <= 10 && got == Array((51 - got.count)...50), "\(got)")
            usleep(1_200_000)
            let stats = try fetchStats(port)
            #expect(statsTotal(stats, "history_early_evictions") >= 40)
            let bytes = statsTotal(stats, "history_bytes")
            #expect(bytes > 0 && bytes <= 1000, "history_bytes \(bytes)")
        }
    }

    @Test("replayed lines reach binary-frame members framed", arguments: allIOModes)
    func replayBinary(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try TestClient(port: port)
            try a.hello("a")
            let epoch = try #require(try a.join("f")["epoch"] as? String)
            try sendNumbered(a, room: "f", 1...4)
            try a.pingExpectingPongNext()
            let b = try TestClient(port: port, framing: .binary)
            try b.hello("b")
            try b.send(["type": "join_room", "room": "f", "epoch": epoch, "since": 1])
            #expect(try b.read(until: "joined")["recovered"] as? Bool == true)
            #expect(try readOffsets(b, through: 4) == [2, 3, 4])
        }
    }

    @Test("over history_max_bytes (judged once a second) appends keep nothing already delivered", arguments: allIOModes)
    func serverWideBound(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in noRateLimit(&c); c.historyMaxBytes = 500 }) { port in
            let a = try TestClient(port: port)
            try a.hello("a")
            let epoch = try #require(try a.join("g")["epoch"] as? String)
            try sendNumbered(a, room: "g", 1...20)
            try a.pingExpectingPongNext()
            usleep(1_500_000)   // every reactor's one-second tick: the total is over 500 B
            try a.send(["type": "send_chat", "room": "g", "text": "one more"])
            try a.pingExpectingPongNext()
            let b = try TestClient(port: port)
            try b.hello("b")
            try b.send(["type": "join_room", "room": "g", "epoch": epoch, "since": 0])
            let j = try b.read(until: "joined")
            #expect(j["recovered"] as? Bool == false)
            #expect(j["missed"] as? Int == 21)
            try b.pingExpectingPongNext()   // nothing replayed: the pong comes next
            usleep(1_200_000)
            #expect(statsTotal(try fetchStats(port), "history_early_evictions") >= 20)
        }
    }
}
