import Primitives
import Synchronization

/// A reactor's mailbox for work from other reactors (room deliveries) and from the server
/// (stop). Producers append under a short lock and write the eventfd only when the box goes
/// from empty to non-empty, so a burst costs one wakeup; the reactor swaps the whole batch out.
final class Inbox: Sendable {
    /// What wakes the owning reactor (its eventfd; other io_uring reactors use its ring).
    let wakeTarget: WakeTarget
    private let items = Locked<[RoomDelivery]>([])

    init() throws(SyscallError) { wakeTarget = try WakeTarget() }

    func post(_ d: RoomDelivery) {
        let wasEmpty = items.withLock { items in
            items.append(d)
            return items.count == 1
        }
        if wasEmpty { wake() }
    }

    var isEmpty: Bool { items.withLock { $0.isEmpty } }

    /// Wakes the reactor from any thread (a post, a stop, a drain).
    func wake() { wakeTarget.signal() }

    /// Moves everything posted so far into `batch` (which the caller reuses).
    func drain(into batch: inout [RoomDelivery]) {
        items.withLock { items in
            swap(&items, &batch)
        }
    }
}
