// Unit tests for RoomDirectory, SharedRoom and LocalRoom (Sources/UringServer/Server/Rooms.swift):
// member counts, per-reactor counts and the reactor mask as members join and leave, the room
// limit, removal of empty rooms, and consistency under concurrent joins/leaves.

import Foundation
import Synchronization
import Testing
@testable import UringServer

@Suite("RoomDirectory and rooms")
struct RoomDirectoryTests {
    static func mask(_ room: SharedRoom) -> UInt64 { room.reactorMask.load(ordering: .acquiring) }

    @Test("join counts members, per-reactor counts and sets a reactor's bit on its first member")
    func joinCounts() throws {
        let dir = RoomDirectory(reactorCount: 4)
        #expect(dir.roomCount == 0)
        #expect(dir.lookup("lobby") == nil)
        #expect(dir.memberCount("lobby") == 0)

        let (room, c1) = try #require(dir.join("lobby", reactor: 2))
        #expect(c1 == 1)
        #expect(room.name == "lobby")
        #expect(room.reactorCount == 4)
        #expect(room.memberCount == 1)
        #expect(room.perReactorCount == [0, 0, 1, 0])
        #expect(Self.mask(room) == 0b0100)
        #expect(dir.roomCount == 1)
        #expect(dir.lookup("lobby") === room)

        let (again, c2) = try #require(dir.join("lobby", reactor: 2))
        #expect(again === room, "the same room object for the same name")
        #expect(c2 == 2)
        #expect(room.perReactorCount == [0, 0, 2, 0])
        #expect(Self.mask(room) == 0b0100)

        let (_, c3) = try #require(dir.join("lobby", reactor: 0))
        #expect(c3 == 3)
        #expect(room.perReactorCount == [1, 0, 2, 0])
        #expect(Self.mask(room) == 0b0101)
        #expect(dir.memberCount("lobby") == 3)
        #expect(dir.roomCount == 1)
    }

    @Test("leave clears a reactor's bit only when its last member leaves")
    func leaveCounts() throws {
        let dir = RoomDirectory(reactorCount: 3)
        let (room, _) = try #require(dir.join("r", reactor: 0))
        _ = try #require(dir.join("r", reactor: 0))
        _ = try #require(dir.join("r", reactor: 1))
        #expect(Self.mask(room) == 0b011)

        #expect(dir.leave(room, reactor: 0) == 2)
        #expect(room.perReactorCount == [1, 1, 0])
        #expect(Self.mask(room) == 0b011, "reactor 0 still has a member")

        #expect(dir.leave(room, reactor: 1) == 1)
        #expect(room.perReactorCount == [1, 0, 0])
        #expect(Self.mask(room) == 0b001, "reactor 1 lost its last member")
        #expect(dir.lookup("r") === room, "the room stays while it has members")
        #expect(dir.memberCount("r") == 1)

        // Reactor 1 gains a member again: its bit comes back.
        _ = try #require(dir.join("r", reactor: 1))
        #expect(Self.mask(room) == 0b011)
    }

    @Test("a full room refuses a join without changing any count")
    func limit() throws {
        let dir = RoomDirectory(reactorCount: 2)
        let (room, _) = try #require(dir.join("small", reactor: 0, limit: 2))
        _ = try #require(dir.join("small", reactor: 0, limit: 2))
        #expect(dir.join("small", reactor: 1, limit: 2) == nil, "third member over a limit of 2")
        #expect(room.memberCount == 2)
        #expect(room.perReactorCount == [2, 0])
        #expect(Self.mask(room) == 0b01, "the refused reactor's bit is not set")
        #expect(dir.memberCount("small") == 2)
        #expect(dir.join("small", reactor: 0, limit: 1) == nil, "already above a lower limit")
        #expect(room.memberCount == 2)
        // The limit is per call: a higher limit admits the member.
        let (same, c) = try #require(dir.join("small", reactor: 1, limit: 3))
        #expect(same === room)
        #expect(c == 3)
        #expect(room.perReactorCount == [2, 1])
        // After a leave, there is room again under the old limit.
        dir.leave(room, reactor: 1)
        #expect(dir.join("small", reactor: 1, limit: 3) != nil)
    }

