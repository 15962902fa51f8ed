// RoomLog on its own: offsets, the byte ring's wrap and growth, eviction bounds and cursors.

import Testing
@testable import UringServer
import Primitives

@Suite("RoomLog")
struct RoomLogTests {
    private func line(_ i: Int) -> [UInt8] {
        Array("{\"type\":\"chat\",\"text\":\"\(String(repeating: "x", count: (i * 37) % 300))\"".utf8)
    }

    private func copyAll(_ log: RoomLog, from: Int) -> [String] {
        let out = LogCopy()
        _ = log.withLock { log.copyLocked(from: from, through: .max, into: out) }
        return (0..<out.count).map { String(decoding: out.line($0), as: UTF8.self) }
    }

    @Test("offsets count from 1; lines come back with their offset, across wraps and growth")
    func appendAndCopy() {
        let log = RoomLog(reactorCount: 2)
        #expect(log.epoch.count == 12)
        let limits = HistoryLimits(size: 20, ttlSeconds: 300, maxBytesPerRoom: 1 << 20)
        for i in 1...500 {
            let n = line(i).withUnsafeBytes { b in
                log.withLock { () -> Int in
                    let n = log.appendLocked(b, origin: 1_000_000_000, keep: limits.size)
                    _ = log.evictLocked(limits, nowSecond: 1, overBudget: false)
                    return n
                }
            }
            #expect(n == i)
            // Lines of 0-300 bytes outgrow a ring sized for the average while it has wrapped:
            // every resize must keep each entry's bytes where its header says.
            if i % 7 == 0 {
                #expect(copyAll(log, from: 0) == (log.first...log.last).map { String(decoding: line($0), as: UTF8.self) + ",\"offset\":\($0)}" })
            }
        }
        #expect(log.first == 481 && log.last == 500)
        let got = copyAll(log, from: 0)
        #expect(got == (481...500).map { String(decoding: line($0), as: UTF8.self) + ",\"offset\":\($0)}" })
    }

    @Test("a ring that has wrapped grows for a lagging reactor with every line where its header says")
    func growthAfterWrap() {
        let log = RoomLog(reactorCount: 2)
        let limits = HistoryLimits(size: 4, ttlSeconds: 300, maxBytesPerRoom: 1 << 20)
        func append(_ i: Int) {
            _ = line(i).withUnsafeBytes { b in
                log.withLock { () -> Int in
                    let n = log.appendLocked(b, origin: 1_000_000_000, keep: limits.size)
                    _ = log.evictLocked(limits, nowSecond: 1, overBudget: false)
                    return n
                }
            }
        }
        for i in 1...60 { append(i) }   // the ring wraps many times (history of 4)
        _ = log.withLock { log.attachLocked(1) }   // from here reactor 1 lags: nothing evicted
        for i in 61...400 {
            append(i)
            if i % 5 == 0 {
                #expect(copyAll(log, from: 0) == (log.first...log.last).map { String(decoding: line($0), as: UTF8.self) + ",\"offset\":\($0)}" })
            }
        }
        #expect(log.first == 61 && log.last == 400, "reactor 1 has delivered through 60 only")
    }

    @Test("an attached reactor's cursor holds entries past every bound; detaching lets them go")
    func cursorsHoldEntries() {
        let log = RoomLog(reactorCount: 2)
        let limits = HistoryLimits(size: 0, ttlSeconds: 1, maxBytesPerRoom: 0)
        _ = log.withLock { log.attachLocked(1) }   // reactor 1 delivered nothing yet
        for i in 1...300 {
            _ = line(i).withUnsafeBytes { b in
                log.withLock { () -> Int in
                    let n = log.appendLocked(b, origin: 5_000_000_000, keep: limits.size)
                    _ = log.evictLocked(limits, nowSecond: 100, overBudget: true)
                    return n
                }
            }
        }
        #expect(log.storedCount == 300, "reactor 1 has not delivered them")
        #expect(copyAll(log, from: 1).count == 300)
        log.withLock { log.setCursorLocked(1, 200) }
        let (ev, early, _) = log.withLock { log.evictLocked(limits, nowSecond: 100, overBudget: false) }
        #expect(ev == 200 && early == 0 && log.first == 201)
        log.withLock { log.detachLocked(1); _ = log.evictLocked(limits, nowSecond: 100, overBudget: false); log.shrinkLocked() }
        #expect(log.storedCount == 0 && log.accountedBytes == 0)
        #expect(log.capacityBytes <= 2048 + 16 * RoomLog.entryOverhead)
    }

    @Test("bounds: bytes per room evict early (counted), TTL by append second, a later stamp is not expired")
    func bounds() {
        let log = RoomLog(reactorCount: 1)
        let limits = HistoryLimits(size: 100, ttlSeconds: 10, maxBytesPerRoom: 2000)
        var early = 0
        for i in 1...50 {
            line(i).withUnsafeBytes { b in
                log.withLock {
                    _ = log.appendLocked(b, origin: 20_000_000_000, keep: limits.size)
                    early += log.evictLocked(limits, nowSecond: 20, overBudget: false).1
                }
            }
        }
        #expect(log.accountedBytes <= 2000 && early == 50 - log.storedCount && early > 0)
        // Stamped second 20, read at 19 (another thread's clock was ahead): kept.
        #expect(log.withLock { log.evictLocked(limits, nowSecond: 19, overBudget: false).0 } == 0)
        #expect(log.withLock { log.evictLocked(limits, nowSecond: 30, overBudget: false).0 } > 0)
        #expect(log.storedCount == 0)
    }
}
