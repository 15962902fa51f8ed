// The log file: --log-file / --log-max-bytes / --log-keep on the binary, size-based rotation,
// key=value lines.

import Foundation
import Testing
import UringServer

@Suite("Ops: log file")
struct OpsLogTests {

    @Test("--log-max-bytes 2048 --log-keep 2: rotated files x.log.1, x.log.2 (never .3), key=value lines")
    func rotation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ops-log-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("x.log").path
        let fm = FileManager.default

        // The server logs little on its own (start, draining, stopped, monitor alerts): run it
        // repeatedly against the same file until it has rotated three times (~330 bytes a run).
        var runs = 0
        var rotations = 0
        var lastStartTS = ""
        while runs < 30 {
            let sizeBefore = (try? fm.attributesOfItem(atPath: log)[.size] as? Int) ?? 0
            let child = try ChildServer(args: ["--host", "127.0.0.1", "--port", "0", "--io", "epoll", "--threads", "1",
                                               "--log-file", log, "--log-max-bytes", "2048", "--log-keep", "2"])
            let start = try #require(child.waitForStartLine(), "run \(runs): no start line; stderr: \(child.stderr)")
            lastStartTS = logField("ts", in: start) ?? ""
            child.terminate()
            let exit = child.waitForExit(timeout: 5)
            #expect(exit?.status == 0, "run \(runs): \(String(describing: exit)); stderr: \(child.stderr)")
            // stderr always has the whole story (written synchronously); the file must too.
            #expect(child.stderr.contains("msg=stopped"), "run \(runs) stderr: \(child.stderr)")
            runs += 1
            let sizeAfter = (try? fm.attributesOfItem(atPath: log)[.size] as? Int) ?? 0
            if sizeAfter < sizeBefore { rotations += 1 }
            if rotations >= 3 { break }
        }
        #expect(rotations >= 3, "\(runs) runs rotated \(rotations) times")
        #expect(fm.fileExists(atPath: log + ".1"), "x.log.1")
        #expect(fm.fileExists(atPath: log + ".2"), "x.log.2")
        #expect(!fm.fileExists(atPath: log + ".3"), "log_keep=2 keeps two old files")
        let files = try fm.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(files == ["x.log", "x.log.1", "x.log.2"], "\(files)")

        for suffix in [".1", ".2"] {
            let size = (try fm.attributesOfItem(atPath: log + suffix)[.size] as? Int) ?? 0
            #expect(size >= 2048 && size < 2048 + 400, "x.log\(suffix) is rotated once past 2048 bytes: \(size)")
        }

        // Oldest first: the kept stream is a contiguous tail of everything logged.
        var lines: [String] = []
        for suffix in [".2", ".1", ""] {
            let text = try String(contentsOfFile: log + suffix, encoding: .utf8)
            #expect(text.isEmpty || text.hasSuffix("\n"), "x.log\(suffix) ends with a whole line")
            lines += text.split(separator: "\n").map(String.init)
        }
        let pattern = try NSRegularExpression(
            pattern: #"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(trace|debug|info|notice|warning|error|critical) msg=("([^"\\]|\\.)*"|\S+)( [a-z_]+=("([^"\\]|\\.)*"|\S+))*$"#)
        for l in lines {
            let ok = pattern.firstMatch(in: l, range: NSRange(l.startIndex..., in: l)) != nil
            #expect(ok, "not a key=value log line: \(l)")
        }
        let started = lines.filter { $0.contains(#"msg="tcpserver started""#) }
        #expect(started.allSatisfy { logField("io", in: $0) == "epoll" && logField("threads", in: $0) == "1" })
        #expect(lines.contains { $0.contains("msg=draining") && $0.contains("signal=SIGTERM") })

        // Every run logs started, draining, stopped — including the last, which exit()s right
        // after logging "stopped" (the file is written by a thread of its own).
        let msgs = lines.map { logMessage($0) ?? "" }
        if let lastStart = lines.lastIndex(where: { $0.contains(#"msg="tcpserver started""#) }) {
            #expect(logField("ts", in: lines[lastStart]) == lastStartTS, "the newest start line is the last run's")
            let tail = lines[(lastStart + 1)...].map { logMessage($0) ?? "" }
            #expect(tail == ["draining", "stopped"], "the last run's lines after its start: \(tail)")
        }
        var i = 0
        var incomplete: [String] = []
        while i < msgs.count {
            if msgs[i] == "tcpserver started" {
                let next = Array(msgs[(i + 1)..<min(msgs.count, i + 3)])
                if next != ["draining", "stopped"] { incomplete.append("\(logField("ts", in: lines[i]) ?? "?") → \(next)") }
            }
            i += 1
        }
        #expect(incomplete.isEmpty, "runs whose draining/stopped lines never reached the file: \(incomplete) of \(started.count)")
    }
}

/// The `msg=` value of a key=value log line, unquoted (`msg="a b"` or `msg=word`).
func logMessage(_ line: String) -> String? {
    guard let r = line.range(of: " msg=") else { return nil }
    let rest = line[r.upperBound...]
    if rest.hasPrefix("\"") {
        var out = ""
        var escaped = false
        for ch in rest.dropFirst() {
            if escaped { out.append(ch); escaped = false; continue }
            if ch == "\\" { escaped = true; continue }
            if ch == "\"" { return out }
            out.append(ch)
        }
        return nil
    }
    return String(rest.prefix { $0 != " " })
}
