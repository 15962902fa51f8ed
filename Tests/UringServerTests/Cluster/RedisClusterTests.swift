// Cluster mode on a real Redis Cluster (3 masters, 3 replicas; RedisClusterProcess, shared by
// these tests and serialized): sharded pub/sub per master, cluster-wide counts, a master
// killed mid-traffic, and a slot migrated under a link (ASK, MOVED, re-subscription).

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Cluster: nodes over a Redis Cluster", .serialized)
struct RedisClusterTests {
    static func node(_ rc: RedisClusterProcess, _ id: String, _ mode: IOModeSetting, historySize: Int = 100) throws -> Server {
        try startClusterNode(redisPort: rc.livePort, id: id, mode: mode, historySize: historySize)
    }

    static func clusterStats(_ port: Int) throws -> [String: Any] {
        let body = try httpRequest(port: port, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").body
        return try J.parse(Array(body.utf8))["cluster"] as? [String: Any] ?? [:]
    }

    static func statsText(_ port: Int) -> String { "\((try? clusterStats(port)) ?? [:])" }

    static func stat(_ port: Int, _ key: String) -> Int {
        ((try? clusterStats(port))?[key] as? Int) ?? -1
    }

    static func eventually(_ seconds: Double, _ cond: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try cond() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return try cond()
    }

    @Test("rooms on each of the 3 masters: members on every node get every message; counts are cluster-wide",
          arguments: [IOModeSetting.uring, .epoll])
    func crossNodeOnEveryMaster(mode: IOModeSetting) throws {
        let rc = try RedisClusterProcess.shared()
        let rooms = rc.roomsOnEachMaster(prefix: "rc-\(mode)-")
        try #require(rooms.count == 3, "rooms on 3 masters: \(rooms)")
        let nodes = try (1...3).map { try Self.node(rc, "rc\($0)-\(mode)", mode) }
        defer { for n in nodes { n.stop() } }
        let members = try nodes.enumerated().map { i, n -> TestClient in
            let c = try TestClient(port: n.port)
            _ = try c.hello("m\(i)")
            for r in rooms { _ = try c.join(r.room) }
            return c
        }
        #expect(try Self.eventually(5) {
            try nodes.allSatisfy {
                let s = try Self.clusterStats($0.port)
                return s["redis_mode"] as? String == "cluster" && s["masters"] as? Int == 3 && s["subscribed_rooms"] as? Int == 3
            }
        }, "every node in cluster mode with 3 masters and 3 sharded subscriptions: \(Self.statsText(nodes[0].port))")

