// The shipped pieces as processes: the tcpserver-voice executable (start line, stats port,
// port already taken, SIGTERM), and a coordinator with several relays.

import Foundation
import Testing
import UringServer
import VoiceRelay

/// Runs tcpserver-voice with `args`; stdout and stderr go to one pipe.
private func launchRelay(_ args: [String]) throws -> (Process, Pipe) {
    let binary = try #require(locateProductBinary("tcpserver-voice"), "tcpserver-voice not built next to the tests")
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.filter { $0.key != "VOICE_SECRET" }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    return (p, out)
}

private func firstLine(_ pipe: Pipe) -> String {
    var bytes: [UInt8] = []
    while true {
        let d = pipe.fileHandleForReading.readData(ofLength: 1)
        if d.isEmpty || d.first == 10 { break }
        bytes += d
    }
    return String(decoding: bytes, as: UTF8.self)
}

@Suite("Voice: relay process and several relays")
struct VoiceProcessTests {

    @Test("tcpserver-voice: start line, /stats, refuses a taken port and a missing secret, exits 0 on SIGTERM", arguments: ["uring", "epoll"])
    func process(io: String) throws {
        let (p, out) = try launchRelay(["--port", "0", "--stats-port", "0", "--io", io, "--threads", "2", "--secret", "s"])
        let line = firstLine(out)
        #expect(line.contains("msg=\"voice relay started\"") && line.contains("io=\(io)") && line.contains("threads=2"), "\(line)")
        let port = Int(line.split(separator: " ").first { $0.hasPrefix("address=") }?.split(separator: ":").last ?? "") ?? 0
        let stats = Int(line.split(separator: " ").first { $0.hasPrefix("stats=") }?.split(separator: ":").last ?? "") ?? 0
        #expect(port > 0 && stats > 0, "\(line)")
        let body = try httpGet(stats, "/stats").body
        #expect(body.contains("\"io\":\"\(io)\"") && body.contains("\"drops\":{"), "\(body)")
        #expect(try httpGet(stats, "/nope").statusLine.contains("404"))
        // A second relay on the same port is refused, not silently sharing it.
        let (p2, out2) = try launchRelay(["--port", "\(port)", "--stats-port", "-1", "--secret", "s"])
        let refused = firstLine(out2)
        p2.waitUntilExit()
        #expect(p2.terminationStatus == 1 && refused.contains("cannot bind"), "\(refused)")
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let (p3, out3) = try launchRelay(["--port", "0"])
        let why = firstLine(out3)
        p3.waitUntilExit()
        #expect(p3.terminationStatus == 2 && why.contains("--secret"), "\(why)")
    }

    @Test("several relays: rooms spread over them, a channel keeps its relay", arguments: allIOModes)
    func severalRelays(mode: IOModeSetting) throws {
        try withVoice(mode, configure: { c in setConfig(&c, "voice_relays", "127.0.0.1:4901,127.0.0.1:4902,127.0.0.1:4903") }) { server, _ in
            let c = try TestClient(port: server.port)
            try c.hello("spreader")
            var used: [Int: Int] = [:]
            for i in 0..<24 {
                try c.join("room\(i)")
                let g = try requestVoice(c, "start_voice", room: "room\(i)")
                used[g.relayPort, default: 0] += 1
                #expect(try requestVoice(c, "join_voice", room: "room\(i)").relayPort == g.relayPort)
            }
            #expect(Set(used.keys) == [4901, 4902, 4903], "24 rooms over 3 relays: \(used)")
        }
    }
}
