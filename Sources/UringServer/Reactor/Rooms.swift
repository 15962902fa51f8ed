import Primitives
import Synchronization

/// The fan-out engine's room state.
///
/// A room's members may live on several reactors. Each reactor keeps its own `LocalRoom`
/// (touched only by that reactor's thread, no locks); the `SharedRoom` ties them together:
/// the total member count (changed under the directory's stripe lock on join/leave, which are rare) and
/// a bit mask of the reactors that have local members, read lock-free with one acquire load per
/// message. A message is rendered once, delivered to local members, and handed to each other
/// reactor in the mask once (not once per member).
public final class SharedRoom: @unchecked Sendable {
    public let name: String
    /// Reactors with local members (bit i = reactor i). Written under the directory stripe's lock.
    let reactorMask = Atomic<UInt64>(0)
    /// Guarded by the directory's stripe lock for this room.
    var memberCount = 0
    var perReactorCount: [Int]
    /// Slot i belongs to reactor i's thread and is only ever touched by it.
    let locals: UnsafeMutablePointer<LocalRoom?>
    let reactorCount: Int
    /// The room's messages in offset order (its order across reactors and its history).
    let log: RoomLog

    init(name: String, reactorCount: Int) {
        log = RoomLog(reactorCount: reactorCount)
        self.name = name
        self.reactorCount = reactorCount
        perReactorCount = Array(repeating: 0, count: reactorCount)
        locals = .allocate(capacity: reactorCount)
        locals.initialize(repeating: nil, count: reactorCount)
    }

    deinit {
        locals.deinitialize(count: reactorCount)
        locals.deallocate()
    }

    /// Called by reactor `reactor` when its last local member left.
    func dropLocal(for reactor: Int) {
        locals[reactor] = nil
        log.withLock { log.detachLocked(reactor) }
    }

    /// This reactor's view of the room, created on first use.
    func local(for reactor: Int) -> LocalRoom {
        if let l = locals[reactor] { return l }
        let l = LocalRoom(shared: self)
        (l.cursor, l.logGeneration) = log.withLock { (log.attachLocked(reactor), log.generation) }
        locals[reactor] = l
        return l
    }
}

/// The members of one room on one reactor.
public final class LocalRoom {
    /// Strong: the SharedRoom's slot for this reactor is cleared when the last local member
    /// leaves, which breaks the cycle.
    public let shared: SharedRoom
    /// The members, as unretained references: fan-out walks this array for every message, and
    /// a retain/release per member per message is the largest avoidable cost there. Safe
    /// because a connection leaves all its rooms (connectionClosed) before the reactor drops
    /// its record.
    private(set) var memberRefs: [Unmanaged<Connection>] = []

    public var memberCount: Int { memberRefs.count }

    /// Adds `c`. A batch of this room's messages in progress must be delivered first (the
    /// reactor's Membership does).
    func add(_ c: Connection) {
        memberRefs.append(Unmanaged.passUnretained(c))
    }

    /// Removes `c` (order is not kept: the last member takes its place).
    func remove(_ c: Connection) {
        let target = Unmanaged.passUnretained(c).toOpaque()
        if let j = memberRefs.firstIndex(where: { $0.toOpaque() == target }) {
            memberRefs.swapAt(j, memberRefs.count - 1)
            memberRefs.removeLast()
        }
    }

    init(shared: SharedRoom) { self.shared = shared }

    /// The last offset this reactor delivered to its members (its copy of the log's cursor).
    var cursor = 0
    /// The log's `generation` the cursor belongs to (cluster mode: an epoch change restarts
    /// the log's offsets, and a cursor from before means nothing).
    var logGeneration = 0
    /// Queued for the end-of-turn poke of the other reactors (see Reactor.pokeRooms).
    var pokePending = false

    public var name: String { shared.name }
}

