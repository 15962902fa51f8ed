import CLinux
import Glibc
import Synchronization

/// A reactor's mailbox for work from other reactors (room deliveries) and from the server
/// (stop). Producers append under a short lock and write the eventfd only when the box goes
/// from empty to non-empty, so a burst costs one wakeup; the reactor swaps the whole batch out.
final class Inbox: Sendable {
    let eventFD: Int32
    private let items = Locked<[RoomDelivery]>([])

    init() throws(SyscallError) {
        eventFD = try syscall("eventfd") { eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)) }
    }

    deinit { close(eventFD) }

    func post(_ d: RoomDelivery) {
        let wasEmpty = items.withLock { items in
            items.append(d)
            return items.count == 1
        }
        if wasEmpty { wake() }
    }

    var isEmpty: Bool { items.withLock { $0.isEmpty } }

    func wake() {
        var one: UInt64 = 1
        _ = write(eventFD, &one, 8)
    }

    /// Moves everything posted so far into `batch` (which the caller reuses).
    func drain(into batch: inout [RoomDelivery]) {
        items.withLock { items in
            swap(&items, &batch)
        }
    }
}

/// One-shot gate: the starting thread waits until every reactor reports it is set up.
final class Latch: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var remaining: Int

    init(count: Int) {
        remaining = count
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&cond)
    }

    func countDown() {
        pthread_mutex_lock(&mutex)
        remaining -= 1
        if remaining == 0 { pthread_cond_broadcast(&cond) }
        pthread_mutex_unlock(&mutex)
    }

    func wait() {
        pthread_mutex_lock(&mutex)
        while remaining > 0 { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
}
