// GET /chat in headless chromium (both io modes): the page, driven by its query string
// (`?user=…&room=…&send=…`), connects over WebSocket, joins, and sends; a JSON-lines client in
// the same room answers when it sees the page join. The dumped DOM must show the other
// user's message (and the TCP client must have received the page's). A screenshot of the same
// exchange is kept under .build/test-artifacts. How chromium is driven: see
// DashboardBrowserTests (`--virtual-time-budget` + `--dump-dom`).

import Foundation
import Testing
import UringServer

@Suite("WebSocket: /chat in a browser", .serialized)
struct ChatPageBrowserTests {

    /// A JSON-lines member of `room` that answers the first `user_joined` with a chat message
    /// and records the chat messages it gets.
    final class Peer: @unchecked Sendable {
        let client: TestClient
        private let got = Locked([String]())
        private var thread: HelperThread?
        var received: [String] { got.value }

        init(port: Int, user: String, room: String, reply: String) throws {
            client = try TestClient(port: port, timeout: 60)
            try client.hello(user)
            try client.join(room)
            thread = HelperThread { [self] in
                while let m = try? client.read(timeout: 60) {
                    if m.type == "user_joined" { try? client.send(["type": "send_chat", "room": room, "text": reply]) }
                    if m.type == "chat", let t = m["text"] as? String { got.withLock { $0.append(t) } }
                }
            }
        }

        func stop() {
            client.closeAbruptly()
            _ = thread?.join(timeout: 10)
        }
    }

    @Test("two users chat through /chat (WebSocket) and a TCP client; screenshot", .timeLimit(.minutes(3)),
          arguments: allIOModes)
    func chat(mode: IOModeSetting) throws {
        let chromium = try #require(DashboardBrowser.find(), "chromium not found (Makefile APT_PACKAGES installs it)")
        try withServer(mode) { port in
            let peer = try Peer(port: port, user: "tcp-bob", room: "lounge", reply: "hi from tcp-bob")
            defer { peer.stop() }
            let url = "http://127.0.0.1:\(port)/chat?user=web-alice&room=lounge&send=hello%20from%20the%20browser"
            let dump = try DashboardBrowser.run(chromium, ["--virtual-time-budget=5000", "--dump-dom", url], timeout: 90)
            try #require(dump.exitCode == 0 && !dump.stdout.isEmpty,
                         "chromium --dump-dom failed (exit \(dump.exitCode)); stderr tail:\n\(dump.stderrTail)")
            let dom = dump.stdout
            let body = dom.components(separatedBy: "<body").dropFirst().first?.prefix { $0 != ">" } ?? ""
            #expect(body.contains("data-state=\"joined\""), "page state: \(body.prefix(120))")
            #expect(dom.contains("data-from=\"tcp-bob\"") && dom.contains("hi from tcp-bob"),
                    "the other user's message in the DOM:\n\(DashboardDOM.excerpt(dom))")
            #expect(dom.contains("web-alice (you)") && dom.contains("<li>tcp-bob</li>"), "members list")
            #expect(waitFor(5) { peer.received.contains("hello from the browser") }, "TCP peer got: \(peer.received)")

            let png = DashboardBrowser.artifactsDir.appendingPathComponent(mode == .uring ? "chat.png" : "chat-\(mode.rawValue).png")
            try? FileManager.default.createDirectory(at: DashboardBrowser.artifactsDir, withIntermediateDirectories: true)
            try? FileManager.default.removeItem(at: png)
            let shot = try DashboardBrowser.run(chromium, ["--virtual-time-budget=5000", "--screenshot=\(png.path)",
                                                           "--window-size=1000,600", "--hide-scrollbars",
                                                           url.replacingOccurrences(of: "web-alice", with: "web-carol")],
                                                timeout: 90)
            #expect(shot.exitCode == 0, "chromium --screenshot failed (exit \(shot.exitCode)); stderr tail:\n\(shot.stderrTail)")
            let size = (try? FileManager.default.attributesOfItem(atPath: png.path)[.size] as? Int) ?? nil
            #expect((size ?? 0) > 5_000, "screenshot \(png.path): \(size.map { "\($0) bytes" } ?? "missing")")
            if let size { print("chat screenshot: \(png.path) (\(size) bytes)") }
        }
    }
}

/// Polls `condition` every 20 ms for up to `seconds`.
private func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        Thread.sleep(forTimeInterval: 0.02)
    }
    return condition()
}
