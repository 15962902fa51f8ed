// The soak's client kinds and per-client records: memberships, messages, requests in flight.

enum Kind: String { case member, churner, halfOpen = "half-open", garbage }

/// One membership of a client in a room, with the client-side times that bound the server's.
struct Interval {
    var room: Int
    var joinSent: UInt64
    var joinedRecv: UInt64 = 0          // 0: "joined" not seen yet
    var leaveSent: UInt64 = .max
    var leftRecv: UInt64 = .max
}

struct Message {
    var sender: Int
    var room: Int
    var sentAt: UInt64
    var ackAt: UInt64 = 0               // 0: never acked
}

enum Pending { case chat(Int), join(Int), leave(Int), ping }

final class Client {
    let number: Int
    let fd: Int32
    let kind: Kind
    var inbuf: [UInt8] = []
    var out: [UInt8] = []
    var outOff = 0
    var pollingOut = false
    var nextId = 1
    var pending: [Int: Pending] = [:]
    var intervals: [Interval] = []
    /// Index into `intervals` of the open membership per room, if any.
    var open: [Int: Int] = [:]
    var seq = 0
    var gone = false
    var nextAction: UInt64
    var vanishAt: UInt64 = .max
    var sendsLeft = 0
    var expectedBadJSON = 0
    // Receiving side.
    var seen: Set<UInt64> = []
    var lastSeq: [Int: Int] = [:]       // (sender << 8 | room) → last seq
    var helloSent = false

    init(number: Int, fd: Int32, kind: Kind, now: UInt64) {
        self.number = number
        self.fd = fd
        self.kind = kind
        nextAction = now
    }

    func openMembership(_ room: Int) -> Interval? { open[room].map { intervals[$0] } }
}
