// WebSocket figures in /stats (totals websocket_connections, websocket_frames_in/out) and
// /metrics (tcpserver_websocket_*), both io modes.

import Foundation
import Testing
import UringServer

@Suite("WebSocket: stats and metrics")
struct WebSocketStatsTests {

    @Test("open WebSockets and frames are counted; a closed one leaves the count", arguments: allIOModes)
    func counted(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try WSClient(port: port), b = try WSClient(port: port)
            try a.hello("st-a"); try b.hello("st-b")
            try a.join("st"); try b.join("st")
            try a.send(["type": "send_chat", "room": "st", "text": "x"])
            _ = try b.read(until: "chat")
            // Snapshots are published once a second.
            var s = try fetchStats(port)
            let deadline = Date().addingTimeInterval(5)
            while statsTotal(s, "websocket_connections") != 2 && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.2)
                s = try fetchStats(port)
            }
            #expect(statsTotal(s, "websocket_connections") == 2, "\(s["totals"] ?? "nil")")
            #expect(statsTotal(s, "websocket_frames_in") >= 5, "hello, join ×2, send_chat")
            #expect(statsTotal(s, "websocket_frames_out") >= 6, "welcome, joined ×2, user_joined, chat")
            let m = parseMetrics(try httpGet(port, "/metrics").body)
            #expect(m["tcpserver_websocket_connections"] == 2, "\(m.filter { $0.key.contains("websocket") })")
            #expect((m["tcpserver_websocket_frames_in_total"] ?? 0) >= 5)
            #expect((m["tcpserver_websocket_frames_out_total"] ?? 0) >= 6)

            try a.sendFrame(8, [0x03, 0xE8])
            #expect(try a.readClose().closeCode == 1000)
            let later = Date().addingTimeInterval(5)
            while statsTotal(s, "websocket_connections") != 1 && Date() < later {
                Thread.sleep(forTimeInterval: 0.2)
                s = try fetchStats(port)
            }
            #expect(statsTotal(s, "websocket_connections") == 1)
        }
    }
}