        let perRoom = 20
        for k in 0..<perRoom {
            for (s, m) in members.enumerated() {
                for r in rooms { try m.send(["type": "send_chat", "room": r.room, "text": "s\(s)|\(r.room)|\(k)"]) }
            }
        }
        for (me, m) in members.enumerated() {
            var seen: [String: [Int]] = [:]
            for _ in 0..<(2 * rooms.count * perRoom) {
                let msg = try m.read(until: "chat", timeout: 10)
                let parts = (msg["text"] as? String ?? "").split(separator: "|")
                guard parts.count == 3 else { continue }
                seen["\(parts[0])|\(parts[1])", default: []].append(Int(parts[2]) ?? -1)
            }
            for s in 0..<3 where s != me {
                for r in rooms {
                    #expect(seen["s\(s)|\(r.room)"] == Array(0..<perRoom), "node \(me) from node \(s) in \(r.room) (master \(r.master))")
                }
            }
            #expect(seen.keys.allSatisfy { !$0.hasPrefix("s\(me)|") }, "no echo of a member's own messages")
        }
        // Each room has one member per node: 3 cluster-wide, whichever master holds its hash.
        for n in nodes {
            #expect(try Self.eventually(5) {
                let counts = try Self.clusterStats(n.port)["room_members"] as? [String: Any] ?? [:]
                return rooms.allSatisfy { counts[$0.room] as? Int == 3 }
            }, "node \(n.port): \(Self.statsText(n.port))")
        }
        #expect(nodes.allSatisfy { Self.stat($0.port, "publish_failures") == 0 })
    }

    @Test("a master SIGKILLed mid-traffic: nodes survive, re-subscribe on the promoted replica, delivery resumes, every offset gap is accounted for")
    func masterFailover() throws {
        let rc = try RedisClusterProcess.shared()
        let seed = rc.livePort
        // A room on a master other than the seed the nodes were configured with.
        let target = try #require(rc.roomsOnEachMaster(prefix: "fo-").first { $0.master != seed })
        let slot = rc.slot(ofRoom: target.room)
        let modes: [IOModeSetting] = [.uring, .epoll, .uring]
        // History big enough for a rejoin with since to reach back over the whole run.
        let nodes = try modes.enumerated().map { i, m in try Self.node(rc, "fo\(i + 1)", m, historySize: 2000) }
        defer { for n in nodes { n.stop() } }
        let publisher = try TestClient(port: nodes[0].port)
        _ = try publisher.hello("pub")
        _ = try publisher.join(target.room)
        var epoch = ""
        let members = try [nodes[1], nodes[2]].enumerated().map { i, n -> TestClient in
            let c = try TestClient(port: n.port)
            _ = try c.hello("member\(i)")
            epoch = try c.join(target.room)["epoch"] as? String ?? ""
            return c
        }
        #expect(try Self.eventually(5) {
            try publisher.send(["type": "send_chat", "room": target.room, "text": "warmup"])
            return members.allSatisfy { (try? $0.read(until: "chat", timeout: 0.3)) != nil }
        }, "warm-up delivery to both members")
        Thread.sleep(forTimeInterval: 1.2)  // room counts (nodes per room) refreshed by the heartbeat
        for m in members { while (try? m.read(timeout: 0.2)) != nil {} }
        let before = (acked: Self.stat(nodes[0].port, "published"), failed: Self.stat(nodes[0].port, "publish_failures"),
                      undelivered: Self.stat(nodes[0].port, "undelivered"))
        let lostBefore = [nodes[1], nodes[2]].map { Self.stat($0.port, "lost_messages") }

        // Readers collect the numbers (and offsets) each member gets, and the publisher's acks
        // (number → offset) and cluster_unavailable errors.
        let got = [ClusterBox([Int: Int]()), ClusterBox([Int: Int]())]
        let acks = ClusterBox([Int: Int]()), refused = ClusterBox(Set<Int>())
        let stop = ClusterBox(false)
        let readers = members.enumerated().map { i, m in
            let t = Thread {
                while !stop.value {
                    guard let msg = try? m.read(until: "chat", timeout: 0.2),
                          let text = msg["text"] as? String, text.hasPrefix("n") else { continue }
                    if let k = Int(text.dropFirst()) { got[i].mutate { $0[k] = msg["offset"] as? Int ?? -1 } }
                }
            }
            t.start()
            return t
        }
        _ = readers
        let ackReader = Thread {
            while !stop.value {
                guard let msg = try? publisher.read(timeout: 0.2), let id = msg["id"] as? Int else { continue }
                // A refused line gets its error, then an ack without an offset (protocol.md).
                if msg.type == "ack", let offset = msg["offset"] as? Int { acks.mutate { $0[id] = offset } }
                if msg.type == "error" && msg["code"] as? String == "cluster_unavailable" { refused.mutate { _ = $0.insert(id) } }
            }
        }
        ackReader.start()

        var sent = 0
        func send(_ n: Int) throws {
            for _ in 0..<n {
                try publisher.send(["type": "send_chat", "room": target.room, "text": "n\(sent)", "id": sent])
                sent += 1
                usleep(2000)
            }
        }
        try send(100)
        rc.kill(target.master)
        let killedAt = Date()
        let newMasterBox = ClusterBox<Int?>(nil)
        let waiter = Thread { let m = rc.waitForFailover(slot: slot, from: target.master); newMasterBox.mutate { $0 = m } }
        waiter.start()
        // Keep publishing through the failover until every node re-subscribed the room.
        while Date().timeIntervalSince(killedAt) < 15
            && !nodes.allSatisfy({ Self.stat($0.port, "resubscribes") >= 1 }) {
            try send(10)
        }
        let resumedAt = sent
        let resubscribedAfter = Date().timeIntervalSince(killedAt)
        try send(150)
        _ = Self.eventually(5) { acks.value.count + refused.value.count >= sent }
        Thread.sleep(forTimeInterval: 0.5)
        stop.mutate { $0 = true }
        Thread.sleep(forTimeInterval: 0.3)

        _ = Self.eventually(10) { newMasterBox.value != nil }
        let newMaster = newMasterBox.value
        let s0 = try Self.clusterStats(nodes[0].port)
        let acked = (s0["published"] as? Int ?? 0) - before.acked
        let failed = (s0["publish_failures"] as? Int ?? 0) - before.failed
        let undelivered = (s0["undelivered"] as? Int ?? 0) - before.undelivered
        let delivered = got.map { $0.value.count }

        // Each member comes back (a new connection on its node) with since = just before the
        // first line of the run: what the node's log holds fills the member's gaps.
        var recovered = [0, 0], unrecovered = [0, 0], lost = [0, 0], holes = [0, 0]
        for (i, n) in [nodes[1], nodes[2]].enumerated() {
            let live = got[i].value
            let offsets = Set(live.values)
            lost[i] = Self.stat(n.port, "lost_messages") - lostBefore[i]
            guard let first = offsets.min(), let last = offsets.max() else { continue }
            holes[i] = (first...last).count - offsets.count
            let again = try TestClient(port: n.port)
            _ = try again.hello("again\(i)")
            try again.send(["type": "join_room", "room": target.room, "epoch": epoch, "since": first - 1])
            let joined = try again.read(until: "joined")
            var replay: [Int: Int] = [:]
            while let m = try? again.read(until: "chat", timeout: 1) {
                if let text = m["text"] as? String, text.hasPrefix("n"), let k = Int(text.dropFirst()) { replay[k] = m["offset"] as? Int ?? -1 }
            }
            // Every line number the member never got live: refused to the sender, recovered by
            // the rejoin, or behind an offset the node counted lost.
            for k in 0..<sent where live[k] == nil && !refused.value.contains(k) {
                if replay[k] != nil { recovered[i] += 1 } else { unrecovered[i] += 1 }
            }
            #expect(unrecovered[i] <= lost[i], "member \(i): \(unrecovered[i]) acked lines neither delivered nor recovered, \(lost[i]) counted lost (joined \(joined))")
            // A hole in the offsets the member saw is a hole in its node's log: counted lost,
            // or (filled later) in the replay.
            let replayed = Set(replay.values)
            let unfilled = (first...last).filter { !offsets.contains($0) && !replayed.contains($0) }.count
            #expect(unfilled <= lost[i], "member \(i): \(unfilled) offsets missing from its node's log, \(lost[i]) counted lost")
            // What the member saw live came in offset order.
            let inOrder = live.sorted { $0.key < $1.key }.map(\.value)
            #expect(inOrder == inOrder.sorted(), "member \(i) saw offsets in publish order")
        }
        let ackedOffsets = acks.value.values.filter { $0 > 0 }
        #expect(Set(ackedOffsets).count == ackedOffsets.count, "no offset acked twice")
        #expect(acks.value.count + refused.value.count == sent, "every line acked or refused: \(acks.value.count) + \(refused.value.count) of \(sent)")
        print("failover counts: published=\(sent) acked=\(acked) refused=\(refused.value.count) publish_failures=\(failed) "
              + "undelivered=\(undelivered) delivered=\(delivered) recovered=\(recovered) lost_messages=\(lost) "
              + "offset_holes_seen=\(holes) resumed_at=\(resumedAt) "
              + "resubscribed_after_s=\(String(format: "%.2f", resubscribedAfter)) "
              + "stats=\(nodes.map { (try? Self.clusterStats($0.port)).map { "\($0["failovers"] ?? "?")/\($0["resubscribes"] ?? "?")" } ?? "dead" })")

        #expect(newMaster != nil && newMaster != target.master, "a replica took over slot \(slot)")
        for n in nodes {
            let s = try Self.clusterStats(n.port)   // the node survived and answers
            #expect(s["connected"] as? Bool == true && s["masters"] as? Int == 3, "node \(n.port): \(s)")
            #expect(s["failovers"] as? Int ?? 0 >= 1, "node \(n.port) saw the failover: \(s)")
        }
        // Every publish is either acknowledged by Redis or counted as failed.
        #expect(acked + failed == sent, "acked \(acked) + failed \(failed) == published \(sent)")
        for (i, d) in delivered.enumerated() {
            #expect(d <= sent)
            // What a member missed is visible: refused to the sender, or counted lost.
            #expect(sent - d <= failed + lost[i], "member \(i) lost \(sent - d), visible \(failed) + \(lost[i])")
            let tail = Set(resumedAt..<sent)
            #expect(tail.isSubset(of: Set(got[i].value.keys)), "member \(i) got everything after re-subscription")
        }
        // The killed node comes back as a replica, so later tests keep 6 nodes.
        try rc.start(target.master)
        _ = rc.waitFor(10) { rc.info(target.master)?.contains("cluster_state:ok") == true }
    }

    @Test("a slot migrated under the links: ASK followed during the move, MOVED after it, the room re-subscribed where it lives")
    func slotMigration() throws {
        let rc = try RedisClusterProcess.shared()
        let rooms = rc.roomsOnEachMaster(prefix: "mv-")
        try #require(rooms.count == 3)
        let (room, from) = rooms[0]
        let to = rooms[1].master
        let slot = rc.slot(ofRoom: room)
        let seed = rc.livePort
        let resubscribed = ClusterBox<[String]>([])
        let a = RedisLink(settings: ClusterSettings(redisPort: seed, nodeId: "A", heartbeatMillis: 200, nodeTTLMillis: 600),
                          logger: Logger(level: .warning)) { _, _ in }
        let bGot = ClusterBox<[String]>([])
        let b = RedisLink(settings: ClusterSettings(redisPort: seed, nodeId: "B", heartbeatMillis: 200, nodeTTLMillis: 600),
                          logger: Logger(level: .warning)) { _, body in bGot.mutate { $0.append(String(decoding: body, as: UTF8.self)) } }
        b.onRoomResubscribed = { r in resubscribed.mutate { $0.append(r) } }
        a.start()
        b.start()
        defer { a.stop(); b.stop() }
        // A only publishes (no subscription: it learns of the move from a MOVED reply); B has
        // members and is subscribed.
        b.roomActivated(room)
        b.setLocalMemberCount(room: room, count: 3)
        try #require(Self.eventually(5) { b.stats.subscribedRooms == 1 && b.clusterMemberCount(room: room) == 3 && a.stats.connected })
        func publish(_ s: String) { var t = s; t.withUTF8 { a.publish(room: room, body: UnsafeRawBufferPointer($0)) } }
        // A chat line through the chat script (offsets), routed like the room's other commands.
        func publishChat(_ s: String) -> Bool {
            var t = "{\"type\":\"chat\",\"text\":\"\(s)\""
            return t.withUTF8 { a.publishChat(room: room, line: UnsafeRawBufferPointer($0), epoch: "abcdef000002", floor: 0,
                                              reactor: 0, slot: 0, generation: 0, id: nil) }
        }
        publish("before")
        #expect(Self.eventually(3) { bGot.value.contains("before") })

        let fromID = try #require(rc.query(from, ["CLUSTER", "MYID"])), toID = try #require(rc.query(to, ["CLUSTER", "MYID"]))
        #expect(rc.query(to, ["CLUSTER", "SETSLOT", String(slot), "IMPORTING", fromID]) == "OK")
        #expect(rc.query(from, ["CLUSTER", "SETSLOT", String(slot), "MIGRATING", toID]) == "OK")
        #expect(rc.query(from, ["MIGRATE", "127.0.0.1", String(to), "", "0", "5000", "KEYS", "tcpserver:members:{\(room)}"]) == "OK")
        // B's presence heartbeat (every 200 ms) now finds the key gone from the old master: ASK.
        #expect(Self.eventually(3) { b.stats.asked >= 1 }, "B followed an ASK: \(b.stats)")
        for p in [to, from] + rc.masterPorts().filter({ $0 != to && $0 != from }) {
            #expect(rc.query(p, ["CLUSTER", "SETSLOT", String(slot), "NODE", toID]) == "OK")
        }
        // A still routes to the old master: its publishes come back MOVED (counted as failed),
        // then go to the new one. B gets its subscription dropped and re-makes it.
        var sent = 0
        let deadline = Date().addingTimeInterval(5)
        var chats = 0
        while Date() < deadline && !(a.stats.moved >= 1 && b.stats.resubscribes >= 1) {
            publish("n\(sent)")
            sent += 1
            if publishChat("c\(chats)") { chats += 1 }
            usleep(1000)
        }
        #expect(a.stats.moved >= 1, "A followed a MOVED: \(a.stats)")
        #expect(b.stats.resubscribes >= 1 && resubscribed.value == [room], "B re-subscribed \(room): \(resubscribed.value)")
        publish("after")
        #expect(Self.eventually(3) { bGot.value.contains("after") }, "delivery on the new master")
        // Plain and chat-script publishes alike: a MOVED one is counted failed (a chat line's
        // sender would get cluster_unavailable), never dropped silently.
        #expect(Self.eventually(3) { a.stats.published + a.stats.publishFailures == sent + 2 + chats },
                "every publish acknowledged or counted: \(a.stats), \(chats) chat lines")
        b.setLocalMemberCount(room: room, count: 4)
        #expect(Self.eventually(3) { b.clusterMemberCount(room: room) == 4 }, "presence on the new master")
        print("migration counts: sent=\(sent + 2) a=\(a.stats) b=\(b.stats)")
    }
}

