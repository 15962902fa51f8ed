// `tcpserver-cli` (the command-line client) as a child process against a real in-process server,
// in both io modes: pub/sub, an interactive session through a pipe, errors and exit codes,
// stats, ping.

import Foundation
import Testing
import UringServer
#if canImport(Glibc)
import Glibc
#endif

private func locateCLIBinary() -> String? { locateProductBinary("tcpserver-cli") }

/// One `tcpserver-cli` process: stdout and stderr go to files (no pipe can fill up and stall it),
/// stdin is a pipe fed with `input` and then closed, unless `closeInput` is false.
private final class CLIProcess {
    let process = Process()
    let args: [String]
    private let dir: URL
    private let stdin = Pipe()

    init(_ args: [String], input: String = "", closeInput: Bool = true) throws {
        self.args = args
        let binary = try #require(locateCLIBinary(), "tcpserver-cli not found next to the test executable")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("tcpserver-cli-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for f in ["out", "err"] { _ = FileManager.default.createFile(atPath: dir.appendingPathComponent(f).path, contents: nil) }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = args
        process.standardOutput = try FileHandle(forWritingTo: dir.appendingPathComponent("out"))
        process.standardError = try FileHandle(forWritingTo: dir.appendingPathComponent("err"))
        process.standardInput = stdin
        try process.run()
        if !input.isEmpty { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        if closeInput { try stdin.fileHandleForWriting.close() }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: dir)
    }

    var stdout: String { (try? String(contentsOf: dir.appendingPathComponent("out"), encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: dir.appendingPathComponent("err"), encoding: .utf8)) ?? "" }
    var stdoutLines: [String] { stdout.split(separator: "\n").map(String.init) }

    /// The exit status, or nil if it is still running after `timeout` (or died of a signal).
    func waitForExit(timeout: Double = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return nil }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return process.terminationReason == .exit ? process.terminationStatus : nil
    }

    /// Waits until stderr contains `text`; false if the process exits or time runs out first.
    func waitForStderr(_ text: String, timeout: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if stderr.contains(text) { return true }
            if !process.isRunning { return stderr.contains(text) }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    func interrupt() { kill(process.processIdentifier, SIGINT) }
    func closeInput() throws { try stdin.fileHandleForWriting.close() }

    var transcript: String { "tcpserver-cli \(args.joined(separator: " "))\n--- stdout:\n\(stdout)--- stderr:\n\(stderr)" }
}

/// Runs the CLI to completion: (exit status or nil, the process for its output).
private func runCLI(_ args: [String], input: String = "", timeout: Double = 20) throws -> (Int32?, CLIProcess) {
    let p = try CLIProcess(args, input: input)
    return (p.waitForExit(timeout: timeout), p)
}

@Suite("CLI client: tcpserver-cli", .serialized)
struct CLIClientTests {

    @Test("pub/sub round trip: sub --count 2 gets both messages and exits 0", arguments: allIOModes)
    func pubSub(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let p = String(port)
            let sub = try CLIProcess(["--port", p, "--user", "reader", "sub", "news", "--count", "2"])
            #expect(sub.waitForStderr("subscribed to news"), "sub never subscribed: \(sub.transcript)")

            let (s1, pub1) = try runCLI(["--port", p, "--user", "alice", "pub", "news", "first", "message"])
            #expect(s1 == 0, "\(pub1.transcript)")
            #expect(pub1.stdout.contains("published to news (2 members in the room)"), "\(pub1.transcript)")
            let (s2, pub2) = try runCLI(["--port", p, "--user", "bob", "pub", "news", #"say "hi" \ back"#])
            #expect(s2 == 0, "\(pub2.transcript)")

            #expect(sub.waitForExit(timeout: 10) == 0, "sub should exit 0 after 2 messages: \(sub.transcript)")
            let lines = sub.stdoutLines
            let first = lines.firstIndex(of: "[news] alice: first message")
            let second = lines.firstIndex(of: #"[news] bob: say "hi" \ back"#)
            #expect(first != nil && second != nil, "both messages, readable: \(sub.transcript)")
            if let first, let second { #expect(first < second, "in order: \(sub.transcript)") }
            // Presence (the publishers joining) is shown but does not count as a message.
            #expect(lines.contains("[news] * alice joined"), "\(sub.transcript)")
        }
    }

    @Test("sub shows a large room's batched presence diff readably", arguments: allIOModes)
    func subPresenceDiff(mode: IOModeSetting) throws {
        try withServer(mode, configure: { c in
            c.presenceMaxMembers = 1      // the second member on makes the room "large"
            c.presenceIntervalMs = 100
        }) { port in
            let p = String(port)
            let sub = try CLIProcess(["--port", p, "sub", "big", "--count", "1"])
            #expect(sub.waitForStderr("subscribed to big"), "\(sub.transcript)")
            let carol = try TestClient(port: port)
            try carol.hello("carol")
            try carol.join("big")
            // The diff naming carol goes out within the interval; then a chat ends the sub.
            Thread.sleep(forTimeInterval: 0.4)
            let (status, pub) = try runCLI(["--port", p, "--user", "dave", "pub", "big", "done"])
            #expect(status == 0, "\(pub.transcript)")
            #expect(sub.waitForExit(timeout: 10) == 0, "\(sub.transcript)")
            let diff = sub.stdoutLines.first { $0.hasPrefix("[big] * presence:") }
            #expect(diff != nil, "a presence line: \(sub.transcript)")
            if let diff { #expect(diff.contains("+carol") && diff.contains("2 members"), "\(diff)") }
            #expect(!sub.stdoutLines.contains("[big] * carol joined"), "no per-event notice past the threshold: \(sub.transcript)")
            _ = carol
        }
    }

    @Test("sub --json prints the raw lines; strings survive escaping both ways", arguments: allIOModes)
    func subJSON(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let p = String(port)
            let sub = try CLIProcess(["--port", p, "sub", "raw", "--count", "1", "--json"])
            #expect(sub.waitForStderr("subscribed to raw"), "\(sub.transcript)")
            let text = "tab\there \"quoted\" back\\slash newline\nbell\u{07} ünï 🚀"
            let (status, pub) = try runCLI(["--port", p, "--user", "esc", "pub", "raw", text])
            #expect(status == 0, "\(pub.transcript)")
            #expect(sub.waitForExit(timeout: 10) == 0, "\(sub.transcript)")
            let chat = try #require(sub.stdoutLines.first { $0.contains(#""type":"chat""#) }, "\(sub.transcript)")
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(chat.utf8)) as? [String: Any])
            #expect(obj["text"] as? String == text, "raw line: \(chat)")
            #expect(obj["from"] as? String == "esc")
        }
    }

    @Test("sub without --count runs until SIGINT, then exits 0", arguments: allIOModes)
    func subInterrupt(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let sub = try CLIProcess(["--port", String(port), "sub", "quiet"])
            #expect(sub.waitForStderr("subscribed to quiet"), "\(sub.transcript)")
            Thread.sleep(forTimeInterval: 0.2)
            #expect(sub.process.isRunning, "sub must keep running without --count: \(sub.transcript)")
            sub.interrupt()
            #expect(sub.waitForExit(timeout: 5) == 0, "SIGINT should exit 0: \(sub.transcript)")
        }
    }

