// Child processes: the package's own executables (`tcpserver`, `tcpserver-cli`) found next to
// the test bundle, a `tcpserver` child with its stderr captured, its key=value log lines, and a
// redis-server for the cluster suites.

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `tcpserver` next to the test bundle.
func locateServerBinary() -> String? { locateProductBinary("tcpserver") }

/// A product of this package next to the test bundle (`swift test` builds every product into
/// the directory of `…/debug/tcpserverPackageTests.xctest`); searches a few directories upward
/// in case the bundle is a directory.
func locateProductBinary(_ name: String) -> String? {
    var candidates: [String] = []
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    if n > 0 { candidates.append(String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
    if let a0 = CommandLine.arguments.first {
        candidates.append(URL(fileURLWithPath: a0).standardizedFileURL.path)
    }
    let fm = FileManager.default
    for start in candidates {
        var dir = (start as NSString).deletingLastPathComponent
        for _ in 0..<5 {
            let p = (dir as NSString).appendingPathComponent(name)
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue, fm.isExecutableFile(atPath: p) {
                return p
            }
            let parent = (dir as NSString).deletingLastPathComponent
            if parent == dir { break }
            dir = parent
        }
    }
    return nil
}

/// A child `tcpserver` with stderr going to a temp file, run in its own temp directory (so the
/// repository's own `.env`, if any, is not picked up).
final class ChildServer {
    let process = Process()
    let dir: URL
    let stderrURL: URL
    private let stderrHandle: FileHandle

    /// Config-ish variables removed from the inherited environment.
    static let scrubbed = ["TCP_PORT", "TCP_HOST", "HOST", "PORT", "IO", "THREADS", "MAX_FRAME_BYTES",
                           "MAX_CONNECTIONS", "PRESENCE", "LOG_LEVEL", "CONFIG"]

    init(args: [String], env: [String: String] = [:], dotEnv: String? = nil) throws {
        let binary = try #require(locateServerBinary(), "tcpserver binary not found next to the test executable")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tcpserver-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        if let dotEnv {
            try dotEnv.write(to: dir.appendingPathComponent(".env"), atomically: true, encoding: .utf8)
        }
        stderrURL = dir.appendingPathComponent("stderr.log")
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        stderrHandle = try FileHandle(forWritingTo: stderrURL)
        var environment = ProcessInfo.processInfo.environment
        for k in Self.scrubbed { environment.removeValue(forKey: k) }
        for (k, v) in env { environment[k] = v }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = args
        process.environment = environment
        process.currentDirectoryURL = dir
        process.standardError = stderrHandle
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? stderrHandle.close()
        try? FileManager.default.removeItem(at: dir)
    }

    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// Waits for the `msg="tcpserver started"` line; nil if the process exits or time runs out.
    func waitForStartLine(timeout: Double = 10) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = stderr.split(separator: "\n").first(where: { $0.contains(#"msg="tcpserver started""#) }) {
                return String(line)
            }
            if !process.isRunning { return nil }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return nil
    }

    /// Waits for exit; returns the exit status, or nil if it is still running after `timeout`.
    func waitForExit(timeout: Double = 10) -> (status: Int32, reason: Process.TerminationReason)? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return nil }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return (process.terminationStatus, process.terminationReason)
    }

    func terminate() { kill(process.processIdentifier, SIGTERM) }
}

/// `key=value` from a log line (value unquoted if quoted).
func logField(_ key: String, in line: String) -> String? {
    for token in line.split(separator: " ") {
        if token.hasPrefix(key + "=") {
            var v = String(token.dropFirst(key.count + 1))
            if v.hasPrefix("\""), v.hasSuffix("\""), v.count >= 2 { v = String(v.dropFirst().dropLast()) }
            return v
        }
    }
    return nil
}

func addressPort(_ line: String) -> Int? {
    guard let a = logField("address", in: line), let colon = a.lastIndex(of: ":") else { return nil }
    return Int(a[a.index(after: colon)...])
}

/// An error the cluster suites throw themselves (redis-server missing or not answering, a fake
/// server that cannot listen, a wait that timed out).
struct ClusterTestError: Error, CustomStringConvertible {
    let description: String
}

/// A redis-server child process on its own free port (no persistence).
final class RedisProcess: @unchecked Sendable {
    let port: Int
    private let executable: String
    private var process: Process?

    init(startNow: Bool = true) throws {
        let candidates = ["/usr/bin/redis-server", "/usr/local/bin/redis-server", "/opt/homebrew/bin/redis-server"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/redis-server" }
        guard let exe = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            let msg = "redis-server not found: the cluster tests need it (apt-get install -y redis-server; `make test` installs it)"
            Issue.record(Comment(rawValue: msg))
            throw ClusterTestError(description: msg)
        }
        executable = exe
        port = freePort()   // Network.swift
        if startNow { try restart() }
    }

    /// (Re)starts redis-server on `port` and waits until it accepts connections.
    func restart() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--dir", NSTemporaryDirectory()]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if !p.isRunning {
                throw ClusterTestError(description: "redis-server exited at start (status \(p.terminationStatus)) on port \(port)")
            }
            if query(["PING"]) == "PONG" { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill()
        throw ClusterTestError(description: "redis-server did not answer PING on port \(port) within 5 s")
    }

    func signal(_ sig: Int32) {
        if let p = process, p.isRunning { _ = Glibc.kill(p.processIdentifier, sig) }
    }

    /// SIGKILL (a crash, as far as clients can tell) and reap.
    func kill() {
        guard let p = process else { return }
        process = nil
        if p.isRunning {
            _ = Glibc.kill(p.processIdentifier, SIGCONT)
            _ = Glibc.kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
    }

    /// One command over a fresh blocking connection (see redisQuery).
    func query(_ args: [String]) -> String? { redisQuery(port: port, args) }
}

/// One command over a fresh blocking connection; the reply as text (bulk/simple/integer),
/// nil for a nil reply or any failure.
func redisQuery(port: Int, _ args: [String]) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = in_port_t(UInt16(port)).bigEndian
    _ = inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard rc == 0 else { return nil }
    var cmd = "*\(args.count)\r\n"
    for a in args { cmd += "$\(a.utf8.count)\r\n\(a)\r\n" }
    let sent = cmd.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    guard sent > 0 else { return nil }
    var buf = [UInt8](repeating: 0, count: 4096)
    var got: [UInt8] = []
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { return nil }
        got += buf[0..<n]
        let s = String(decoding: got, as: UTF8.self)
        guard let first = s.range(of: "\r\n") else { continue }
        let head = String(s[s.startIndex..<first.lowerBound])
        switch head.first {
        case "+", ":": return String(head.dropFirst())
        case "-": return nil
        case "$":
            guard let len = Int(head.dropFirst()) else { return nil }
            if len < 0 { return nil }
            let rest = Array(s.utf8[first.upperBound...])
            if rest.count >= len + 2 { return String(decoding: rest[0..<len], as: UTF8.self) }
        default: return nil
        }
    }
}
