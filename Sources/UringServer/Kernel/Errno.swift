import CLinux
import Glibc

/// An errno value (swift-system's `Errno`, reduced to what the server needs). Hot paths get
/// "would block" as a value (`Sys.nonBlocking` returns nil), never as an error.
public struct Errno: Error, Equatable, CustomStringConvertible {
    public let rawValue: Int32
    @inline(__always) public init(_ rawValue: Int32) { self.rawValue = rawValue }
    /// The calling thread's errno.
    @inline(__always) static var current: Errno { Errno(clinux_errno()) }
    var isWouldBlock: Bool { rawValue == EAGAIN || rawValue == EWOULDBLOCK }
    public var description: String { errnoString(rawValue) }
}

/// A failed system call during set-up: the errno and the call's name, so errors are turned
/// into messages in one place.
public struct SyscallError: Error, CustomStringConvertible {
    public let call: StaticString
    public let errno: Int32
    public var description: String { "\(call): \(errnoString(errno))" }
}

func errnoString(_ e: Int32) -> String {
    guard let s = strerror(e) else { return "errno \(e)" }
    return String(cString: s) + " (errno \(e))"
}

/// The three shapes of a system call result, wrapped once (swift-nio's rule: EINTR is retried
/// here, EAGAIN is a value, anything else an error).
enum Sys {
    /// Set-up calls: EINTR retried; -1 becomes a `SyscallError` naming the call.
    @inline(__always)
    static func call<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) throws(SyscallError) -> T {
        while true {
            let r = body()
            if r != -1 { return r }
            let e = Errno.current
            if e.rawValue == EINTR { continue }
            throw SyscallError(call: name, errno: e.rawValue)
        }
    }

    /// Calls on non-blocking descriptors: EINTR retried; nil when the call would block; other
    /// failures throw their `Errno`.
    @inline(__always)
    static func nonBlocking<T: FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T? {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Errno.current
            if e.rawValue == EINTR { continue }
            if e.isWouldBlock { return nil }
            throw e
        }
    }

    /// The same for calls that return -errno (liburing, the CLinux shims).
    @inline(__always)
    static func nonBlockingNegated<T: SignedInteger & FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T? {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Int32(truncatingIfNeeded: -r)
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw Errno(e)
        }
    }

    /// Set-up calls that return -errno (liburing).
    @inline(__always)
    static func negated(_ name: StaticString, _ r: Int32) throws(SyscallError) -> Int32 {
        if r < 0 { throw SyscallError(call: name, errno: -r) }
        return r
    }
}

/// An owned file descriptor: closed exactly once, by `close()` or when it goes out of scope.
struct FileDescriptor: ~Copyable {
    let rawValue: Int32
    init(_ rawValue: Int32) { self.rawValue = rawValue }
    consuming func close() {
        let fd = rawValue
        discard self
        _ = Glibc.close(fd)
    }
    deinit { _ = Glibc.close(rawValue) }
}

/// An eventfd: the one way threads wake a reactor that waits in epoll (and io_uring when the
/// waker has no ring of its own). Writes add to a counter; one read resets it.
final class EventFD: Sendable {
    private let fd: FileDescriptor
    var rawValue: Int32 { fd.rawValue }

    init() throws(SyscallError) {
        fd = FileDescriptor(try Sys.call("eventfd") { eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK)) })
    }

    func signal() {
        var one: UInt64 = 1
        _ = write(fd.rawValue, &one, 8)
    }

    /// Resets the counter (the reactor is awake now).
    func drain() {
        var v: UInt64 = 0
        _ = read(fd.rawValue, &v, 8)
    }
}
