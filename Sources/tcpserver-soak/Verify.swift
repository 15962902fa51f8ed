// The final delivery check: owed messages missing, deliveries outside a membership.

extension Soak {
    /// Owed deliveries that are missing, and deliveries outside any membership.
    func verify(_ members: [Client]) -> (owed: Int, missing: Int, unexpected: Int) {
        var byRoom = [[Int]](repeating: [], count: o.rooms)
        for (i, m) in messages.enumerated() where m.ackAt != 0 { byRoom[m.room].append(i) }
        var owed = 0, missing = 0, unexpected = 0
        for r in members {
            for iv in r.intervals where iv.joinedRecv != 0 {
                for idx in byRoom[iv.room] {
                    let m = messages[idx]
                    if m.sender == r.number { continue }
                    if m.sentAt >= iv.joinedRecv && m.ackAt <= iv.leaveSent {
                        owed += 1
                        let seq = messageSeq(idx)
                        if !r.seen.contains(UInt64(m.sender) << 32 | UInt64(seq)) {
                            missing += 1
                            violation("member \(r.number) missed m\(m.sender).\(seq) in room \(iv.room)")
                        }
                    }
                }
            }
            for key in r.seen {
                guard let idx = messageIndex[key] else { continue }
                let m = messages[idx]
                let ok = r.intervals.contains { iv in
                    iv.room == m.room && !(m.ackAt != 0 && m.ackAt < iv.joinSent) && !(m.sentAt > iv.leftRecv)
                }
                if !ok {
                    unexpected += 1
                    violation("member \(r.number) got m\(key >> 32).\(key & 0xFFFF_FFFF) handled outside its membership of room \(m.room)")
                }
            }
        }
        return (owed, missing, unexpected)
    }

    func messageSeq(_ idx: Int) -> Int { seqOf[idx] ?? -1 }
}