    @Test("the last leave removes the room; a new join creates a fresh room")
    func removalAndRecreation() throws {
        let dir = RoomDirectory(reactorCount: 2)
        let (a, _) = try #require(dir.join("a", reactor: 0))
        let (b, _) = try #require(dir.join("b", reactor: 1))
        _ = try #require(dir.join("b", reactor: 0))
        #expect(dir.roomCount == 2)

        #expect(dir.leave(a, reactor: 0) == 0)
        #expect(dir.lookup("a") == nil)
        #expect(dir.memberCount("a") == 0)
        #expect(dir.roomCount == 1)
        #expect(Self.mask(a) == 0)
        #expect(a.perReactorCount == [0, 0])

        #expect(dir.leave(b, reactor: 1) == 1)
        #expect(dir.lookup("b") === b)
        #expect(dir.leave(b, reactor: 0) == 0)
        #expect(dir.lookup("b") == nil)
        #expect(dir.roomCount == 0)

        let (a2, c) = try #require(dir.join("a", reactor: 1))
        #expect(a2 !== a, "a fresh room object after removal")
        #expect(c == 1)
        #expect(a2.perReactorCount == [0, 1])
        #expect(Self.mask(a2) == 0b10)
        #expect(dir.lookup("a") === a2)
        #expect(dir.roomCount == 1)
        // The old room is detached: its counts stayed at zero.
        #expect(a.memberCount == 0)
    }

    @Test("the directory does not keep removed rooms alive")
    func removedRoomIsFreed() throws {
        let dir = RoomDirectory(reactorCount: 1)
        weak var weakRoom: SharedRoom?
        do {
            let (room, _) = try #require(dir.join("gone", reactor: 0))
            weakRoom = room
            dir.leave(room, reactor: 0)
        }
        #expect(weakRoom == nil)
    }

