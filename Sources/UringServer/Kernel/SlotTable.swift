/// The connections a backend has operations for, by the reactor's slot number, each with a
/// generation that changes whenever the slot gets a new connection. A backend tag (io_uring
/// user_data, epoll data) packs the operation kind, the generation and the slot, as liburing's
/// examples/proxy.c packs an index and an op, never a raw pointer: a tag from a connection that
/// is gone no longer matches and is dropped, whatever happened to the memory.
struct SlotTable {
    private struct Entry {
        var connection: Unmanaged<Connection>?
        var generation: UInt32 = 0
    }
    private var entries: [Entry] = []

    /// Tag layout: bits 0–7 the operation, 8–31 the generation (24 bits), 32–63 the slot.
    @inline(__always)
    static func tag(slot: Int32, generation: UInt32, op: UInt8) -> UInt64 {
        UInt64(UInt32(bitPattern: slot)) << 32 | UInt64(generation & 0xFF_FFFF) << 8 | UInt64(op)
    }
    @inline(__always)
    static func op(_ tag: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: tag) }

    /// Starts tracking `c` (a new connection in its slot).
    mutating func register(_ c: Connection) {
        let slot = Int(c.slot)
        if slot >= entries.count { entries.append(contentsOf: repeatElement(Entry(), count: slot + 1 - entries.count)) }
        entries[slot].generation = (entries[slot].generation &+ 1) & 0xFF_FFFF
        entries[slot].connection = Unmanaged.passUnretained(c)
    }

    /// Stops tracking `c`: later tags naming it resolve to nil.
    mutating func unregister(_ c: Connection) {
        let slot = Int(c.slot)
        guard slot < entries.count, entries[slot].connection?.toOpaque() == Unmanaged.passUnretained(c).toOpaque() else { return }
        entries[slot].connection = nil
    }

    /// The tag for operation `op` on `c`.
    @inline(__always)
    func tag(_ c: Connection, _ op: UInt8) -> UInt64 {
        Self.tag(slot: c.slot, generation: entries[Int(c.slot)].generation, op: op)
    }

    /// The connection a tag names, or nil when it is gone (a stale completion).
    @inline(__always)
    func connection(_ tag: UInt64) -> Connection? {
        let slot = Int(tag >> 32)
        guard slot < entries.count else { return nil }
        let e = entries[slot]
        guard let c = e.connection, e.generation == UInt32(truncatingIfNeeded: tag >> 8) & 0xFF_FFFF else { return nil }
        return c.takeUnretainedValue()
    }

    /// Every connection still tracked.
    func forEach(_ body: (Connection) -> Void) {
        for e in entries { if let c = e.connection { body(c.takeUnretainedValue()) } }
    }
}
