// More sends in one turn than the io_uring submission queue has entries: with ring_entries 64
// one room message to 300 members prepares 300 sends in a single turn, so most wait in the
// backend's FIFO and go into the SQ before the next submit (never a submit in the middle of
// dispatch). Every member must get every message, whole and in order, in both io modes.

import Foundation
import Testing
import UringServer

@Suite("Integration: a turn with more SQEs than the submission queue holds")
struct IntegrationSubmissionQueueTests {

    @Test("300 members, ring_entries 64: every message reaches every member in order", arguments: allIOModes)
    func overflowingTurn(mode: IOModeSetting) throws {
        try withRunningServer(mode, threads: 1, configure: { c in
            c.ringEntries = 64
            c.rateLimitPerSec = 0
            c.presence = false
        }) { server in
            let port = server.port
            let members = try TestClient.members(300, port: port, user: "sq-", room: "sq-room")
            let pub = try TestClient(port: port)
            try pub.hello("sq-pub")
            try pub.join("sq-room")
            let n = 20
            for i in 0..<n { try pub.send(["type": "send_chat", "room": "sq-room", "text": "m\(i)"]) }
            for (k, m) in members.enumerated() {
                for i in 0..<n {
                    let msg = try m.read(until: "chat")
                    #expect(msg["text"] as? String == "m\(i)", "member \(k) message \(i): \(msg)")
                }
            }
        }
    }
}
