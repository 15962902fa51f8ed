// SlotTable (Kernel/SlotTable.swift): the tags backends put in io_uring user_data and epoll
// data name a slot, its generation and an operation. A tag resolves to its connection only
// while that connection holds the slot: after an unregister, or once the slot holds a newer
// connection, the old tag resolves to nil (a stale completion is dropped, never misrouted).

import Testing
@testable import UringServer

@Suite("SlotTable")
struct SlotTableTests {
    private func connection(slot: Int) -> Connection {
        Connection(fd: -1, slot: slot, peerIP: 0, now: 1_000_000, burst: 1)
    }

    @Test("a tag packs op, generation and slot, and resolves to its connection")
    func packing() {
        var table = SlotTable()
        let c = connection(slot: 7)
        table.register(c)
        let tag = table.tag(c, 5)
        #expect(SlotTable.op(tag) == 5)
        #expect(tag >> 32 == 7)
        #expect(table.connection(tag) === c)
        // Every op of the same connection resolves; the op byte does not take part.
        #expect(table.connection(table.tag(c, 200)) === c)
    }

    @Test("after unregister the connection's tags resolve to nil")
    func unregistered() {
        var table = SlotTable()
        let c = connection(slot: 0)
        table.register(c)
        let tag = table.tag(c, 1)
        table.unregister(c)
        #expect(table.connection(tag) == nil)
    }

    @Test("a slot reused by a new connection: the old connection's tags are stale")
    func reusedSlot() {
        var table = SlotTable()
        let old = connection(slot: 3)
        table.register(old)
        let oldTag = table.tag(old, 2)
        table.unregister(old)
        let new = connection(slot: 3)
        table.register(new)
        let newTag = table.tag(new, 2)
        #expect(oldTag != newTag)
        #expect(table.connection(oldTag) == nil)
        #expect(table.connection(newTag) === new)
        // Unregistering the old record again (a late duplicate) leaves the new one alone.
        table.unregister(old)
        #expect(table.connection(newTag) === new)
    }

    @Test("tags for slots never registered, or beyond the table, resolve to nil")
    func unknownSlots() {
        var table = SlotTable()
        let c = connection(slot: 2)
        table.register(c)
        #expect(table.connection(SlotTable.tag(slot: 1, generation: 0, op: 1)) == nil)
        #expect(table.connection(SlotTable.tag(slot: 1_000, generation: 1, op: 1)) == nil)
    }

    @Test("each registration of a slot gets a new generation")
    func generationWrap() {
        var table = SlotTable()
        var tags: [UInt64] = []
        var last: Connection?
        for _ in 0..<3 {
            let c = connection(slot: 0)
            table.register(c)
            tags.append(table.tag(c, 1))
            table.unregister(c)
            last = c
        }
        #expect(Set(tags).count == 3)
        #expect(tags.allSatisfy { table.connection($0) == nil })
        withExtendedLifetime(last) {}
    }

    @Test("forEach visits exactly the registered connections")
    func visiting() {
        var table = SlotTable()
        let a = connection(slot: 0), b = connection(slot: 4), c = connection(slot: 9)
        for x in [a, b, c] { table.register(x) }
        table.unregister(b)
        var seen: [Int32] = []
        table.forEach { seen.append($0.slot) }
        #expect(seen == [0, 9])
    }
}