/// name → SharedRoom, for all reactors. Only join and leave take its lock.
public final class RoomDirectory: Sendable {
    /// Room name → room, in a lock-striped map (16 stripes): reactors joining or leaving
    /// different rooms take different locks. A room's counts change only under its stripe's
    /// lock. Nothing here is touched per message: fan-out reads the room's reactor mask.
    private let rooms = StripedMap<String, SharedRoom>(stripes: 16)
    let reactorCount: Int

    init(reactorCount: Int) { self.reactorCount = reactorCount }

    /// Adds one member on `reactor`; returns the room and its total member count, or nil when
    /// the room already has `limit` members.
    func join(_ name: String, reactor: Int, limit: Int = .max) -> (SharedRoom, Int)? {
        rooms.update(key: name) { slot -> (SharedRoom, Int)? in
            let room: SharedRoom
            if let r = slot {
                if r.memberCount >= limit { return nil }
                room = r
            } else {
                room = SharedRoom(name: name, reactorCount: reactorCount)
                slot = room
            }
            room.memberCount += 1
            room.perReactorCount[reactor] += 1
            if room.perReactorCount[reactor] == 1 {
                room.reactorMask.store(room.reactorMask.load(ordering: .relaxed) | (1 << UInt64(reactor)),
                                       ordering: .releasing)
            }
            return (room, room.memberCount)
        }
    }

    /// Removes one member on `reactor`; returns the remaining total.
    @discardableResult
    func leave(_ room: SharedRoom, reactor: Int) -> Int {
        rooms.update(key: room.name) { slot -> Int in
            room.memberCount -= 1
            room.perReactorCount[reactor] -= 1
            if room.perReactorCount[reactor] == 0 {
                room.reactorMask.store(room.reactorMask.load(ordering: .relaxed) & ~(1 << UInt64(reactor)),
                                       ordering: .releasing)
            }
            // A room keeps its log (and epoch) while it holds history, so a lone member who
            // reconnects can recover; `sweep` forgets it once the history has expired.
            if room.memberCount == 0, slot === room, room.log.withLock({ room.log.storedCount == 0 }) {
                slot = nil
            }
            return room.memberCount
        }
    }

    func lookup(_ name: String) -> SharedRoom? {
        rooms.value(forKey: name)
    }

    public func memberCount(_ name: String) -> Int {
        rooms.withValue(forKey: name) { $0?.memberCount ?? 0 }
    }

    public var roomCount: Int { rooms.count }

    /// Expires history in every room and forgets the memberless rooms left with none (one
    /// reactor's one-second tick). Returns (evicted, early, bytes freed).
    func sweep(_ limits: HistoryLimits, nowSecond: UInt32) -> (Int, Int, Int) {
        var idle: [SharedRoom] = []
        var total = (0, 0, 0)
        rooms.forEach { _, room in
            let (n, early, freed) = room.log.withLock { () -> (Int, Int, Int) in
                let r = room.log.evictLocked(limits, nowSecond: nowSecond, overBudget: false)
                if room.log.storedCount == 0 { room.log.shrinkLocked() }
                return r
            }
            total = (total.0 + n, total.1 + early, total.2 + freed)
            if room.memberCount == 0 { idle.append(room) }
        }
        for room in idle {
            rooms.update(key: room.name) { slot in
                if slot === room, room.memberCount == 0, room.log.withLock({ room.log.storedCount == 0 }) { slot = nil }
            }
        }
        return total
    }
}

/// A message rendered once (JSON body, no framing) and shared by the reactors it is handed to.
final class RenderedMessage: @unchecked Sendable {
    var body = ByteBuffer()
    /// When the message that caused it was received (monotonic ns), for latency.
    let originNanos: UInt64

    init(originNanos: UInt64) { self.originNanos = originNanos }
}

/// One cross-reactor hand-off: deliver `message` to this reactor's members of `room`.
struct RoomDelivery: @unchecked Sendable {
    let room: SharedRoom
    let message: RenderedMessage
}
