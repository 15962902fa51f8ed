// Graceful shutdown: in process (`Server.drainAndStop`) and through the binary (SIGTERM, and a
// second SIGTERM during a long drain).

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

/// Makes `q` a connection whose output cannot drain: it never reads while the server queues
/// `n` × ~60 KB (a pong and an ack echoing a 30 KB id per ping) for it.
func makeStuck(_ q: QuietClient, pings n: Int = 250) throws {
    try q.send("{\"type\":\"hello\",\"user\":\"stuck\"}\n")
    try q.send(bigIdPings(n))
}

@Suite("Ops: graceful shutdown")
struct OpsShutdownTests {

    @Test("drainAndStop: each client gets {\"type\":\"shutdown\"} then EOF; a quick drain", arguments: allIOModes)
    func drainInProcess(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { $0.drainTimeoutMs = 10_000 }) { server in
            let port = server.port
            let a = try TestClient(port: port)
            try a.hello("drain-a")
            try a.join("drain")
            let b = try TestClient(port: port, framing: .binary)
            try b.hello("drain-b")
            try b.join("drain")
            _ = try a.read(until: "user_joined")
            let silent = try TestClient(port: port)   // framing not chosen yet: still told
            Thread.sleep(forTimeInterval: 0.05)

            let started = Date()
            let done = Locked<Date?>(nil)
            let t = HelperThread { server.drainAndStop(); done.withLock { $0 = Date() } }
            for (name, c) in [("json", a), ("binary", b), ("silent", silent)] {
                // Presence of the others closing may come first; the shutdown notice is last.
                let msgs = try c.readUntilClosed(timeout: 5).filter { $0.type != "user_left" }
                #expect(msgs.map { $0.type ?? "?" } == ["shutdown"], "\(name) client: one shutdown message then EOF, got \(msgs)")
            }
            #expect(t.join(timeout: 5), "drainAndStop did not return")
            if let end = done.value {
                #expect(end.timeIntervalSince(started) < 2, "nothing was queued: the drain must not wait for drain_timeout_ms (10 s); took \(end.timeIntervalSince(started)) s")
            }
            #expect(throws: ClientError.self, "no longer listening") { _ = try TestClient(port: port) }
        }
    }

    @Test("/health answers 503 while the server drains", arguments: allIOModes)
    func healthWhileDraining(mode: IOModeSetting) throws {
        try withRunningServer(mode, threads: 1, configure: { $0.drainTimeoutMs = 3000 }) { server in
            let port = server.port
            #expect(try httpGet(port, "/health").statusLine.hasPrefix("HTTP/1.1 200"))
            // A client whose queued output keeps the drain going until the timeout.
            let q = try QuietClient(port: port)
            try makeStuck(q)
            let (st, busy) = statsEventually(port, timeout: 3) { statsTotal($0, "messages_in") >= 251 }
            try #require(busy, "the stuck client's pings were not processed: \(st["totals"] ?? "")")
            let a = try TestClient(port: port)
            try a.hello("drain-watch")
            // An HTTP request already on its way when the drain starts (head not complete yet).
            let early = try TestClient(port: port)
            try early.send("GET /health HTTP/1.1\r\nHost: x\r\n")
            Thread.sleep(forTimeInterval: 0.05)

            let t = HelperThread { server.drainAndStop() }
            defer { _ = t.join(timeout: 10) }
            #expect(try a.read().type == "shutdown")

            // A health check during the drain (a load balancer's): must see 503.
            var fresh = "no answer"
            do {
                fresh = try httpGet(port, "/health").statusLine
            } catch {
                fresh = "\(error)"
            }
            #expect(fresh.hasPrefix("HTTP/1.1 503"), "GET /health during the drain: \(fresh)")

            // The request that was in progress: answered 503 rather than dropped.
            var inProgress = "no answer"
            do {
                try early.send("\r\n")
                inProgress = try early.readLine(timeout: 2)
            } catch {
                inProgress = "\(error)"
            }
            #expect(inProgress.hasPrefix("HTTP/1.1 503"), "GET /health begun before the drain, finished during it: \(inProgress)")

            // A chat client arriving during the drain is told to go away.
            if let late = try? TestClient(port: port) {
                try? late.send(["type": "hello", "user": "late"])
                let msgs = (try? late.readUntilClosed(timeout: 3)) ?? [["type": "no EOF within 3 s"]]
                #expect(msgs.map { $0.type ?? "?" } == ["shutdown"], "a chat connection made during the drain: \(msgs)")
            }
            #expect(t.join(timeout: 8), "the drain must end by drain_timeout_ms (3 s)")
        }
    }

    @Test("stop() closes only descriptors it owns (clients disconnecting as it stops)", arguments: allIOModes)
    func stopClosesOnlyItsOwn(mode: IOModeSetting) throws {
        // Run in a child copy of this test runner: if the server does close descriptors it does
        // not own, it must not take other tests' sockets with it.
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        try #require(n > 0)
        let exe = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["--testing-library", "swift-testing", "--filter", "OpsFDProbe"]
        var env = ProcessInfo.processInfo.environment
        env["OPS_FD_PROBE"] = mode.rawValue
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("OpsFDProbe ran"), "the probe did not run: \(text.suffix(1500))")
        let evidence = text.split(separator: "\n").filter { $0.contains("closed by Server.stop()") || $0.contains("Caught error") }
        #expect(p.terminationStatus == 0, "\(mode): \(evidence.prefix(4).joined(separator: "\n"))")
    }

    @Test("binary: SIGTERM → clients get shutdown, exit 0", arguments: allIOModes)
    func sigterm(mode: IOModeSetting) throws {
        let child = try ChildServer(args: ["--host", "127.0.0.1", "--port", "0", "--io", mode.rawValue, "--threads", "2",
                                           "--log-file", ""])
        let line = try #require(child.waitForStartLine(), "no start line; stderr: \(child.stderr)")
        let port = try #require(addressPort(line))
        let a = try TestClient(port: port)
        try a.hello("term-a")
        try a.join("t")
        let b = try TestClient(port: port, framing: .binary)
        try b.hello("term-b")
        try b.join("t")
        _ = try a.read(until: "user_joined")
        let started = Date()
        child.terminate()
        for (name, c) in [("json", a), ("binary", b)] {
            let msgs = try c.readUntilClosed(timeout: 5).filter { $0.type != "user_left" }
            #expect(msgs.map { $0.type ?? "?" } == ["shutdown"], "\(name): \(msgs)")
        }
        let exit = child.waitForExit(timeout: 5)
        #expect(exit?.reason == .exit && exit?.status == 0, "exit: \(String(describing: exit)); stderr: \(child.stderr)")
        #expect(Date().timeIntervalSince(started) < 2, "clients drained at once: no need to wait for the 2 s drain timeout")
        let err = child.stderr
        #expect(err.contains(#"msg=draining"#) && err.contains("signal=SIGTERM"), "\(err)")
        #expect(err.contains(#"msg=stopped"#), "\(err)")
    }

    @Test("binary: a second SIGTERM during a long drain exits at once with 0", arguments: allIOModes)
    func secondSignal(mode: IOModeSetting) throws {
        let child = try ChildServer(args: ["--host", "127.0.0.1", "--port", "0", "--io", mode.rawValue, "--threads", "1",
                                           "--drain-timeout-ms", "30000", "--log-file", ""])
        let line = try #require(child.waitForStartLine(), "no start line; stderr: \(child.stderr)")
        let port = try #require(addressPort(line))
        let q = try QuietClient(port: port)
        try makeStuck(q)
        let (st, busy) = statsEventually(port, timeout: 3) { statsTotal($0, "messages_in") >= 251 }
        try #require(busy, "the stuck client's pings were not processed: \(st["totals"] ?? "")")
        let a = try TestClient(port: port)
        try a.hello("second")

        child.terminate()
        #expect(try a.read().type == "shutdown")
        Thread.sleep(forTimeInterval: 0.5)
        try #require(child.process.isRunning, "the drain should still be waiting for the stuck client; stderr: \(child.stderr)")
        let second = Date()
        child.terminate()
        let exit = child.waitForExit(timeout: 3)
        #expect(exit?.reason == .exit && exit?.status == 0, "second SIGTERM: \(String(describing: exit)); stderr: \(child.stderr)")
        #expect(Date().timeIntervalSince(second) < 1.5, "exits at once, not after the 30 s drain")
        #expect(child.stderr.contains("second signal"), "\(child.stderr)")
    }
}

