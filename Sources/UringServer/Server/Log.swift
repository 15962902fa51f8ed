import Glibc

public enum LogLevel: Int, Sendable, Comparable {
    case trace, debug, info, warning, error

    init?(name: String) {
        switch name {
        case "trace": self = .trace
        case "debug": self = .debug
        case "info": self = .info
        case "warning", "warn": self = .warning
        case "error": self = .error
        default: return nil
        }
    }

    var name: String {
        switch self {
        case .trace: "trace"
        case .debug: "debug"
        case .info: "info"
        case .warning: "warning"
        case .error: "error"
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// key=value log lines on stderr: `ts=… level=info msg="…" k=v …`.
/// Written with one write(2) per line so lines from several threads never interleave.
public struct Logger: Sendable {
    public var level: LogLevel

    public init(level: LogLevel) { self.level = level }

    public func log(_ l: LogLevel, _ msg: String, _ fields: KeyValuePairs<String, String> = [:]) {
        guard l >= level else { return }
        var line = "ts=\(Self.timestamp()) level=\(l.name) msg=\(Self.quote(msg))"
        for (k, v) in fields { line += " \(k)=\(Self.quote(v))" }
        line += "\n"
        line.withUTF8 { p in _ = write(2, p.baseAddress, p.count) }
    }

    public func info(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.info, msg, fields) }
    public func warning(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.warning, msg, fields) }
    public func error(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.error, msg, fields) }
    public func debug(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.debug, msg, fields) }

    static func quote(_ v: String) -> String {
        if !v.isEmpty && !v.utf8.contains(where: { $0 == 32 || $0 == 34 || $0 == 61 || $0 < 32 }) { return v }
        var s = "\""
        for ch in v.unicodeScalars {
            switch ch {
            case "\"": s += "\\\""
            case "\\": s += "\\\\"
            case "\n": s += "\\n"
            default: s.unicodeScalars.append(ch)
            }
        }
        return s + "\""
    }

    /// UTC ISO-8601 with milliseconds.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let ms = ts.tv_nsec / 1_000_000
        let msStr = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)).\(msStr)Z"
    }
}
