import Primitives

/// The small messages one room received during the current turn (and the big ones too when
/// the reactor splices), kept together so that each member takes them in one piece at the end
/// (one spliced pipe, one shared block reference, or one copy) rather than one copy per
/// message: batches of `send_chat` lines arriving in one receive are handled as a batch. Only one room is batched at a time, so the order in which any connection
/// receives messages is the order the reactor processed them (see `Reactor.flushBatch`).
final class RoomBatch {
    /// Rooms with fewer local members take each message straight away.
    static let minMembers = 4

    struct Message {
        var start: Int
        var count: Int
        /// The member this message is not for (its sender, without echo), or nil.
        var excluded: UnsafeMutableRawPointer?
        var origin: UInt64
    }

    var room: LocalRoom?
    /// The messages as JSON lines, back to back.
    var bytes = ByteBuffer()
    var messages: [Message] = []
    /// Members excluded from at least one message (usually none or the one sender).
    private var excludedMembers: [UnsafeMutableRawPointer] = []
    /// Scratch list of members that take the messages one by one (kept for its capacity).
    var oneByOne: [Unmanaged<Connection>] = []
    /// Every message so far was sent by this one member (it receives none of them).
    private var soleSender: UnsafeMutableRawPointer?
    private var mixedSenders = false

    func begin(_ room: LocalRoom) { self.room = room }

    func add(_ body: UnsafeRawBufferPointer, excluded: UnsafeMutableRawPointer?, origin: UInt64) {
        messages.append(Message(start: bytes.readableCount, count: body.count, excluded: excluded, origin: origin))
        bytes.append(body)
        bytes.append(UInt8(ascii: "\n"))
        if let e = excluded {
            if !excludedMembers.contains(e) { excludedMembers.append(e) }
            if messages.count == 1 { soleSender = e } else if soleSender != e { mixedSenders = true }
        } else {
            mixedSenders = true
        }
    }

    @inline(__always)
    func excludes(_ member: UnsafeMutableRawPointer) -> Bool {
        !excludedMembers.isEmpty && excludedMembers.contains(member)
    }

    /// True when every batched message is one `member` is excluded from: it receives none, so
    /// output to it may go ahead of the batch.
    func onlyFrom(_ member: UnsafeMutableRawPointer) -> Bool { !mixedSenders && soleSender == member }

    func reset() {
        bytes.removeAll()
        messages.removeAll(keepingCapacity: true)
        excludedMembers.removeAll(keepingCapacity: true)
        soleSender = nil
        mixedSenders = false
    }
}
