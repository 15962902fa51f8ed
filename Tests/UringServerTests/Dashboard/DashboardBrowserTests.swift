// GET /dashboard in a real headless browser (Debian's `chromium`), against an in-process server (both io modes)
// under chat load: the page must poll /stats, fill its header and draw every chart.
//
// How the browser is driven (no DevTools protocol, no extra packages):
//   chromium --headless=new --no-sandbox --disable-gpu --virtual-time-budget=6000 --dump-dom URL
// With a virtual-time budget, timers (the page's 1 s setInterval) run on virtual time, which
// jumps ahead whenever the page is idle, but virtual time is *paused while a network fetch is in
// flight*, so every poll really reaches the server and 6000 ms of budget gives ~6 polls in a
// second or two of wall time. `--dump-dom` prints the DOM once the budget is spent. The page
// records what it drew (`canvas[data-points]`, `body[data-polls]`), which is what is checked.
// The screenshot is a second run with `--screenshot=PATH --window-size=1280,900` and the same
// budget. See docs/profiling.md ("Dashboard in a browser").
//
// If chromium is missing the test fails (it does not skip): `make test` installs the Debian
// package `chromium` (Makefile APT_PACKAGES).

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

@Suite("Dashboard: browser", .serialized)
struct DashboardBrowserTests {

