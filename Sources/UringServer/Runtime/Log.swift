import Primitives
import Glibc
import Logging
import Synchronization

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

    var swiftLog: Logging.Logger.Level {
        switch self {
        case .trace: .trace
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        case .error: .error
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// The server's logger: swift-log underneath (so a host application can bootstrap its own
/// handler), our `KeyValueLogHandler` by default. Call sites pass key=value fields.
public struct Logger: Sendable {
    public var level: LogLevel
    let inner: Logging.Logger

    /// stderr only.
    public init(level: LogLevel) {
        self.init(level: level, sink: LogSink(file: nil))
    }

    init(level: LogLevel, sink: LogSink) {
        self.level = level
        var l = Logging.Logger(label: "tcpserver") { _ in KeyValueLogHandler(sink: sink) }
        l.logLevel = level.swiftLog
        inner = l
    }

    public func log(_ l: LogLevel, _ msg: String, _ fields: KeyValuePairs<String, String> = [:]) {
        guard l >= level else { return }
        var md: Logging.Logger.Metadata = [:]
        for (k, v) in fields { md[k] = .string(v) }
        inner.log(level: l.swiftLog, "\(msg)", metadata: md)
    }

    public func info(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.info, msg, fields) }
    public func warning(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.warning, msg, fields) }
    public func error(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.error, msg, fields) }
    public func debug(_ msg: String, _ fields: KeyValuePairs<String, String> = [:]) { log(.debug, msg, fields) }
}

/// `ts=… level=… msg="…" k=v` lines. Formatting happens on the caller; the write goes to the
/// sink's queue, so a reactor that logs never waits for a disk.
struct KeyValueLogHandler: LogHandler {
    let sink: LogSink
    var logLevel: Logging.Logger.Level = .info
    var metadata: Logging.Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logging.Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logging.Logger.Level, message: Logging.Logger.Message, metadata extra: Logging.Logger.Metadata?,
             source: String, file: String, function: String, line: UInt) {
        var line = "ts=\(Self.timestamp()) level=\(level) msg=\(Self.quote(message.description))"
        let all = metadata.merging(extra ?? [:]) { _, b in b }
        for (k, v) in all.sorted(by: { $0.key < $1.key }) where extra?[k] == nil {
            line += " \(k)=\(Self.quote(v.description))"
        }
        if let extra {
            // Call-site order is not kept by a dictionary; keep a stable order instead.
            for (k, v) in extra.sorted(by: { $0.key < $1.key }) { line += " \(k)=\(Self.quote(v.description))" }
        }
        sink.write(line + "\n")
    }

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

/// Where log lines go: stderr, written at once (one write(2) per line, so lines from several
/// threads never interleave), and optionally a size-rotated file written by a thread of its
/// own — callers (reactors among them) only append to a bounded queue.
final class LogSink: @unchecked Sendable {
    struct FileSettings: Sendable {
        var path: String
        var maxBytes: Int
        var keep: Int
    }

    private let file: FileSettings?
    private let queue = Locked<[String]>([])
    private let dropped = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var thread: pthread_t?
    private var fd: Int32 = -1
    private var size = 0
    static let maxQueued = 10_000

    init(file: FileSettings?) {
        self.file = file
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        guard let file else { return }
        openFile(file)
        thread = spawnThread(name: "log-writer") { [self] in self.writerLoop() }
    }

    func write(_ line: String) {
        var l = line
        l.withUTF8 { p in _ = Glibc.write(2, p.baseAddress, p.count) }
        guard file != nil else { return }
        let queued = queue.withLock { q -> Bool in
            if q.count >= Self.maxQueued { return false }
            q.append(line)
            return true
        }
        if !queued { dropped.add(1, ordering: .relaxed); return }
        pthread_mutex_lock(&mutex)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Flushes the queue and stops the writer thread.
    func close() {
        guard let t = thread else { return }
        stopping.store(true, ordering: .releasing)
        pthread_mutex_lock(&mutex)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
        pthread_join(t, nil)
        thread = nil
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    private func writerLoop() {
        var batch: [String] = []
        while true {
            pthread_mutex_lock(&mutex)
            while queue.withLock({ $0.isEmpty }) && !stopping.load(ordering: .acquiring) {
                pthread_cond_wait(&cond, &mutex)
            }
            pthread_mutex_unlock(&mutex)
            queue.withLock { swap(&$0, &batch) }
            for line in batch { append(line) }
            batch.removeAll(keepingCapacity: true)
            let d = dropped.exchange(0, ordering: .relaxed)
            if d > 0 { append("ts=\(KeyValueLogHandler.timestamp()) level=warning msg=\"log queue full\" dropped=\(d)\n") }
            if stopping.load(ordering: .acquiring) && queue.withLock({ $0.isEmpty }) { return }
        }
    }

    private func openFile(_ f: FileSettings) {
        if let slash = f.path.lastIndex(of: "/") {
            let dir = String(f.path[..<slash])
            if !dir.isEmpty { mkdir(dir, 0o755) }
        }
        fd = open(f.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        var st = stat()
        size = fd >= 0 && fstat(fd, &st) == 0 ? Int(st.st_size) : 0
    }

    private func append(_ line: String) {
        guard let f = file, fd >= 0 else { return }
        var l = line
        l.withUTF8 { p in _ = Glibc.write(fd, p.baseAddress, p.count) }
        size += line.utf8.count
        if size >= f.maxBytes { rotate(f) }
    }

    /// tcpserver.log → .1 → .2 … → .keep (the oldest is dropped).
    private func rotate(_ f: FileSettings) {
        Glibc.close(fd)
        if f.keep == 0 {
            unlink(f.path)
        } else {
            unlink("\(f.path).\(f.keep)")
            var i = f.keep - 1
            while i >= 1 {
                rename("\(f.path).\(i)", "\(f.path).\(i + 1)")
                i -= 1
            }
            rename(f.path, "\(f.path).1")
        }
        openFile(f)
    }
}
