// The `tcpserver` executable as a child process: bad values, config precedence, SIGTERM.

import Foundation
import Testing
import UringServer
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

@Suite("Integration: tcpserver CLI", .serialized)
struct IntegrationCLITests {

    @Test("bad values exit 2 with a message before listening", arguments: [
        (["--port", "99999"], [String: String](), "port"),
        (["--io", "bogus"], [:], "io"),
        (["--port", "-1"], [:], "port"),
        (["--threads", "two"], [:], "threads"),
        ([], ["TCP_PORT": "notanumber"], "port"),
    ])
    func badValues(args: [String], env: [String: String], mentions: String) throws {
        let child = try ChildServer(args: ["--host", "127.0.0.1"] + args, env: env)
        let exit = child.waitForExit(timeout: 10)
        let err = child.stderr
        #expect(exit != nil, "tcpserver \(args) \(env) should exit; stderr: \(err)")
        #expect(exit?.reason == .exit && exit?.status == 2,
                "tcpserver \(args) \(env) should exit with code 2, got \(String(describing: exit)); stderr: \(err)")
        #expect(err.lowercased().contains(mentions), "stderr should explain the bad \(mentions): \(err)")
        #expect(!err.contains("tcpserver started"), "must not start listening: \(err)")
    }

    struct PrecedenceCase: Sendable, CustomTestStringConvertible {
        var name: String
        var dotEnv: [String]            // lines, with {P1} {P2} {P3} placeholders
        var env: [String: String]
        var args: [String]
        var expectPort: String          // "P1" / "P2" / "P3"
        var expectIO: String
        var testDescription: String { name }
    }

    @Test("config precedence: .env < environment < flags", arguments: [
        PrecedenceCase(name: ".env only",
                       dotEnv: ["tcp_port={P1}", "io=epoll", "threads=2"], env: [:], args: [],
                       expectPort: "P1", expectIO: "epoll"),
        PrecedenceCase(name: "env over .env",
                       dotEnv: ["# comment", "tcp_port={P1}", "io=epoll", "threads=2"],
                       env: ["TCP_PORT": "{P2}", "IO": "uring"], args: [],
                       expectPort: "P2", expectIO: "uring"),
        PrecedenceCase(name: "flag over env over .env",
                       dotEnv: ["tcp_port={P1}", "io=uring", "threads=2"],
                       env: ["TCP_PORT": "{P2}", "IO": "epoll"], args: ["--port", "{P3}"],
                       expectPort: "P3", expectIO: "epoll"),
        PrecedenceCase(name: "flags win for both",
                       dotEnv: ["tcp_port={P1}", "io=epoll"],
                       env: ["TCP_PORT": "{P2}", "IO": "epoll"], args: ["--port", "{P3}", "--io", "uring", "--threads", "2"],
                       expectPort: "P3", expectIO: "uring"),
    ])
    func precedence(_ c: PrecedenceCase) throws {
        let ports = ["P1": freePort(), "P2": freePort(), "P3": freePort()]
        func fill(_ s: String) -> String {
            var s = s
            for (k, v) in ports { s = s.replacingOccurrences(of: "{\(k)}", with: String(v)) }
            return s
        }
        let child = try ChildServer(args: ["--host", "127.0.0.1"] + c.args.map(fill),
                                    env: c.env.mapValues(fill),
                                    dotEnv: c.dotEnv.map(fill).joined(separator: "\n") + "\n")
        let line = try #require(child.waitForStartLine(), "no start line; stderr: \(child.stderr)")
        let want = ports[c.expectPort]!
        #expect(logField("address", in: line) == "127.0.0.1:\(want)",
                "expected port from \(c.expectPort) (\(ports)): \(line)")
        #expect(logField("io", in: line) == c.expectIO, "expected io=\(c.expectIO): \(line)")
        // And it really listens there.
        let client = try TestClient(port: want)
        let w = try client.hello("cli")
        #expect(w.type == "welcome")
        child.terminate()
        #expect(child.waitForExit()?.status == 0)
    }

    @Test("--config FILE is read like .env, and flags still win")
    func configFile() throws {
        let p1 = freePort(), p2 = freePort()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tcpserver-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("custom.conf")
        try "tcp_port=\(p1)\nio=epoll\nthreads=2\n".write(to: file, atomically: true, encoding: .utf8)

        let a = try ChildServer(args: ["--host", "127.0.0.1", "--config", file.path])
        let la = try #require(a.waitForStartLine(), "no start line; stderr: \(a.stderr)")
        #expect(logField("address", in: la) == "127.0.0.1:\(p1)", "\(la)")
        #expect(logField("io", in: la) == "epoll", "\(la)")
        a.terminate()
        #expect(a.waitForExit()?.status == 0)

        let b = try ChildServer(args: ["--config", file.path, "--port", String(p2), "--io", "uring"])
        let lb = try #require(b.waitForStartLine(), "no start line; stderr: \(b.stderr)")
        #expect(logField("address", in: lb) == "127.0.0.1:\(p2)", "\(lb)")
        #expect(logField("io", in: lb) == "uring", "\(lb)")
        b.terminate()
        #expect(b.waitForExit()?.status == 0)
    }

    @Test("SIGTERM → exit 0 (with a connected client)", arguments: allIOModes)
    func sigterm(mode: IOModeSetting) throws {
        let child = try ChildServer(args: ["--host", "127.0.0.1", "--port", "0", "--io", mode.rawValue, "--threads", "2"])
        let line = try #require(child.waitForStartLine(), "no start line; stderr: \(child.stderr)")
        #expect(logField("io", in: line) == mode.rawValue, "\(line)")
        let port = try #require(addressPort(line), "no address in \(line)")
        #expect(port > 0)
        let client = try TestClient(port: port)
        try client.hello("term")
        try client.join("t")
        let h = try httpRequest(port: port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(h.statusLine.hasPrefix("HTTP/1.1 200"))
        child.terminate()
        let exit = child.waitForExit(timeout: 10)
        #expect(exit?.reason == .exit && exit?.status == 0,
                "SIGTERM should exit 0, got \(String(describing: exit)); stderr: \(child.stderr)")
        // The client sees the connection go away.
        #expect(throws: Never.self) { try client.readUntilClosed(timeout: 3) }
    }
}