    @Test("memberCount(_:) and roomCount across several rooms")
    func memberCountAcrossRooms() throws {
        let dir = RoomDirectory(reactorCount: 2)
        var rooms: [String: SharedRoom] = [:]
        for i in 0..<40 {
            let name = "room-\(i)"
            for k in 0...(i % 5) {
                let (r, c) = try #require(dir.join(name, reactor: k % 2))
                rooms[name] = r
                #expect(c == k + 1)
            }
        }
        #expect(dir.roomCount == 40)
        for i in 0..<40 { #expect(dir.memberCount("room-\(i)") == i % 5 + 1, "room-\(i)") }
        #expect(dir.memberCount("room-40") == 0)
        #expect(dir.memberCount("") == 0)
        // Empty the even rooms.
        for i in stride(from: 0, to: 40, by: 2) {
            let name = "room-\(i)"
            let r = try #require(rooms[name])
            for k in 0...(i % 5) { dir.leave(r, reactor: k % 2) }
        }
        #expect(dir.roomCount == 20)
        for i in 0..<40 { #expect(dir.memberCount("room-\(i)") == (i % 2 == 0 ? 0 : i % 5 + 1), "room-\(i)") }
    }

    @Test("reactor 63 uses the top bit of the mask")
    func highReactor() throws {
        let dir = RoomDirectory(reactorCount: 64)
        let (room, _) = try #require(dir.join("wide", reactor: 63))
        _ = try #require(dir.join("wide", reactor: 0))
        #expect(Self.mask(room) == (UInt64(1) << 63) | 1)
        dir.leave(room, reactor: 63)
        #expect(Self.mask(room) == 1)
    }

    @Test("concurrent joins and leaves on different rooms and one shared room keep counts consistent")
    func concurrent() throws {
        let reactors = 4
        let dir = RoomDirectory(reactorCount: reactors)
        let rounds = 2000
        let failures = Atomic<Int>(0)
        let start = Date()
        // Phase 1: every worker (reactor i) churns its own rooms and the shared room, and
        // ends holding `keep` members in "shared" and one in "own-i".
        let keep = 7
        DispatchQueue.concurrentPerform(iterations: reactors) { i in
            var held: [SharedRoom] = []
            for n in 0..<rounds {
                // Own rooms (different stripes / names for each worker).
                let own = "own-\(i)-\(n % 10)"
                if let (r, c) = dir.join(own, reactor: i) {
                    if c < 1 { failures.add(1, ordering: .relaxed) }
                    dir.leave(r, reactor: i)
                } else { failures.add(1, ordering: .relaxed) }
                // Shared room: join two, leave one (this worker's count stays > 0 from here on).
                for _ in 0..<2 {
                    if let (r, c) = dir.join("shared", reactor: i) {
                        if c < 1 || r.name != "shared" { failures.add(1, ordering: .relaxed) }
                        held.append(r)
                    } else { failures.add(1, ordering: .relaxed) }
                }
                if let r = held.popLast() { dir.leave(r, reactor: i) }
                // Rooms that are joined and left by single members keep being recreated.
                if let (r, _) = dir.join("flap", reactor: i) { dir.leave(r, reactor: i) }
            }
            while held.count > keep, let r = held.popLast() { dir.leave(r, reactor: i) }
            _ = dir.join("own-\(i)", reactor: i)
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        let shared = try #require(dir.lookup("shared"))
        #expect(shared.memberCount == reactors * keep)
        #expect(shared.perReactorCount == Array(repeating: keep, count: reactors))
        #expect(Self.mask(shared) == (UInt64(1) << UInt64(reactors)) - 1)
        #expect(dir.lookup("flap") == nil, "every flap join was left")
        #expect(dir.roomCount == 1 + reactors, "shared plus one own-i room per worker; churned rooms are gone")
        for i in 0..<reactors {
            #expect(dir.memberCount("own-\(i)") == 1)
            for n in 0..<10 { #expect(dir.lookup("own-\(i)-\(n)") == nil) }
        }

        // Phase 2: everybody leaves concurrently.
        DispatchQueue.concurrentPerform(iterations: reactors) { i in
            for _ in 0..<keep { dir.leave(shared, reactor: i) }
            if let r = dir.lookup("own-\(i)") { dir.leave(r, reactor: i) } else { failures.add(1, ordering: .relaxed) }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(shared.memberCount == 0)
        #expect(shared.perReactorCount == Array(repeating: 0, count: reactors))
        #expect(Self.mask(shared) == 0)
        #expect(dir.lookup("shared") == nil)
        #expect(dir.roomCount == 0)
        #expect(Date().timeIntervalSince(start) < 5, "should take well under a second")
    }

    @Test("SharedRoom.local(for:) creates one LocalRoom per reactor; dropLocal forgets it")
    func localRooms() {
        let room = SharedRoom(name: "x", reactorCount: 3)
        let l0 = room.local(for: 0)
        #expect(room.local(for: 0) === l0, "created once")
        #expect(l0.shared === room)
        #expect(l0.name == "x")
        #expect(l0.memberCount == 0)
        let l2 = room.local(for: 2)
        #expect(l2 !== l0)
        #expect(room.locals[1] == nil)
        room.dropLocal(for: 0)
        #expect(room.locals[0] == nil)
        #expect(room.local(for: 0) !== l0, "a new LocalRoom after dropLocal")
        #expect(room.local(for: 2) === l2, "other reactors' local rooms are untouched")
    }

    @Test("dropping the LocalRooms breaks the SharedRoom/LocalRoom cycle")
    func localCycleBroken() {
        weak var weakRoom: SharedRoom?
        do {
            let room = SharedRoom(name: "cyc", reactorCount: 2)
            weakRoom = room
            _ = room.local(for: 0)
            _ = room.local(for: 1)
            room.dropLocal(for: 0)
            room.dropLocal(for: 1)
        }
        #expect(weakRoom == nil)
    }

    @Test("LocalRoom add/remove: membership, swap-with-last removal, unknown member ignored")
    func localMembers() {
        let room = SharedRoom(name: "m", reactorCount: 1)
        let local = room.local(for: 0)
        let conns = (0..<4).map { Connection(fd: -1, slot: $0, peerIP: 0, now: 0, burst: 1) }
        for c in conns { local.add(c) }
        #expect(local.memberCount == 4)
        func slots() -> [Int32] { local.memberRefs.map { $0.takeUnretainedValue().slot } }
        #expect(slots() == [0, 1, 2, 3])
        local.remove(conns[1])
        #expect(slots() == [0, 3, 2], "the last member takes the removed one's place")
        let stranger = Connection(fd: -1, slot: 99, peerIP: 0, now: 0, burst: 1)
        local.remove(stranger)
        #expect(slots() == [0, 3, 2], "removing a non-member changes nothing")
        local.remove(conns[2])
        local.remove(conns[0])
        local.remove(conns[3])
        #expect(local.memberCount == 0)
        local.remove(conns[3])
        #expect(local.memberCount == 0)
        withExtendedLifetime(conns) {}
        withExtendedLifetime(stranger) {}
    }
}
