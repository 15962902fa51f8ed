// bad_json and the request id: when the `id` field was read in full before the syntax error,
// the error carries it and an ack follows (like any other failed message); when it could not be
// read (the error comes first, or there is no id), the error has no id and no ack is sent.
// Replies keep request order, so the next request's replies prove nothing slipped in between.

import Foundation
import Testing
import UringServer

/// Reads the next message: `{"type":"error","code":"bad_json",…}` whose `id` is `id` (nil: the
/// error must have no `id` at all).
private func expectBadJSON(_ c: TestClient, id: Any?, _ context: String,
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
    let m = try c.read()
    #expect(m.type == "error" && m["code"] as? String == "bad_json", "\(context): expected bad_json, got \(m)",
            sourceLocation: sourceLocation)
    #expect(!((m["message"] as? String) ?? "").isEmpty, "\(context): error needs a message: \(m)",
            sourceLocation: sourceLocation)
    switch id {
    case nil:
        #expect(m["id"] == nil, "\(context): the id could not be read, so the error has none: \(m)",
                sourceLocation: sourceLocation)
    case let n as Int:
        #expect(m["id"] as? Int == n && !(m["id"] is String), "\(context): error id \(n): \(m)",
                sourceLocation: sourceLocation)
    case let s as String:
        #expect(m["id"] as? String == s, "\(context): error id \"\(s)\": \(m)", sourceLocation: sourceLocation)
    default:
        Issue.record("bad test: id \(String(describing: id))", sourceLocation: sourceLocation)
    }
}

/// Reads the next message: `{"type":"ack","id":id}`.
private func expectAck(_ c: TestClient, id: Any, _ context: String,
                       sourceLocation: SourceLocation = #_sourceLocation) throws {
    let m = try c.read()
    #expect(m.type == "ack", "\(context): expected ack next, got \(m)", sourceLocation: sourceLocation)
    switch id {
    case let n as Int:
        #expect(m["id"] as? Int == n && !(m["id"] is String), "\(context): ack id \(n): \(m)",
                sourceLocation: sourceLocation)
    case let s as String:
        #expect(m["id"] as? String == s, "\(context): ack id \"\(s)\": \(m)", sourceLocation: sourceLocation)
    default:
        Issue.record("bad test: id \(id)", sourceLocation: sourceLocation)
    }
}

/// `{"type":"ping","id":id}` → the next two messages are pong, then ack id: nothing (an ack of
/// an earlier bad line) slipped in before them.
private func pingExpectingPongThenAck(_ c: TestClient, id: Int, _ context: String,
                                      sourceLocation: SourceLocation = #_sourceLocation) throws {
    try c.send(message: #"{"type":"ping","id":\#(id)}"#)
    let pong = try c.read()
    #expect(pong.type == "pong", "\(context): expected pong next (no ack for the bad line), got \(pong)",
            sourceLocation: sourceLocation)
    try expectAck(c, id: id, context, sourceLocation: sourceLocation)
}

@Suite("Integration: bad_json and the request id")
struct IntegrationBadJSONTests {

    @Test("id read before the syntax error: bad_json carries it, an ack follows", arguments: allIOModes)
    func idBeforeError(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            try c.hello("bj-id")

            try c.send(#"{"id":7,"type":"ping",oops}"# + "\n")
            try expectBadJSON(c, id: 7, "number id, then a bare word")
            try expectAck(c, id: 7, "number id, then a bare word")
            // The ping in the bad line was not handled: the next message's replies come next.
            try pingExpectingPongThenAck(c, id: 8, "after the acked bad line")

            // Truncated right after the id.
            try c.send(#"{"id":"a-1","type":"# + "\n")
            try expectBadJSON(c, id: "a-1", "string id, truncated line")
            try expectAck(c, id: "a-1", "string id, truncated line")

            // The id is echoed exactly as sent, escapes included.
            try c.send(#"{"id":"q\"1\\","type":"ping" "x":1}"# + "\n")
            try expectBadJSON(c, id: "q\"1\\", "escaped string id")
            try expectAck(c, id: "q\"1\\", "escaped string id")

            // Invalid UTF-8 after the id.
            try c.send(Array(#"{"id":-3.5,"type":"send_chat","text":"x"#.utf8) + [0xff] + Array("\"}\n".utf8))
            let m = try c.read()
            #expect(m.type == "error" && m["code"] as? String == "bad_json" && (m["id"] as? Double) == -3.5, "\(m)")
            let ack = try c.read()
            #expect(ack.type == "ack" && (ack["id"] as? Double) == -3.5, "\(ack)")

            try pingExpectingPongThenAck(c, id: 11, "after the bad lines")
        }
    }

    @Test("id not readable (error first, unterminated, or no id): bad_json without id, no ack",
          arguments: allIOModes)
    func idNotRead(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            // A valid hello first: a first line starting with a letter would be taken for an
            // HTTP request line (framing detection), not JSON.
            try c.hello("bj-noid")
            let lines = [
                #"{"type":"ping",x,"id":9}"#,            // the error comes before the id
                #"{"type":"ping","id":"abc"#,            // the id's string never ends
                #"{"type":"ping" oops}"#,                // no id at all
                #"not json at all"#,                     // not an object
                #"["type","ping","id",9]"#,              // not an object either
                #"{"type":"ping","id":}"#,               // the id has no value
            ]
            for (i, line) in lines.enumerated() {
                try c.send(line + "\n")
                try expectBadJSON(c, id: nil, line)
                // Were an ack sent for the bad line, it would come before this pong.
                try pingExpectingPongThenAck(c, id: 10 + i, "after \(line)")
            }
        }
    }

    @Test("pipelined: error and ack stay in request order between good requests", arguments: allIOModes)
    func pipelined(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port)
            try c.hello("bj-pipe")
            try c.send([
                #"{"type":"ping","id":1}"#,
                #"{"id":2,"type":"ping",bad}"#,
                #"{"type":"ping",bad,"id":3}"#,
                #"{"type":"ping","id":4}"#,
            ].joined(separator: "\n") + "\n")
            var got: [String] = []
            for _ in 0..<7 {
                let m = try c.read()
                var s = m.type ?? "?"
                if let code = m["code"] as? String { s += ":" + code }
                if let id = m["id"] as? Int { s += "#\(id)" }
                got.append(s)
            }
            #expect(got == ["pong", "ack#1", "error:bad_json#2", "ack#2", "error:bad_json", "pong", "ack#4"], "\(got)")
        }
    }

    @Test("binary framing: bad JSON in a frame carries its id and is acked", arguments: allIOModes)
    func binaryFrame(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let c = try TestClient(port: port, framing: .binary)
            try c.hello("bj-bin")
            try c.send(message: #"{"id":"f-1","type":"ping",}"#)
            try expectBadJSON(c, id: "f-1", "binary frame with an id")
            try expectAck(c, id: "f-1", "binary frame with an id")
            try c.send(message: #"{"type":"ping",}"#)
            try expectBadJSON(c, id: nil, "binary frame without an id")
            try c.send(message: #"{"type":"ping","id":5}"#)
            #expect(try c.read().type == "pong")
            try expectAck(c, id: 5, "binary: next request")
        }
    }
}
