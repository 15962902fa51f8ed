/// The connections a backend has operations for, by the reactor's slot number. A backend tag
/// (io_uring user_data, epoll data) packs the operation kind, the slot and the connection's
/// generation, as liburing's examples/proxy.c packs an index and an op, never a raw pointer: a
/// tag from a connection that is gone — even one whose slot now holds another connection — no
/// longer matches and is dropped, whatever happened to the memory.
///
/// The generation lives in the connection record (`Connection.generation`, in padding the
/// record had anyway), so the table costs one reference per slot.
struct SlotTable {
    private var entries: [Unmanaged<Connection>?] = []
    /// The next generation handed out (24 bits; a stale tag would have to meet its slot again
    /// exactly 16,777,216 registrations later to be mistaken).
    private var nextGeneration: UInt32 = 1

    /// Tag layout: bits 0–7 the operation, 8–31 the generation (24 bits), 32–63 the slot.
    @inline(__always)
    static func tag(slot: Int32, generation: UInt32, op: UInt8) -> UInt64 {
        UInt64(UInt32(bitPattern: slot)) << 32 | UInt64(generation & 0xFF_FFFF) << 8 | UInt64(op)
    }
    @inline(__always)
    static func op(_ tag: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: tag) }

    /// Starts tracking `c` (a new connection in its slot) under a fresh generation.
    mutating func register(_ c: Connection) {
        let slot = Int(c.slot)
        if slot >= entries.count { entries.append(contentsOf: repeatElement(nil, count: slot + 1 - entries.count)) }
        c.generation = nextGeneration
        nextGeneration = (nextGeneration &+ 1) & 0xFF_FFFF
        entries[slot] = Unmanaged.passUnretained(c)
    }

    /// Stops tracking `c`: later tags naming it resolve to nil.
    mutating func unregister(_ c: Connection) {
        let slot = Int(c.slot)
        guard slot < entries.count, entries[slot]?.toOpaque() == Unmanaged.passUnretained(c).toOpaque() else { return }
        entries[slot] = nil
    }

    /// The tag for operation `op` on `c`.
    @inline(__always)
    func tag(_ c: Connection, _ op: UInt8) -> UInt64 {
        Self.tag(slot: c.slot, generation: c.generation, op: op)
    }

    /// The connection a tag names, or nil when it is gone (a stale completion).
    @inline(__always)
    func connection(_ tag: UInt64) -> Connection? {
        let slot = Int(tag >> 32)
        guard slot < entries.count, let e = entries[slot] else { return nil }
        let c = e.takeUnretainedValue()
        return c.generation == UInt32(truncatingIfNeeded: tag >> 8) & 0xFF_FFFF ? c : nil
    }

    /// Every connection still tracked.
    func forEach(_ body: (Connection) -> Void) {
        for e in entries { if let c = e { body(c.takeUnretainedValue()) } }
    }
}
