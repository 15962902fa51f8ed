// Unit tests for PipeLayout (Sources/UringServer/IO/SplicePipes.swift): the per-member record of
// the batches in a splice pipe, used to know how many of the pipe's page slots are in use.
// PipeLayout is pure bookkeeping (no kernel pipe is involved), so it is tested directly.

import Testing
@testable import UringServer

@Suite("PipeLayout")
struct PipeLayoutTests {
    static let page = SplicePipes.pageSize

    /// Runs `body` with a fresh layout and frees it afterwards.
    static func with(_ body: (inout PipeLayout) throws -> Void) rethrows {
        var l = PipeLayout()
        defer { l.deallocate() }
        try body(&l)
    }

    @Test("a fresh layout is empty")
    func fresh() {
        Self.with { l in
            #expect(l.bytes == 0)
            #expect(l.slotsInUse == 0)
            #expect(!l.isFull)
        }
    }

    @Test("added batches count their bytes and whole pages")
    func addedBatches() {
        Self.with { l in
            l.added(1)
            #expect(l.bytes == 1)
            #expect(l.slotsInUse == 1, "a partial page takes a slot")
            l.added(Self.page)
            #expect(l.bytes == 1 + Self.page)
            #expect(l.slotsInUse == 2, "batches never share a page")
            l.added(Self.page + 1)
            #expect(l.bytes == 2 + 2 * Self.page)
            #expect(l.slotsInUse == 4)
            l.added(10 * Self.page)
            #expect(l.slotsInUse == 14)
        }
    }

    @Test("consuming part of the oldest batch frees only its fully consumed pages")
    func partialConsume() {
        Self.with { l in
            l.added(3 * Self.page + 100)    // 4 pages
            l.added(500)                     // 1 page
            #expect(l.slotsInUse == 5)
            l.consumed(100)
            #expect(l.bytes == 3 * Self.page + 500)
            #expect(l.slotsInUse == 5, "page 1 is only partly taken")
            l.consumed(Self.page - 100)
            #expect(l.slotsInUse == 4, "page 1 fully taken")
            l.consumed(2 * Self.page)
            #expect(l.slotsInUse == 2)
            #expect(l.bytes == 100 + 500)
            l.consumed(99)
            #expect(l.slotsInUse == 2, "one byte left in the first batch's last page")
            l.consumed(1)
            #expect(l.slotsInUse == 1, "first batch done: only the second batch's page")
            #expect(l.bytes == 500)
            l.consumed(500)
            #expect(l.slotsInUse == 0)
            #expect(l.bytes == 0)
        }
    }

    @Test("one consume spanning several batches")
    func consumeAcrossBatches() {
        Self.with { l in
            l.added(5000)   // 2 pages
            l.added(5000)   // 2 pages
            l.added(100)    // 1 page
            #expect(l.slotsInUse == 5)
            l.consumed(6000)   // all of batch 1, 1000 bytes into batch 2's first page
            #expect(l.bytes == 4100)
            #expect(l.slotsInUse == 3, "batch 2's first page is partly taken, so still in use")
            l.consumed(3096)   // batch 2 at 4096 bytes: its first page is done
            #expect(l.slotsInUse == 2)
            l.consumed(1004)   // rest of batch 2 and all of batch 3
            #expect(l.bytes == 0)
            #expect(l.slotsInUse == 0)
            // Everything consumed at once.
            l.added(3 * Self.page)
            l.added(1)
            l.consumed(3 * Self.page + 1)
            #expect(l.bytes == 0)
            #expect(l.slotsInUse == 0)
        }
    }

    @Test("isFull after maxBatches batches; consuming one batch makes room")
    func capacity() {
        Self.with { l in
            #expect(PipeLayout.maxBatches == 64)
            for i in 0..<PipeLayout.maxBatches {
                #expect(!l.isFull, "before batch \(i)")
                l.added(10)
            }
            #expect(l.isFull)
            #expect(l.bytes == 640)
            #expect(l.slotsInUse == 64)
            l.consumed(9)
            #expect(l.isFull, "a partly consumed batch still holds its entry")
            l.consumed(1)
            #expect(!l.isFull)
            #expect(l.slotsInUse == 63)
            l.added(20)
            #expect(l.isFull)
            #expect(l.bytes == 630 + 20)
            // Drain everything, in odd-sized pieces.
            var left = l.bytes
            while left > 0 {
                let n = min(left, 37)
                l.consumed(n)
                left -= n
                #expect(l.bytes == left)
            }
            #expect(l.slotsInUse == 0)
            #expect(!l.isFull)
        }
    }

    @Test("the batch ring wraps: hundreds of batches through the 64 entries stay consistent")
    func wrapAround() {
        Self.with { l in
            // Model: the sizes of the batches still present and bytes consumed of the first.
            var model: [Int] = []
            var consumedOfHead = 0
            func modelSlots() -> Int {
                model.reduce(0) { $0 + SplicePipes.pages($1) } - consumedOfHead / Self.page
            }
            var next = 1
            for step in 0..<2000 {
                // Add a few batches while there is an entry free, then consume some bytes.
                for _ in 0..<(step % 4) where !l.isFull {
                    let size = (next &* 7919) % (5 * Self.page) + 1
                    next += 1
                    l.added(size)
                    model.append(size)
                }
                let total = model.reduce(0, +) - consumedOfHead
                var take = total == 0 ? 0 : (step &* 104_729) % (total + 1)
                l.consumed(take)
                while take > 0 {
                    let inHead = model[0] - consumedOfHead
                    if take >= inHead { take -= inHead; model.removeFirst(); consumedOfHead = 0 }
                    else { consumedOfHead += take; take = 0 }
                }
                #expect(l.bytes == model.reduce(0, +) - consumedOfHead, "step \(step)")
                #expect(l.slotsInUse == modelSlots(), "step \(step)")
                #expect(l.isFull == (model.count == PipeLayout.maxBatches), "step \(step)")
                if l.bytes != model.reduce(0, +) - consumedOfHead || l.slotsInUse != modelSlots() { return }
            }
            #expect(next > 3 * PipeLayout.maxBatches, "the ring wrapped several times")
        }
    }

    @Test("reset forgets everything")
    func reset() {
        Self.with { l in
            for _ in 0..<PipeLayout.maxBatches { l.added(5000) }
            l.consumed(7000)
            #expect(l.isFull == false)
            l.reset()
            #expect(l.bytes == 0)
            #expect(l.slotsInUse == 0)
            #expect(!l.isFull)
            l.added(100)
            l.consumed(100)
            #expect(l.bytes == 0)
            #expect(l.slotsInUse == 0)
        }
    }
}
