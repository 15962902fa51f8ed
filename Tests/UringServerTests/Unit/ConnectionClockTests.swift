// Connection timestamps are wrapping UInt32 milliseconds (Connection.ms / stampMs / elapsedMs).
// A stamp must never read as "49 days ago": a stamp taken in the same millisecond as `now`, or
// one later than the caller's clock read, is 0 ms old.

import Testing
@testable import UringServer

@Suite("Connection clock stamps")
struct ConnectionClockTests {
    @Test("a stamp is never in the future of the same clock reading, and never 0")
    func stampNotAhead() {
        for nanos: UInt64 in [0, 1, 999_999, 1_000_000, 2_000_000, 2_999_999, 1_234_567_890_123,
                              UInt64(UInt32.max) * 1_000_000, UInt64(UInt32.max) * 1_000_000 + 1_000_000] {
            let s = Connection.stampMs(nanos)
            #expect(s != 0, "stamp of \(nanos) ns")
            #expect(Connection.elapsedMs(s, nanos) == 0, "stamp of \(nanos) ns is \(Connection.elapsedMs(s, nanos)) ms old at once")
        }
    }

    @Test("elapsed milliseconds across the 32-bit wrap, and 0 for a stamp later than now")
    func elapsed() {
        let before = UInt64(UInt32.max) * 1_000_000          // 1 ms before the wrap
        let after = before + 5_000_000                        // 4 ms after it
        #expect(Connection.elapsedMs(Connection.ms(before), after) == 5)
        #expect(Connection.elapsedMs(Connection.ms(after), before) == 0, "a later stamp is not 49 days old")
        #expect(Connection.elapsedMs(Connection.ms(0), 240_000_000_000) == 240_000)
    }
}
