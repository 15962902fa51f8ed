// The `tcpserver` executable as a child process: bad values, config precedence, SIGTERM.

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

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
