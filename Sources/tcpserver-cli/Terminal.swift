import Glibc

// Process-level plumbing: writing to stdout/stderr, exit codes, the monotonic clock and SIGINT.

/// The exit codes of every subcommand.
enum ExitCode: Int32, Error {
    case ok = 0
    /// The server answered a request with an error.
    case serverError = 1
    /// Could not connect, or the connection broke.
    case connection = 2
    /// Bad command line (sysexits EX_USAGE).
    case usage = 64
}

enum Terminal {
    static let stdinIsTTY = isatty(0) == 1
    static let stdoutIsTTY = isatty(1) == 1

    /// Writes all of `s` to `fd`, retrying on EINTR and short writes.
    static func write(_ s: String, to fd: Int32) {
        var bytes = Array(s.utf8)
        bytes.withUnsafeMutableBytes { buf in
            var off = 0
            while off < buf.count {
                let n = Glibc.write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    return   // stdout closed (e.g. `| head`): nothing sensible left to do
                }
                off += n
            }
        }
    }

    static func out(_ s: String) { write(s, to: 1) }
    static func err(_ s: String) { write(s, to: 2) }

    /// One line to stdout.
    static func line(_ s: String) { out(s + "\n") }

    /// `error: …` to stderr.
    static func error(_ s: String) { err("error: " + s + "\n") }

    /// Monotonic nanoseconds.
    static func monoNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Milliseconds with three decimals, e.g. `0.213`.
    static func millis(_ nanos: UInt64) -> String {
        let micros = (nanos + 500) / 1000
        let frac = micros % 1000
        let pad = frac < 10 ? "00" : frac < 100 ? "0" : ""
        return "\(micros / 1000).\(pad)\(frac)"
    }

    static func sleepMillis(_ ms: Int) {
        var ts = timespec(tv_sec: ms / 1000, tv_nsec: (ms % 1000) * 1_000_000)
        var rest = timespec()
        while nanosleep(&ts, &rest) != 0 && errno == EINTR && !Signals.interrupted { ts = rest }
    }

    /// Text from the network made safe for a terminal: control characters (escape sequences
    /// included) are shown as `^X`, tabs and newlines as spaces.
    static func sanitize(_ s: String) -> String {
        var out = ""
        out.unicodeScalars.reserveCapacity(s.unicodeScalars.count)
        for u in s.unicodeScalars {
            switch u.value {
            case 0x09, 0x0A, 0x0D: out.unicodeScalars.append(" ")
            case 0..<0x20: out += "^" + String(UnicodeScalar(UInt8(u.value + 0x40)))
            case 0x7F: out += "^?"
            case 0x80..<0xA0: out.unicodeScalars.append("\u{FFFD}")
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}

/// SIGINT handling: the handler only sets a flag; blocking calls (poll, read) return EINTR
/// because the handler is installed without SA_RESTART, and the loops check the flag.
enum Signals {
    nonisolated(unsafe) private static var flag: sig_atomic_t = 0

    static var interrupted: Bool { flag != 0 }

    static func installInterruptHandler() {
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in Signals.flag = 1 }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        sigaction(SIGINT, &sa, nil)
        // A parent may hand us SIGINT blocked (the mask survives exec): unblock it.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigprocmask(SIG_UNBLOCK, &set, nil)
        // A reader that goes away (`| head`) must not kill us mid-write.
        signal(SIGPIPE, SIG_IGN)
    }
}