/// The body of `stopClosesOnlyItsOwn`, run only in the child process it starts.
@Suite("Ops: fd probe (child process only)")
struct OpsFDProbe {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["OPS_FD_PROBE"] != nil))
    func probe() throws {
        let mode = IOModeSetting(rawValue: ProcessInfo.processInfo.environment["OPS_FD_PROBE"] ?? "") ?? .epoll
        print("OpsFDProbe ran (\(mode))")
        // A connection closed by the backend in the very turn the reactor sees `stopping` is
        // still in the connection table when the stop path closes every table entry's fd; if
        // its number was reused meanwhile, somebody else's descriptor goes. Descriptors opened
        // by this thread while the server stops must all survive.
        var closedCanaries: [String] = []
        for round in 0..<60 where closedCanaries.isEmpty {
            var c = ServerConfig()
            c.port = 0
            c.io = mode
            c.threads = 1
            c.logFile = ""
            quietMonitor(&c)
            let server = Server(config: c)
            try server.start()
            var clients: [TestClient] = []
            for i in 0..<48 {
                let t = try TestClient(port: server.port)
                try t.hello("fd-\(i)")
                clients.append(t)
            }
            for t in clients { t.close() }       // 48 EOFs for the reactor to process ...
            let stopped = Locked(false)
            let stopper = HelperThread { server.stop(); stopped.withLock { $0 = true } }   // ... as it stops
            var canaries: [Int32] = []
            while !stopped.value && canaries.count < 20_000 {
                let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
                if fd >= 0 { canaries.append(fd) }
            }
            #expect(stopper.join(timeout: 10))
            for fd in canaries {
                if fcntl(fd, F_GETFD) == -1 && errno == EBADF {
                    closedCanaries.append("round \(round): fd \(fd)")
                } else {
                    close(fd)
                }
            }
        }
        #expect(closedCanaries.isEmpty, "descriptors this test opened were closed by Server.stop(): \(closedCanaries.prefix(8))")
    }
}
