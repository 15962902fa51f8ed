// The WebSocket opening handshake on /ws over real sockets, both io modes: the RFC 6455 sample
// key, refusals (400, 426, 403, 405) with their reasons, the origin rule and its config, and
// 10,000 bad handshakes leaving a child server's fds and RSS where they were.

import Foundation
import Testing
import UringServer

@Suite("WebSocket: handshake")
struct WebSocketHandshakeTests {

    @Test("101 with the RFC 6455 sample accept value", arguments: allIOModes)
    func accept(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let ws = try WSClient(port: port)
            // RFC 6455 §1.3: this key gives s3pPLMBiTxaQ9kYGzzhZRbK+xOo= (also what Python's hashlib says).
            #expect(ws.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            #expect(ws.headers["upgrade"]?.lowercased() == "websocket")
            #expect(ws.headers["connection"]?.lowercased() == "upgrade")
            #expect(ws.headers["sec-websocket-extensions"] == nil, "permessage-deflate is declined")
            let w = try ws.hello("hs-a")
            #expect(w["user"] as? String == "hs-a")
            // Same-origin page (Origin's host:port = Host) and Firefox's "keep-alive, Upgrade".
            let page = try WSClient(port: port, origin: "http://127.0.0.1:\(port)")
            try page.hello("hs-b")
            let ff = try WSClient(port: port, rawHandshake: WSClient.request(port: port).replacingOccurrences(
                of: "Connection: Upgrade", with: "Connection: keep-alive, Upgrade"))
            #expect(ff.status.hasPrefix("HTTP/1.1 101"), "\(ff.status)")
        }
    }

    @Test("bad handshakes: 400 / 426 / 403 / 405, each with a reason", arguments: allIOModes)
    func refusals(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            func answer(_ raw: String) throws -> (String, [String: String]) {
                let c = try WSClient(port: port, rawHandshake: raw)
                return (c.status, c.headers)
            }
            let good = WSClient.request(port: port)
            let noKey = good.replacingOccurrences(of: "Sec-WebSocket-Key: \(WSClient.sampleKey)\r\n", with: "")
            #expect(try answer(noKey).0.hasPrefix("HTTP/1.1 400"))
            #expect(try answer(WSClient.request(port: port, key: "short==")).0.hasPrefix("HTTP/1.1 400"))
            #expect(try answer(WSClient.request(port: port, key: "dGhlIHNhbXBsZSBub25jZR==")).0.hasPrefix("HTTP/1.1 400"),
                    "unused Base64 bits must be zero")
            let twoKeys = WSClient.request(port: port, extraHeaders: "Sec-WebSocket-Key: \(WSClient.sampleKey)\r\n")
            #expect(try answer(twoKeys).0.hasPrefix("HTTP/1.1 400"))
            #expect(try answer(good.replacingOccurrences(of: "Upgrade: websocket\r\n", with: "")).0.hasPrefix("HTTP/1.1 400"))
            #expect(try answer(good.replacingOccurrences(of: "Connection: Upgrade", with: "Connection: close")).0.hasPrefix("HTTP/1.1 400"))
            #expect(try answer(good.replacingOccurrences(of: "HTTP/1.1", with: "HTTP/1.0")).0.hasPrefix("HTTP/1.1 400"))
            let (v, vh) = try answer(WSClient.request(port: port, version: "8"))
            #expect(v.hasPrefix("HTTP/1.1 426") && vh["sec-websocket-version"] == "13", "\(v) \(vh)")
            let (o, _) = try answer(WSClient.request(port: port, origin: "https://evil.example"))
            #expect(o.hasPrefix("HTTP/1.1 403"))
            #expect(try answer(WSClient.request(port: port, origin: "http://127.0.0.1:1")).0.hasPrefix("HTTP/1.1 403"),
                    "another port is another origin")
            let (p, ph) = try answer(good.replacingOccurrences(of: "GET /ws", with: "POST /ws"))
            #expect(p.hasPrefix("HTTP/1.1 405") && ph["allow"] == "GET")
            // The body says why.
            let r = try httpRequest(port: port, noKey)
            #expect(r.body.contains("Sec-WebSocket-Key"), "\(r.body)")
        }
    }

    @Test("ws_allowed_origins: * allows any origin, a list allows exactly its origins", arguments: allIOModes)
    func originConfig(mode: IOModeSetting) throws {
        try withServer(mode, configure: { setConfig(&$0, "ws_allowed_origins", "*") }) { port in
            _ = try WSClient(port: port, origin: "https://anywhere.example")
        }
        try withServer(mode, configure: { setConfig(&$0, "ws_allowed_origins", "https://a.example, https://b.example") }) { port in
            _ = try WSClient(port: port, origin: "https://b.example")
            let c = try WSClient(port: port, rawHandshake: WSClient.request(port: port, origin: "http://127.0.0.1:\(port)"))
            #expect(c.status.hasPrefix("HTTP/1.1 403"), "a list replaces the same-host rule")
        }
    }

    @Test("10,000 bad handshakes: fds and RSS of a child server back at baseline", arguments: allIOModes)
    func badHandshakeSoak(mode: IOModeSetting) throws {
        let child = try ChildServer(args: ["--host", "127.0.0.1", "--port", "0", "--io", mode.rawValue, "--threads", "2",
                                           "--log-file", ""])
        defer { child.terminate(); _ = child.waitForExit(timeout: 5) }
        let line = try #require(child.waitForStartLine(), "no start line; stderr: \(child.stderr)")
        let port = try #require(addressPort(line))
        let pid = child.process.processIdentifier
        let requests = [
            WSClient.request(port: port, key: "short=="),                        // 400
            WSClient.request(port: port, version: "7"),                          // 426
            WSClient.request(port: port, origin: "https://evil.example"),        // 403
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",             // cut off mid-head
        ]
        func round(_ n: Int) throws {
            for i in 0..<n {
                let c = try TestClient(port: port)
                try c.send(requests[i % requests.count])
                if i % requests.count == 3 { c.closeAbruptly(); continue }
                let status = try c.readLine()
                #expect(status.hasPrefix("HTTP/1.1 4"), "\(status)")
                c.close()
            }
        }
        try round(400)   // warm-up: pools and tables reach their working size
        Thread.sleep(forTimeInterval: 2.5)
        let fds0 = openFDs(pid), rss0 = residentKB(pid)
        try round(10_000)
        Thread.sleep(forTimeInterval: 2.5)   // idle buffers go back a second after last use
        let fds1 = openFDs(pid), rss1 = residentKB(pid)
        print("ws bad-handshake soak (\(mode)): fds \(fds0) → \(fds1), RSS \(rss0) → \(rss1) KiB")
        #expect(fds1 == fds0, "fds before \(fds0), after 10,000 bad handshakes \(fds1)")
        #expect(rss1 - rss0 < 1024, "RSS before \(rss0) KiB, after \(rss1) KiB")
    }

    @Test("1,000 WebSocket sessions closed every way: fds of a child server back at baseline", arguments: allIOModes)
    func sessionChurn(mode: IOModeSetting) throws {
        let child = try ChildServer(args: ["--host", "127.0.0.1", "--port", "0", "--io", mode.rawValue, "--threads", "2",
                                           "--log-file", "", "--rate-limit-per-sec", "0"])
        defer { child.terminate(); _ = child.waitForExit(timeout: 5) }
        let line = try #require(child.waitForStartLine(), "no start line; stderr: \(child.stderr)")
        let port = try #require(addressPort(line))
        let pid = child.process.processIdentifier
        let listener = try WSClient(port: port)   // a room member that sees every session's chat
        try listener.hello("listener")
        try listener.join("churn")
        Thread.sleep(forTimeInterval: 1.5)
        let fds0 = openFDs(pid)
        for i in 0..<1_000 {
            let ws = try WSClient(port: port)
            try ws.hello("churn\(i)")
            try ws.join("churn")
            try ws.send(["type": "send_chat", "room": "churn", "text": "n\(i)"])
            switch i % 4 {
            case 0:   // close handshake
                try ws.sendFrame(8, [0x03, 0xE8])
                _ = try ws.readClose()
            case 1:   // reset
                ws.tcp.closeAbruptly()
            case 2:   // cut in the middle of a frame
                try ws.tcp.send(Array(WSClient.encode(1, Array("{\"type\":\"ping\"}".utf8)).prefix(5)))
                ws.tcp.close()
            default:  // a protocol error: the server closes (1002)
                try ws.tcp.send(WSClient.encode(1, [0x7B], masked: false))
                _ = try ws.readClose()
            }
            if i % 100 == 99 { _ = try? listener.read(timeout: 0.01) }   // keep the listener's socket drained
        }
        var seen = 0
        while (try? listener.read(timeout: 1)) != nil { seen += 1 }
        Thread.sleep(forTimeInterval: 2.5)
        let fds1 = openFDs(pid)
        print("ws session churn (\(mode)): fds \(fds0) → \(fds1), listener read \(seen) more messages")
        #expect(fds1 == fds0, "fds before \(fds0), after 1,000 sessions \(fds1)")
        try listener.send(["type": "ping"])
        #expect(try listener.read(until: "pong").type == "pong", "the server still serves")
    }
}

/// Open descriptors of process `pid`.
func openFDs(_ pid: Int32) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}

/// VmRSS of process `pid`, KiB.
func residentKB(_ pid: Int32) -> Int {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
}
