import Synchronization

/// How other threads wake one reactor: its eventfd, and its ring's fd once it has one. A
/// reactor on io_uring wakes another io_uring reactor with a MSG_RING SQE (part of its next
/// submit, no extra syscall); everything else writes the eventfd. Backends publish and read
/// the ring fd; the reactor only ever names the target.
final class WakeTarget: Sendable {
    let eventFD: EventFD
    /// The owner's io_uring fd (-1 before its ring exists, and in epoll mode).
    let ringFD = Atomic<Int32>(-1)

    init() throws(SyscallError) { eventFD = try EventFD() }

    /// From any thread, without a ring: the eventfd.
    func signal() { eventFD.signal() }
}