    @Test("polls /stats under load and draws every chart; screenshot", .timeLimit(.minutes(4)),
          arguments: allIOModes)
    func dashboardUnderLoad(mode: IOModeSetting) throws {
        let chromium = try #require(DashboardBrowser.find(), """
            chromium not found on PATH (looked for \(DashboardBrowser.names.joined(separator: ", "))). \
            Install Debian's package: apt-get install -y chromium (it is in the Makefile's APT_PACKAGES, \
            so `make test` installs it).
            """)
        try withServer(mode, configure: { c in
            c.rateLimitPerSec = 0          // the load below is above the default per-connection limit
            c.maxMemoryMB = 1_000_000      // the test runner's RSS is far above the lean binary's
            c.maxLatencyMs = 1_000_000     // threshold: keep the monitor quiet (page shows "healthy")
            c.minThroughput = 0
            c.maxErrorRate = 1_000_000
        }) { port in
            let load = try DashChatLoad(port: port, senders: 2, readers: 3)
            defer { load.stop() }
            let ws = try WSClient(port: port)   // the page shows the open WebSocket count
            try ws.hello("dash-ws")
            // Let a second of load land in the per-second snapshots before the first poll.
            Thread.sleep(forTimeInterval: 1.2)

            let url = "http://127.0.0.1:\(port)/dashboard"
            let dump = try DashboardBrowser.run(chromium, ["--dump-dom", url], timeout: 90)
            try #require(dump.exitCode == 0 && !dump.stdout.isEmpty,
                         "chromium --dump-dom failed (exit \(dump.exitCode)); stderr tail:\n\(dump.stderrTail)")
            let dom = dump.stdout

            // Every chart drew points.
            for id in ["throughput", "latency", "connections", "memory"] {
                let points = DashboardDOM.canvasPoints(dom, id: id)
                #expect((points ?? 0) > 0, "canvas #\(id): data-points=\(points.map(String.init) ?? "missing")\n\(DashboardDOM.excerpt(dom))")
            }
            let polls = DashboardDOM.bodyPolls(dom)
            #expect((polls ?? 0) >= 2, "body data-polls=\(polls.map(String.init) ?? "missing") — the page polled /stats fewer than 2 times")
            #expect(DashboardDOM.text(dom, id: "io") == mode.rawValue, "io mode field: \(DashboardDOM.text(dom, id: "io") ?? "missing")")
            #expect(DashboardDOM.text(dom, id: "v-ws") == "1", "WebSocket count: \(DashboardDOM.text(dom, id: "v-ws") ?? "missing")")
            #expect(DashboardDOM.text(dom, id: "threads") == "2", "threads field: \(DashboardDOM.text(dom, id: "threads") ?? "missing")")
            let kernel = DashboardDOM.text(dom, id: "kernel") ?? ""
            #expect(!kernel.isEmpty && kernel != "–", "kernel field: '\(kernel)'")
            #expect(DashboardDOM.text(dom, id: "state") == "healthy", "state pill: \(DashboardDOM.text(dom, id: "state") ?? "missing")")
            // The page's error line is empty (the script text itself contains "cannot read /stats").
            let errorLine = DashboardDOM.text(dom, id: "error")
            #expect(errorLine == "", "the page's error line: \(errorLine.map { "'\($0)'" } ?? "missing")")
            #expect(!(errorLine ?? "").contains("cannot read /stats"))
            // The tables were filled from /stats too (one row per reactor).
            #expect(DashboardDOM.rowCount(dom, tableId: "reactors") == 1 + 2, "reactors table rows")
            #expect(DashboardDOM.rowCount(dom, tableId: "flags") ?? 0 >= 2, "flags table rows")
            #expect(load.delivered > 0, "the chat load delivered nothing (errors: \(load.errors))")

            // Screenshot, as a test artefact (under .build, so never committed).
            let png = DashboardBrowser.artifactsDir.appendingPathComponent(mode == .uring ? "dashboard.png" : "dashboard-\(mode.rawValue).png")
            try? FileManager.default.createDirectory(at: DashboardBrowser.artifactsDir, withIntermediateDirectories: true)
            try? FileManager.default.removeItem(at: png)
            let shot = try DashboardBrowser.run(chromium, ["--screenshot=\(png.path)", "--window-size=1280,900",
                                                           "--hide-scrollbars", url], timeout: 90)
            #expect(shot.exitCode == 0, "chromium --screenshot failed (exit \(shot.exitCode)); stderr tail:\n\(shot.stderrTail)")
            let size = (try? FileManager.default.attributesOfItem(atPath: png.path)[.size] as? Int) ?? nil
            #expect((size ?? 0) > 10_000, "screenshot \(png.path): \(size.map { "\($0) bytes" } ?? "missing"), expected > 10 KB")
            if let size { print("dashboard screenshot: \(png.path) (\(size) bytes)") }
        }
    }
}

// MARK: - chat load

/// Background chat traffic: every client joins room "dash"; senders send batches of send_chat
/// paced to ~2000 messages/s in all, every client drains what it receives (raw recv, the
/// contents do not matter here).
final class DashChatLoad: @unchecked Sendable {
    private let stopFlag = Locked(false)
    private let counters = Locked((delivered: 0, errors: [String]()))
    private var threads: [HelperThread] = []
    private var clients: [TestClient] = []

    var delivered: Int { counters.value.delivered }
    var errors: [String] { counters.value.errors }

    init(port: Int, senders: Int, readers: Int) throws {
        for i in 0..<(senders + readers) {
            let c = try TestClient(port: port)
            try c.hello("dash\(i)")
            try c.join("dash")
            clients.append(c)
        }
        for (i, c) in clients.enumerated() {
            let isSender = i < senders
            threads.append(HelperThread { [self] in self.loop(c, sender: isSender, id: i) })
        }
    }

    private func loop(_ c: TestClient, sender: Bool, id: Int) {
        var buf = [UInt8](repeating: 0, count: 65536)
        var seq = 0
        while !stopFlag.value {
            if sender {
                var batch = ""
                for _ in 0..<20 {
                    batch += J.obj(["type": "send_chat", "room": "dash", "text": "load \(id) #\(seq)"]) + "\n"
                    seq += 1
                }
                do { try c.send(batch) } catch {
                    counters.withLock { $0.errors.append("send: \(error)") }
                    return
                }
            }
            // Drain for up to 20 ms (senders: this also paces them to ~1000 msg/s each).
            let until = Date().addingTimeInterval(0.02)
            while true {
                let left = Int32(max(0, until.timeIntervalSinceNow * 1000))
                var p = pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)
                if poll(&p, 1, left) <= 0 { break }
                let n = buf.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
                if n == 0 {
                    counters.withLock { $0.errors.append("client \(id): server closed the connection") }
                    return
                }
                if n < 0 { if errno == EAGAIN || errno == EINTR { continue }; break }
                let lines = buf[0..<n].reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
                counters.withLock { $0.delivered += lines }
            }
        }
    }

    func stop() {
        stopFlag.withLock { $0 = true }
        for t in threads { _ = t.join(timeout: 10) }
        for c in clients { c.close() }
    }
}

// MARK: - browser

enum DashboardBrowser {
    static let names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]

    /// `.build/artifacts` at the package root (found from this file's path).
    static var artifactsDir: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".build/artifacts")
    }

    static func find() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for name in names {
            for dir in path.split(separator: ":") {
                let p = "\(dir)/\(name)"
                if FileManager.default.isExecutableFile(atPath: p) { return p }
            }
        }
        return nil
    }

    struct Result { var exitCode: Int32; var stdout: String; var stderrTail: String }

    /// One headless run with a fresh profile directory; killed after `timeout` seconds.
    static func run(_ chromium: String, _ args: [String], timeout: Double) throws -> Result {
        let tmp = FileManager.default.temporaryDirectory
            .appendingPathComponent("dashboard-chromium-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let outURL = tmp.appendingPathComponent("stdout"), errURL = tmp.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
        defer { try? out.close(); try? err.close() }

        let p = Process()
        p.executableURL = URL(fileURLWithPath: chromium)
        p.arguments = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--user-data-dir=\(tmp.appendingPathComponent("profile").path)",
            "--virtual-time-budget=6000",
        ] + args
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        var timedOut = false
        if p.isRunning {
            timedOut = true
            p.terminate()
            Thread.sleep(forTimeInterval: 2)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        let stdout = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        let tail = stderr.split(separator: "\n").suffix(15).joined(separator: "\n")
        return Result(exitCode: timedOut ? -1 : p.terminationStatus, stdout: stdout,
                      stderrTail: (timedOut ? "(killed after \(Int(timeout)) s)\n" : "") + tail)
    }
}

// MARK: - DOM checks (plain text matching on chromium's serialisation)

enum DashboardDOM {
    /// The attributes of the first start tag `<tag … id="id" …>`.
    static func startTag(_ dom: String, tag: String, id: String) -> String? {
        var search = dom[...]
        while let open = search.range(of: "<\(tag)") {
            guard let close = search[open.upperBound...].firstIndex(of: ">") else { return nil }
            let attrs = String(search[open.upperBound..<close])
            if attrs.contains("id=\"\(id)\"") { return attrs }
            search = search[close...]
        }
        return nil
    }

    static func attribute(_ attrs: String, _ name: String) -> String? {
        guard let r = attrs.range(of: " \(name)=\"") else { return nil }
        let rest = attrs[r.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return String(rest[..<end])
    }

    static func canvasPoints(_ dom: String, id: String) -> Int? {
        startTag(dom, tag: "canvas", id: id).flatMap { attribute($0, "data-points") }.flatMap { Int($0) }
    }

    static func bodyPolls(_ dom: String) -> Int? {
        guard let r = dom.range(of: "<body") else { return nil }
        guard let end = dom[r.upperBound...].firstIndex(of: ">") else { return nil }
        return attribute(String(dom[r.upperBound..<end]), "data-polls").flatMap { Int($0) }
    }

    /// Text content of the element with `id` (no nested markup expected).
    static func text(_ dom: String, id: String) -> String? {
        guard let r = dom.range(of: "id=\"\(id)\"") else { return nil }
        guard let gt = dom[r.upperBound...].firstIndex(of: ">") else { return nil }
        let rest = dom[dom.index(after: gt)...]
        guard let lt = rest.firstIndex(of: "<") else { return nil }
        return String(rest[..<lt]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `<tr>` rows in the table with `id`.
    static func rowCount(_ dom: String, tableId: String) -> Int? {
        guard let r = dom.range(of: "<table id=\"\(tableId)\"") else { return nil }
        guard let end = dom[r.upperBound...].range(of: "</table>") else { return nil }
        return dom[r.upperBound..<end.lowerBound].components(separatedBy: "<tr").count - 1
    }

    /// The header and chart tags, for failure messages.
    static func excerpt(_ dom: String) -> String {
        dom.split(separator: "\n").filter { $0.contains("<canvas") || $0.contains("<body") || $0.contains("id=\"error\"") }
            .prefix(10).joined(separator: "\n")
    }
}