extension RedisClusterTests {
    @Test("links seeded with a replica's address find the masters; a room on each master works both ways")
    func seededByReplica() throws {
        let rc = try RedisClusterProcess.shared()
        let masters = rc.masterPorts()
        let replica = try #require(rc.ports.first { !masters.contains($0) && rc.query($0, ["PING"]) == "PONG" })
        let rooms = rc.roomsOnEachMaster(prefix: "rp-").map(\.room)
        try #require(rooms.count == 3)
        let got = [ClusterBox<[String]>([]), ClusterBox<[String]>([])]
        let links = (0..<2).map { i in
            RedisLink(settings: ClusterSettings(redisPort: replica, nodeId: "R\(i)", heartbeatMillis: 200, nodeTTLMillis: 600),
                      logger: Logger(level: .warning)) { room, body in got[i].mutate { $0.append("\(room)=\(String(decoding: body, as: UTF8.self))") } }
        }
        for l in links { l.start() }
        defer { for l in links { l.stop() } }
        for (i, l) in links.enumerated() {
            for r in rooms {
                l.roomActivated(r)
                l.setLocalMemberCount(room: r, count: i + 1)
            }
        }
        try #require(Self.eventually(5) {
            links.allSatisfy { l in l.stats.subscribedRooms == 3 && rooms.allSatisfy { l.clusterMemberCount(room: $0) == 3 } }
        }, "both links subscribed on 3 masters, counts 1 + 2: \(links.map(\.stats))")
        #expect(links.allSatisfy { $0.stats.redisMode == "cluster" && $0.stats.masters == 3 })
        for (i, l) in links.enumerated() {
            for r in rooms { var t = "from\(i)"; t.withUTF8 { l.publish(room: r, body: UnsafeRawBufferPointer($0)) } }
        }
        #expect(Self.eventually(3) { got[0].value.count == 3 && got[1].value.count == 3 })
        #expect(Set(got[0].value) == Set(rooms.map { "\($0)=from1" }) && Set(got[1].value) == Set(rooms.map { "\($0)=from0" }))
        #expect(links.allSatisfy { $0.stats.publishFailures == 0 && $0.stats.moved == 0 })
    }
}

final class ClusterBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return v }
    func mutate(_ f: (inout T) -> Void) { lock.lock(); f(&v); lock.unlock() }
}
