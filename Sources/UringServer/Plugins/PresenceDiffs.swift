import Primitives

/// Presence for rooms past `presence_max_members`: joins and leaves are gathered per room and
/// sent as one `presence` diff every `presence_interval_ms` (docs/protocol.md, "Presence").
///
/// Per-event notices cost O(members) deliveries per join, so filling a room of n costs O(n²)
/// lines and every member's output grows with the room; a diff per interval costs O(members)
/// per interval whatever the churn. Each reactor gathers the events of its own connections and
/// sends its own diff (no cross-reactor state); names are capped per diff, counts are exact.
struct PresenceDiffs {
    /// Names listed per diff and direction; the rest is only counted.
    static let maxNames = 16

    struct Pending {
        var room: SharedRoom
        var joined: [String] = []
        var left: [String] = []
        var joinedTotal = 0
        var leftTotal = 0
    }

    private var pending: [String: Pending] = [:]
    private var nextFlush: UInt64 = 0

    var isEmpty: Bool { pending.isEmpty }

    mutating func joined(_ user: String, _ room: SharedRoom) {
        record(user, room, joined: true)
    }

    mutating func left(_ user: String, _ room: SharedRoom) {
        record(user, room, joined: false)
    }

    private mutating func record(_ user: String, _ room: SharedRoom, joined isJoin: Bool) {
        pending[room.name, default: Pending(room: room)].add(user, joined: isJoin)
        // A room emptied and created again within the interval is a new object: the diff goes
        // to the live one (the old one has no members left).
        if pending[room.name]!.room !== room { pending[room.name]!.room = room }
    }

    /// The diffs due at `now` (every `intervalNanos`), emptied; nil when none is due.
    mutating func due(now: UInt64, intervalNanos: UInt64) -> [Pending]? {
        guard !pending.isEmpty, now >= nextFlush else { return nil }
        nextFlush = now &+ intervalNanos
        let out = Array(pending.values)
        pending.removeAll(keepingCapacity: true)
        return out
    }

    static func render(_ b: inout ByteBuffer, _ p: Pending, members: Int) {
        b.append("{\"type\":\"presence\",\"room\":")
        b.appendJSONString(p.room.name)
        b.append(",\"members\":")
        b.appendDecimal(members)
        b.append(",\"joined\":[")
        for (i, u) in p.joined.enumerated() {
            if i > 0 { b.append(",") }
            b.appendJSONString(u)
        }
        b.append("],\"left\":[")
        for (i, u) in p.left.enumerated() {
            if i > 0 { b.append(",") }
            b.appendJSONString(u)
        }
        b.append("],\"joined_total\":")
        b.appendDecimal(p.joinedTotal)
        b.append(",\"left_total\":")
        b.appendDecimal(p.leftTotal)
        b.append("}")
    }
}

extension PresenceDiffs.Pending {
    /// The lists are the interval's net change as far as names are listed: a user who leaves
    /// after joining in the same interval drops out of `joined` (and the other way round).
    /// The totals count every event; `members` is the authoritative count.
    mutating func add(_ user: String, joined isJoin: Bool) {
        if isJoin {
            joinedTotal += 1
            if let i = left.firstIndex(of: user) { left.remove(at: i) }
            else if joined.count < PresenceDiffs.maxNames { joined.append(user) }
        } else {
            leftTotal += 1
            if let i = joined.firstIndex(of: user) { joined.remove(at: i) }
            else if left.count < PresenceDiffs.maxNames { left.append(user) }
        }
    }
}
