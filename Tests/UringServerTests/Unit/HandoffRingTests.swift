// Unit tests for HandoffRing (Sources/UringServer/Server/HandoffRing.swift), the SPSC byte ring
// that carries room messages between reactors. Records are
// [u32 size][u32 len][u64 room][u64 origin][body][pad to 8], so a body of L bytes takes
// (24 + L + 7) & ~7 bytes of the ring; the numbers below are derived from that layout.

import Foundation
import Testing
@testable import UringServer

@Suite("HandoffRing")
struct HandoffRingTests {
    /// Ring bytes one record with a body of `len` bytes occupies.
    static func recordSize(_ len: Int) -> Int { (24 + len + 7) & ~7 }

    /// A body whose bytes depend on `seed`, so a record read back can be checked byte by byte.
    static func body(_ len: Int, seed: Int) -> [UInt8] {
        (0..<len).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) }
    }

    @discardableResult
    static func write(_ ring: HandoffRing, _ room: SharedRoom, origin: UInt64, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { ring.tryWrite(room: room, origin: origin, body: $0) }
    }

    struct Record { let room: SharedRoom; let origin: UInt64; let body: [UInt8] }

    static func drainAll(_ ring: HandoffRing) -> (Int, [Record]) {
        var out: [Record] = []
        let n = ring.drain { room, origin, body in out.append(Record(room: room, origin: origin, body: Array(body))) }
        return (n, out)
    }

    @Test("records come out in order with their room, origin and body")
    func inOrder() {
        let ring = HandoffRing(capacity: 4096)
        let a = SharedRoom(name: "a", reactorCount: 2)
        let b = SharedRoom(name: "b", reactorCount: 2)
        let rooms = [a, b, a, b, b, a]
        for (i, room) in rooms.enumerated() {
            #expect(Self.write(ring, room, origin: UInt64(1000 + i), Self.body(10 * i + 1, seed: i)))
        }
        let (n, recs) = Self.drainAll(ring)
        #expect(n == rooms.count)
        #expect(recs.count == rooms.count)
        for (i, r) in recs.enumerated() where i < rooms.count {
            #expect(r.room === rooms[i], "record \(i) room")
            #expect(r.origin == UInt64(1000 + i), "record \(i) origin")
            #expect(r.body == Self.body(10 * i + 1, seed: i), "record \(i) body")
        }
        // Nothing left: a second drain delivers nothing.
        #expect(Self.drainAll(ring).0 == 0)
    }

    @Test("an empty body and an origin using all 64 bits round-trip")
    func emptyBodyAndWideOrigin() {
        let ring = HandoffRing(capacity: 4096)
        let room = SharedRoom(name: "r", reactorCount: 1)
        #expect(ring.tryWrite(room: room, origin: .max, body: UnsafeRawBufferPointer(start: nil, count: 0)))
        #expect(Self.write(ring, room, origin: 0x8000_0000_0000_0001, [0xFF]))
        let (n, recs) = Self.drainAll(ring)
        #expect(n == 2)
        #expect(recs.map(\.origin) == [.max, 0x8000_0000_0000_0001])
        #expect(recs.map(\.body) == [[], [0xFF]])
    }

    @Test("tryWrite returns false when full and succeeds again after a drain")
    func fullThenDrain() {
        let ring = HandoffRing(capacity: 4096)
        let room = SharedRoom(name: "r", reactorCount: 1)
        // 1000-byte bodies take 1024 ring bytes: exactly four fill the ring.
        #expect(Self.recordSize(1000) == 1024)
        for i in 0..<4 { #expect(Self.write(ring, room, origin: UInt64(i), Self.body(1000, seed: i)), "write \(i)") }
        #expect(!Self.write(ring, room, origin: 9, Self.body(1000, seed: 9)), "a fifth record must not fit")
        #expect(!Self.write(ring, room, origin: 9, []), "not even an empty one (24 bytes)")
        let (n, recs) = Self.drainAll(ring)
        #expect(n == 4)
        #expect(recs.map(\.origin) == [0, 1, 2, 3], "the refused writes left nothing behind")
        #expect(Self.write(ring, room, origin: 5, Self.body(1000, seed: 5)))
        let (n2, recs2) = Self.drainAll(ring)
        #expect(n2 == 1)
        #expect(recs2.first?.body == Self.body(1000, seed: 5))
    }

    @Test("a record that does not fit before the end becomes padding and wraps to the start")
    func paddingAndWrap() {
        let ring = HandoffRing(capacity: 4096)     // maxBody 1024
        let room = SharedRoom(name: "r", reactorCount: 1)
        #expect(Self.recordSize(488) == 512)
        // Three 1024-byte records and a 512-byte one, drained: head = tail = 3584, 512 bytes
        // left before the end of the storage.
        for i in 0..<3 { #expect(Self.write(ring, room, origin: UInt64(i), Self.body(1000, seed: i))) }
        #expect(Self.write(ring, room, origin: 3, Self.body(488, seed: 3)))
        #expect(Self.drainAll(ring).0 == 4)
        // A 1024-byte record does not fit in the last 512: 512 bytes of padding, then the
        // record at offset 0 (tail = 3584 + 512 + 1024 = 5120).
        #expect(Self.write(ring, room, origin: 10, Self.body(1000, seed: 10)))
        // Used: 512 padding + 1024 = 1536; free 2560, contiguous from offset 1024 to 3584.
        #expect(Self.write(ring, room, origin: 11, Self.body(1000, seed: 11)))
        #expect(Self.write(ring, room, origin: 12, Self.body(1000, seed: 12)))
        // 512 bytes free now: one byte more than a 512-byte record is refused (padding counts).
        #expect(!Self.write(ring, room, origin: 13, Self.body(489, seed: 13)), "520 bytes > 512 free")
        #expect(Self.write(ring, room, origin: 13, Self.body(488, seed: 13)), "exactly the free space")
        #expect(!Self.write(ring, room, origin: 14, []), "ring exactly full")
        let (n, recs) = Self.drainAll(ring)
        #expect(n == 4, "padding is not delivered as a record")
        #expect(recs.map(\.origin) == [10, 11, 12, 13])
        #expect(recs.map(\.body) == [Self.body(1000, seed: 10), Self.body(1000, seed: 11),
                                     Self.body(1000, seed: 12), Self.body(488, seed: 13)])
        #expect(recs.allSatisfy { $0.room === room })
        // Empty again: a maximal record fits.
        #expect(Self.write(ring, room, origin: 15, Self.body(ring.maxBody, seed: 15)))
        #expect(Self.drainAll(ring).1.first?.body == Self.body(ring.maxBody, seed: 15))
    }

    @Test("a wrapping record is refused when padding plus record exceed the free space")
    func wrapNeedsContiguousSpace() {
        let ring = HandoffRing(capacity: 4096)
        let room = SharedRoom(name: "r", reactorCount: 1)
        // head = 1024 after draining one record; tail = 3584: 1536 bytes free in total, 512
        // before the end and 1024 at the start.
        #expect(Self.write(ring, room, origin: 0, Self.body(1000, seed: 0)))
        #expect(Self.drainAll(ring).0 == 1)
        #expect(Self.write(ring, room, origin: 1, Self.body(1000, seed: 1)))
        #expect(Self.write(ring, room, origin: 2, Self.body(1000, seed: 2)))
        #expect(Self.write(ring, room, origin: 3, Self.body(488, seed: 3)))
        // 1040 bytes <= 1536 free, but it needs 512 padding + 1040 = 1552.
        #expect(Self.recordSize(1016) == 1040)
        #expect(!Self.write(ring, room, origin: 4, Self.body(1016, seed: 4)))
        // A record that fits the 512 bytes before the end exactly needs no padding.
        #expect(Self.write(ring, room, origin: 5, Self.body(488, seed: 5)))
        let (n, recs) = Self.drainAll(ring)
        #expect(n == 4)
        #expect(recs.map(\.origin) == [1, 2, 3, 5])
        #expect(recs.map(\.body) == [Self.body(1000, seed: 1), Self.body(1000, seed: 2),
                                     Self.body(488, seed: 3), Self.body(488, seed: 5)])
        // Now head = tail = 4096 (offset 0): the refused record fits.
        #expect(Self.write(ring, room, origin: 4, Self.body(1016, seed: 4)))
        #expect(Self.drainAll(ring).1.map(\.body) == [Self.body(1016, seed: 4)])
    }

    @Test("many records of varying sizes across many wrap-arounds, drained at varying points")
    func manyAcrossWraps() {
        let ring = HandoffRing(capacity: 4096)
        let rooms = (0..<3).map { SharedRoom(name: "room\($0)", reactorCount: 1) }
        var next = 0          // next sequence number to write
        var expected = 0      // next sequence number to read
        var refusals = 0
        var written = 0       // ring bytes of accepted records (excluding padding)
        var rng = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        var state = seed
        func rand(_ n: Int) -> Int {   // xorshift, so a failure can be reproduced from the seed
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(state % UInt64(n))
        }
        func lenOf(_ seq: Int) -> Int { (seq &* 2654435761) % (ring.maxBody + 1) }
        while next < 5000 {
            // Write a burst until refused (or a random burst length).
            let burst = 1 + rand(12)
            for _ in 0..<burst {
                let len = lenOf(next)
                if Self.write(ring, rooms[next % 3], origin: UInt64(next), Self.body(len, seed: next)) {
                    written += Self.recordSize(len)
                    next += 1
                } else {
                    refusals += 1
                    break
                }
            }
            var bad = 0
            let n = ring.drain { room, origin, body in
                let seq = expected
                if origin != UInt64(seq) || room !== rooms[seq % 3] || Array(body) != Self.body(lenOf(seq), seed: seq) {
                    bad += 1
                }
                expected += 1
            }
            #expect(bad == 0, "corrupt or out-of-order records (xorshift seed \(seed))")
            #expect(expected == next, "drain delivered \(n) records; every written record must come out")
            if bad > 0 || expected != next { return }
        }
        #expect(written > 20 * ring.capacity, "the test wrapped the ring many times")
        #expect(refusals > 0, "bursts did hit a full ring")
    }

    @Test("concurrent producer and consumer threads: every record arrives once, in order")
    func spscThreads() {
        let ring = HandoffRing(capacity: 4096)
        let room = SharedRoom(name: "r", reactorCount: 2)
        let total = 20_000
        let producer = Thread {
            var i = 0
            var body = [UInt8](repeating: 0, count: 64)
            while i < total {
                let len = i % 65
                for k in 0..<len { body[k] = UInt8(truncatingIfNeeded: i &+ k) }
                let ok = body.withUnsafeBytes { ring.tryWrite(room: room, origin: UInt64(i), body: UnsafeRawBufferPointer(rebasing: $0[0..<len])) }
                if ok { i += 1 } else { sched_yield() }
            }
        }
        producer.start()
        var got = 0
        var bad = 0
        let deadline = Date().addingTimeInterval(20)
        while got < total && Date() < deadline {
            let n = ring.drain { r, origin, body in
                let len = got % 65
                if r !== room || origin != UInt64(got) || body.count != len
                    || !body.enumerated().allSatisfy({ $0.element == UInt8(truncatingIfNeeded: got &+ $0.offset) }) {
                    bad += 1
                }
                got += 1
            }
            if n == 0 { sched_yield() }
        }
        #expect(got == total)
        #expect(bad == 0)
        while !producer.isFinished { sched_yield() }
    }

    @Test("bodies larger than maxBody are refused without retaining the room")
    func maxBody() {
        let ring = HandoffRing(capacity: 8192)
        #expect(ring.maxBody == 2048)
        weak var weakRoom: SharedRoom?
        do {
            let room = SharedRoom(name: "big", reactorCount: 1)
            weakRoom = room
            #expect(!Self.write(ring, room, origin: 1, Self.body(ring.maxBody + 1, seed: 1)))
            #expect(!Self.write(ring, room, origin: 1, Self.body(10_000, seed: 1)))
        }
        #expect(weakRoom == nil, "a refused write must not retain the room")
        #expect(Self.drainAll(ring).0 == 0, "a refused write leaves no record")
        let room = SharedRoom(name: "ok", reactorCount: 1)
        #expect(Self.write(ring, room, origin: 2, Self.body(ring.maxBody, seed: 2)), "exactly maxBody is accepted")
        #expect(Self.drainAll(ring).1.first?.body == Self.body(ring.maxBody, seed: 2))
    }

    /// Writes two records for a fresh room and returns a weak reference to it.
    static func writeFreshRoom(_ ring: HandoffRing) -> () -> SharedRoom? {
        let room = SharedRoom(name: "tmp", reactorCount: 1)
        weak let w = room
        _ = write(ring, room, origin: 1, [1, 2, 3])
        _ = write(ring, room, origin: 2, [4])
        return { w }
    }

    @Test("records retain their room until drained, then release it")
    func releasedAfterDrain() {
        let ring = HandoffRing(capacity: 4096)
        let weakRoom = Self.writeFreshRoom(ring)
        #expect(weakRoom() != nil, "the ring keeps the room alive while records are pending")
        var names: [String] = []
        #expect(ring.drain { room, _, _ in names.append(room.name) } == 2)
        #expect(names == ["tmp", "tmp"])
        #expect(weakRoom() == nil, "both retains are released after the drain")
    }

    @Test("deinit of a ring with unconsumed records releases their rooms")
    func releasedByDeinit() {
        var ring: HandoffRing? = HandoffRing(capacity: 4096)
        let weakRoom = Self.writeFreshRoom(ring!)
        #expect(weakRoom() != nil)
        ring = nil
        #expect(weakRoom() == nil, "deinit drains and releases unconsumed records' rooms")
    }

    @Test("deinit also releases rooms of records that wrapped behind padding")
    func releasedByDeinitAfterWrap() {
        var ring: HandoffRing? = HandoffRing(capacity: 4096)
        let keep = SharedRoom(name: "keep", reactorCount: 1)
        for i in 0..<3 { #expect(Self.write(ring!, keep, origin: UInt64(i), Self.body(1000, seed: i))) }
        #expect(Self.write(ring!, keep, origin: 3, Self.body(488, seed: 3)))
        #expect(Self.drainAll(ring!).0 == 4)
        weak var weakRoom: SharedRoom?
        do {
            let room = SharedRoom(name: "wrapped", reactorCount: 1)
            weakRoom = room
            #expect(Self.write(ring!, room, origin: 9, Self.body(1000, seed: 9)))   // padding + wrap
        }
        #expect(weakRoom != nil)
        ring = nil
        #expect(weakRoom == nil)
    }
}
