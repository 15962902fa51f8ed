import Primitives
import Synchronization

/// A reactor's mailbox for work from other reactors (room deliveries) and from the server
/// (stop). Producers append under a short lock and write the eventfd only when the box goes
/// from empty to non-empty, so a burst costs one wakeup; the reactor swaps the whole batch out.
final class Inbox: Sendable {
    /// What wakes the owning reactor (its eventfd; other io_uring reactors use its ring).
    let wakeTarget: WakeTarget
    private let items = Locked<[RoomDelivery]>([])
    /// Cluster mode: answers to this reactor's chat publishes (ack with the cluster offset, or
    /// the failure), from the Redis link thread.
    private let clusterReplies = Locked<ClusterReplies>(ClusterReplies())

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

    /// From the link thread: the publish of the line connection (slot, generation) sent got
    /// `offset` (0: it failed), `id` as the client sent it (empty: none).
    func postClusterReply(slot: Int32, generation: UInt32, offset: Int, id: UnsafeRawBufferPointer) {
        let wasEmpty = clusterReplies.withLock { box in
            let e = box.items.isEmpty
            box.items.append(ClusterReply(slot: slot, generation: generation, offset: offset,
                                          idStart: box.ids.count, idCount: id.count))
            box.ids.append(contentsOf: id)
            return e
        }
        if wasEmpty { wake() }
    }

    /// Moves the cluster replies posted so far into `batch` (which the caller reuses).
    func drainClusterReplies(into batch: inout ClusterReplies) {
        clusterReplies.withLock { swap(&$0, &batch) }
    }

    /// Moves everything posted so far into `batch` (which the caller reuses).
    func drain(into batch: inout [RoomDelivery]) {
        items.withLock { items in
            swap(&items, &batch)
        }
    }
}

/// One answer to a cluster chat publish (see Inbox.postClusterReply).
struct ClusterReply {
    var slot: Int32
    var generation: UInt32
    /// The line's cluster-wide offset; 0 when the publish failed.
    var offset: Int
    var idStart: Int
    var idCount: Int
}

struct ClusterReplies {
    var items: [ClusterReply] = []
    /// The ids' bytes back to back (no allocation per reply once grown).
    var ids: [UInt8] = []
    mutating func removeAll() {
        items.removeAll(keepingCapacity: true)
        ids.removeAll(keepingCapacity: true)
    }
}
