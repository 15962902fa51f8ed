import Glibc

/// A value behind a pthread mutex, with `Synchronization.Mutex`'s `withLock` shape. Shared by the
/// TCP server and the voice relay.
///
/// Why not `Mutex`: on Linux it locks with atomics and futex calls that ThreadSanitizer does not
/// see, so `make test-sanitizers` reported every `withLock` body touched from two threads as a
/// race (reproduced with a 15-line program). TSan intercepts pthread mutexes, so races it
/// reports here are real. Inlinable: the relay takes one per forwarded packet (its channel's).
public final class Locked<Value>: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inlinable @inline(__always)
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
