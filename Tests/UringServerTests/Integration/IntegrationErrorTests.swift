// Error replies of protocol v1 (JSON lines). Malformed input gets an error and the connection
// stays open; frame_too_large and server_full are in the framing / load suites.

import Foundation
import Testing
import UringServer

@Suite("Integration: errors")
struct IntegrationErrorTests {

    @Test("hello_required before hello; the connection stays usable", arguments: allIOModes)
    func helloRequired(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            try c.send(["type": "ping"])
            try expectError(c, "hello_required", "for ping")
            try c.send(["type": "join_room", "room": "x"])
            try expectError(c, "hello_required", "for join_room")
            try c.send(["type": "send_chat", "room": "x", "text": "t"])
            try expectError(c, "hello_required", "for send_chat")
            try c.send(["type": "leave_room", "room": "x"])
            try expectError(c, "hello_required", "for leave_room")
            let w = try c.hello("late")
            #expect(w["user"] as? String == "late")
            #expect(try c.join("x")["members"] as? Int == 1)
        }
    }

    @Test("bad_json for malformed JSON and invalid UTF-8; the connection stays open", arguments: allIOModes)
    func badJSON(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            try c.hello("bj")
            try c.join("bj")
            let malformed = [
                #"{"type":"ping""#,
                #"{"type":"ping" "x":1}"#,
                #"{not json at all}"#,
                #"{"type":"send_chat","room":"bj","text":"unterminated}"#,
                #"{"type":"ping","x":"bad \q escape"}"#,
            ]
            for line in malformed {
                try c.send(line + "\n")
                try expectError(c, "bad_json", "for \(line)")
                try c.pingExpectingPongNext()
            }
            // Invalid UTF-8 inside a string: a lone continuation byte, a truncated sequence, an
            // overlong encoding.
            let invalid: [[UInt8]] = [[0xff], [0xe2, 0x82], [0xc0, 0xaf], [0xed, 0xa0, 0x80]]
            for bad in invalid {
                let bytes = Array(#"{"type":"send_chat","room":"bj","text":"x"#.utf8) + bad + Array("y\"}\n".utf8)
                try c.send(bytes)
                try expectError(c, "bad_json", "for invalid UTF-8 \(bad)")
                try c.pingExpectingPongNext()
            }
        }
    }

    @Test("unsupported_type", arguments: allIOModes)
    func unsupportedType(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            try c.hello("ut")
            try c.send(["type": "dance"])
            try expectError(c, "unsupported_type")
            try c.send(["type": "chat", "room": "x", "text": "server-to-client type"])
            try expectError(c, "unsupported_type")
            try c.pingExpectingPongNext()
        }
    }

    @Test("missing_field", arguments: allIOModes)
    func missingField(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            // A hello without user.
            try c.send(["type": "hello"])
            try expectError(c, "missing_field", "for hello without user")
            try c.hello("mf")
            try c.send(["room": "x"])
            try expectError(c, "missing_field", "for a message without type")
            try c.send(["type": "join_room"])
            try expectError(c, "missing_field", "for join_room without room")
            try c.send(["type": "leave_room"])
            try expectError(c, "missing_field", "for leave_room without room")
            try c.join("mf")
            try c.send(["type": "send_chat", "room": "mf"])
            try expectError(c, "missing_field", "for send_chat without text")
            try c.send(["type": "send_chat", "text": "t"])
            try expectError(c, "missing_field", "for send_chat without room")
            try c.pingExpectingPongNext()
        }
    }

    @Test("not_in_room", arguments: allIOModes)
    func notInRoom(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let owner = try TestClient(port: port)
            try owner.hello("owner")
            try owner.join("private")
            let c = try TestClient(port: port)
            try c.hello("outsider")
            try c.send(["type": "send_chat", "room": "private", "text": "let me in"])
            try expectError(c, "not_in_room", "for an existing room")
            try c.send(["type": "send_chat", "room": "nowhere", "text": "x"])
            try expectError(c, "not_in_room", "for a room that does not exist")
            // Nothing leaked to the member.
            try owner.pingExpectingPongNext()
            try c.pingExpectingPongNext()
        }
    }
}