    @Test("interactive through a pipe: /join, a chat line, /quit", arguments: allIOModes)
    func interactivePipe(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let watcher = try TestClient(port: port)
            try watcher.hello("watcher")
            try watcher.join("lobby")
            let (status, cli) = try runCLI(["--port", String(port), "--user", "piper"],
                                           input: "/join lobby\nhello from the pipe\n/quit\nnot sent\n")
            #expect(status == 0, "\(cli.transcript)")
            // Our own line, echoed by the server, printed readably; no prompt in a pipe.
            #expect(cli.stdoutLines.contains("[lobby] piper: hello from the pipe"), "\(cli.transcript)")
            #expect(cli.stdoutLines.contains("[lobby] * you joined (2 members)"), "\(cli.transcript)")
            #expect(!cli.stdout.contains("> "), "no prompt when stdin is not a tty: \(cli.transcript)")
            // The other member got it as chat; nothing after /quit was sent.
            var skipped: [JSONObject] = []
            let chat = try watcher.read(until: "chat", skipped: &skipped)
            #expect(chat["from"] as? String == "piper")
            #expect(chat["text"] as? String == "hello from the pipe")
            // Then it leaves (the connection closes at /quit) without another chat.
            skipped = []
            let left = try watcher.read(until: "user_left", skipped: &skipped)
            #expect(left["user"] as? String == "piper")
            #expect(!skipped.contains { $0["type"] as? String == "chat" }, "only one chat: \(skipped)")
        }
    }

    @Test("interactive at end of input waits for every ack, then exits 0", arguments: allIOModes)
    func interactiveEOF(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let lines = (1...50).map { "line \($0)" }
            let (status, cli) = try runCLI(["--port", String(port), "--user", "eof"],
                                           input: "/join r\n" + lines.joined(separator: "\n") + "\n/leave r\n")
            #expect(status == 0, "\(cli.transcript)")
            // Every line came back (echo) before the exit, in order, and the leave was answered.
            let echoed = cli.stdoutLines.filter { $0.hasPrefix("[r] eof: ") }.map { String($0.dropFirst(9)) }
            #expect(echoed == lines, "\(cli.transcript)")
            #expect(cli.stdoutLines.last == "[r] * you left", "\(cli.transcript)")
        }
    }

    @Test("errors: cannot connect → 2; not_in_room printed with a hint → 1; usage → 64", arguments: allIOModes)
    func errors(mode: IOModeSetting) throws {
        let closed = freePort()
        let (s1, pub) = try runCLI(["--port", String(closed), "pub", "lobby", "hi"])
        #expect(s1 == 2, "\(pub.transcript)")
        #expect(pub.stderr.contains("error: cannot connect to 127.0.0.1:\(closed): Connection refused"), "\(pub.transcript)")

        try withServer(mode) { port in
            let p = String(port)
            // A plain line with no room joined.
            let (s2, a) = try runCLI(["--port", p], input: "hello before joining\n")
            #expect(s2 == 1, "\(a.transcript)")
            #expect(a.stderr.contains("error: not_in_room"), "\(a.transcript)")
            // The server's own not_in_room, mapped to a hint naming the room.
            let (s3, b) = try runCLI(["--port", p], input: "/join here\n/msg elsewhere hi\n")
            #expect(s3 == 1, "\(b.transcript)")
            #expect(b.stderr.contains("error: not_in_room — join room 'elsewhere' before sending to it"), "\(b.transcript)")
            // A refused name: the server's code, and exit 1 before anything else.
            let (s4, c) = try runCLI(["--port", p, "--user", " padded ", "pub", "x", "y"])
            #expect(s4 == 1, "\(c.transcript)")
            #expect(c.stderr.contains("error: bad_name"), "\(c.transcript)")
        }

        for bad in [["pub", "lobby"], ["sub"], ["--port", "abc"], ["--port", "70000", "stats"], ["frobnicate"],
                    ["--nope"], ["stats", "--count", "2"], ["ping", "extra"]] {
            let (s, u) = try runCLI(bad)
            #expect(s == 64, "\(u.transcript)")
            #expect(u.stderr.hasPrefix("error: "), "\(u.transcript)")
        }
        let (sh, help) = try runCLI(["--help"])
        #expect(sh == 0)
        for word in ["usage:", "pub ROOM", "sub ROOM", "stats", "ping", "/join", "/quit"] {
            #expect(help.stdout.contains(word), "--help should mention \(word): \(help.stdout)")
        }
    }

    @Test("--token: refused without it (exit 1, unauthorized), accepted with it", arguments: allIOModes)
    func token(mode: IOModeSetting) throws {
        try withServer(mode, configure: { $0.authToken = "s3cret" }) { port in
            let p = String(port)
            let (s1, a) = try runCLI(["--port", p, "pub", "room", "hi"])
            #expect(s1 == 1, "\(a.transcript)")
            #expect(a.stderr.contains("error: unauthorized — the server needs the right token"), "\(a.transcript)")
            let (s2, b) = try runCLI(["--port", p, "--token", "s3cret", "pub", "room", "hi"])
            #expect(s2 == 0, "\(b.transcript)")
        }
    }

    @Test("stats prints /stats as a table (and raw with --json)", arguments: allIOModes)
    func stats(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let (status, cli) = try runCLI(["--port", String(port), "stats"])
            #expect(status == 0, "\(cli.transcript)")
            let lines = cli.stdoutLines
            func value(_ key: String) -> String? {
                lines.first { $0.hasPrefix(key + " ") }.map { $0.dropFirst(key.count).trimmingCharacters(in: .whitespaces) }
            }
            #expect(value("connections").flatMap { Int($0) } != nil, "connections row: \(cli.transcript)")
            #expect(value("io_mode") == mode.rawValue, "\(cli.transcript)")
            #expect(value("threads") == "2", "\(cli.transcript)")
            #expect(value("totals.accepted").flatMap { Int($0) } != nil, "nested objects flattened: \(cli.transcript)")
            // The reactors array as rows under a header.
            let r = try #require(lines.firstIndex(of: "reactors"), "\(cli.transcript)")
            #expect(lines.count > r + 3, "\(cli.transcript)")
            #expect(lines[r + 1].split(separator: " ").prefix(2) == ["index", "connections"], "\(cli.transcript)")
            #expect(lines[r + 2].split(separator: " ").first == "0" && lines[r + 3].split(separator: " ").first == "1",
                    "one row per reactor: \(cli.transcript)")

            let (sj, json) = try runCLI(["--port", String(port), "stats", "--json"])
            #expect(sj == 0, "\(json.transcript)")
            let obj = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect(obj?["connections"] is NSNumber, "\(json.transcript)")
        }
    }

    @Test("ping prints one rtt line per pong and a min/avg/max summary", arguments: allIOModes)
    func ping(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let (status, cli) = try runCLI(["--port", String(port), "ping", "--count", "3", "--interval", "10"])
            #expect(status == 0, "\(cli.transcript)")
            let lines = cli.stdoutLines
            let rtts = lines.filter { $0.hasPrefix("pong from 127.0.0.1:\(port): seq=") }
            #expect(rtts.count == 3, "\(cli.transcript)")
            for (i, l) in rtts.enumerated() {
                #expect(l.contains("seq=\(i + 1) time="), "\(l)")
                #expect(l.hasSuffix(" ms"))
            }
            let summary = try #require(lines.last)
            #expect(summary.hasPrefix("3 pings, 3 pongs, rtt min/avg/max = "), "\(cli.transcript)")
            let figures = summary.split(separator: "=").last.map {
                $0.replacingOccurrences(of: " ms", with: "").trimmingCharacters(in: .whitespaces)
                    .split(separator: "/").compactMap { Double($0) }
            } ?? []
            #expect(figures.count == 3, "\(summary)")
            if figures.count == 3 { #expect(figures[0] <= figures[1] && figures[1] <= figures[2] && figures[0] > 0, "\(summary)") }
        }
    }
}
