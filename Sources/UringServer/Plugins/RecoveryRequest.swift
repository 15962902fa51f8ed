/// `join_room`'s `"epoch":"E","since":N` (docs/protocol.md, "Recovery"), checked: every bad
/// input is a `bad_since` error naming what is wrong, and the connection stays.
enum RecoveryRequest {
    /// nil when the join carries neither field.
    static func parse(_ m: IncomingMessage) throws(ProtocolError) -> (epoch: String, offset: Int)? {
        let sinceField = m.field("since"), epochField = m.field("epoch")
        if sinceField == nil && epochField == nil { return nil }
        guard let sf = sinceField else {
            throw ProtocolError(.badSince, "'epoch' needs 'since' (the last offset you saw)")
        }
        guard let since = JSONReader.int(sf, in: m.bytes), since >= 0 else {
            throw ProtocolError(.badSince, "'since' must be a non-negative integer (the last offset you saw)")
        }
        guard let ef = epochField else {
            throw ProtocolError(.badSince, "'since' needs 'epoch' (the room's epoch from joined)")
        }
        guard ef.kind == .string else {
            throw ProtocolError(.badSince, "'epoch' must be a string (the room's epoch from joined)")
        }
        return (JSONReader.string(ef, in: m.bytes), since)
    }

    /// `since` past the room's latest offset in the same epoch is a client error (it cannot
    /// have seen it); in another epoch the offsets are not comparable.
    static func check(_ since: (epoch: String, offset: Int)?, room: String, _ ctx: PluginContext) throws(ProtocolError) {
        guard let since, let (epoch, latest) = ctx.roomLatest(room), epoch == since.epoch,
              since.offset > latest else { return }
        throw ProtocolError(.badSince, "'since' \(since.offset) is beyond room '\(room)''s latest offset \(latest)")
    }
}
