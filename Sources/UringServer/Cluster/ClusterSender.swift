/// Names the connection that sent a cluster chat line, across threads and through Redis: the
/// reactor, the connection's slot and its slot generation (a stale name resolves to nothing,
/// see SlotTable). Packed in 64 bits: reactor + 1 in bits 56–63 (0: no sender), slot in
/// 24–55, generation in 0–23.
enum ClusterSender {
    static func pack(reactor: Int, slot: Int32, generation: UInt32) -> UInt64 {
        UInt64(reactor + 1) << 56 | UInt64(UInt32(bitPattern: slot)) << 24 | UInt64(generation & 0xFF_FFFF)
    }

    static func unpack(_ tag: UInt64) -> (reactor: Int, slot: Int, generation: UInt32)? {
        let r = Int(tag >> 56)
        guard r > 0 else { return nil }
        return (r - 1, Int((tag >> 24) & 0xFFFF_FFFF), UInt32(tag & 0xFF_FFFF))
    }
}
