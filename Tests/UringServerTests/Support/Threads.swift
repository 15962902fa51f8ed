// Blocking socket work runs on threads of its own (never on the Swift concurrency pool), and
// shares results with the test through a lock.

import Foundation

/// A value shared between helper threads and the test.
final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T
    init(_ v: T) { _value = v }
    var value: T { lock.lock(); defer { lock.unlock() }; return _value }
    func withLock<R>(_ f: (inout T) throws -> R) rethrows -> R {
        lock.lock(); defer { lock.unlock() }
        return try f(&_value)
    }
}

/// Runs `body` on a new OS thread (blocking socket work must not sit on the Swift concurrency
/// pool). `join(timeout:)` returns false if it has not finished in time.
final class HelperThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var finished = false
    init(_ body: @escaping @Sendable () -> Void) {
        let t = Thread { [done] in
            body()
            done.signal()
        }
        t.stackSize = 1 << 20
        t.start()
    }
    func join(timeout: Double) -> Bool {
        if finished { return true }
        finished = done.wait(timeout: .now() + timeout) == .success
        return finished
    }
}
