// The voice coordinator over real sockets: start_voice / join_voice / end_voice, the tokens it
// issues (checked with the shared secret, as the relay checks them), its errors, and the
// automatic end when the last voice member leaves the room or disconnects.

import Foundation
import Testing
import UringServer
import VoiceWire

private func verify(_ g: VoiceGrant, secret: String = voiceSecret) -> Result<VoiceToken, VoiceToken.Failure> {
    let s = Array(secret.utf8)
    let scratch = UnsafeMutablePointer<UInt8>.allocate(capacity: VoiceToken.scratchBytes)
    defer { scratch.deallocate() }
    return Array(g.token.utf8).withUnsafeBytes { t in s.withUnsafeBytes { VoiceToken.verify(t, secret: $0, scratch: scratch) } }
}

@Suite("Voice: coordinator plugin")
struct VoiceCoordinatorTests {

    @Test("start_voice: a token for the starter, voice_started for the room, join_voice for the others", arguments: allIOModes)
    func startAndJoin(mode: IOModeSetting) throws {
        try withVoice(mode, ttl: 30) { server, relay in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            _ = try drainWithPings(a)
            let before = Int(Date().timeIntervalSince1970 * 1000)
            let ga = try requestVoice(a, "start_voice", room: "lobby")
            #expect(ga.relayPort == relay.port)
            #expect(ga.expires >= before + 29_000 && ga.expires <= before + 31_000, "ttl 30 s: \(ga.expires - before) ms")
            guard case .success(let ta) = verify(ga) else { Issue.record("alice's token does not verify"); return }
            #expect(ta.channel == ga.channel && ta.userHash == VoiceToken.userHash("alice") && Int(ta.expiryMillis) == ga.expires)
            #expect(verify(ga, secret: "other") == .failure(.badMAC))

            let started = try b.read(until: "voice_started")
            #expect(started["room"] as? String == "lobby" && started["by"] as? String == "alice")
            #expect(started["channel"] as? String == String(format: "%08x", ga.channel))
            let gb = try requestVoice(b, "join_voice", room: "lobby")
            #expect(gb.channel == ga.channel && gb.token != ga.token)
            guard case .success(let tb) = verify(gb) else { Issue.record("bob's token does not verify"); return }
            #expect(tb.userHash == VoiceToken.userHash("bob"))
            // join_voice again refreshes the token (same channel).
            #expect(try requestVoice(b, "join_voice", room: "lobby").channel == ga.channel)
        }
    }

    @Test("errors: not_in_room, voice_already_running, voice_not_running, not_voice_starter", arguments: allIOModes)
    func errors(mode: IOModeSetting) throws {
        try withVoice(mode) { server, _ in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            _ = try drainWithPings(a)   // bob's user_joined
            try a.send(["type": "start_voice", "room": "elsewhere"])
            try expectError(a, "not_in_room")
            try a.send(["type": "join_voice", "room": "lobby"])
            try expectError(a, "voice_not_running")
            try a.send(["type": "end_voice", "room": "lobby"])
            try expectError(a, "voice_not_running")
            try a.send(["type": "start_voice"])
            try expectError(a, "missing_field")
            _ = try requestVoice(a, "start_voice", room: "lobby")
            _ = try b.read(until: "voice_started")
            try b.send(["type": "start_voice", "room": "lobby"])
            try expectError(b, "voice_already_running")
            try b.send(["type": "end_voice", "room": "lobby"])
            try expectError(b, "not_voice_starter")
            // Once the starter has left the voice, a member may end it.
            _ = try requestVoice(b, "join_voice", room: "lobby")
            a.close()
            Thread.sleep(forTimeInterval: 0.3)
            try b.send(["type": "end_voice", "room": "lobby"])
            #expect(try b.read(until: "voice_ended")["reason"] as? String == "ended")
        }
    }

    @Test("no_relay without voice_relays; feature_disabled with flag_enable_voice=off", arguments: allIOModes)
    func unconfigured(mode: IOModeSetting) throws {
        try withServer(mode) { port in
            let a = try voiceMember(port, "alice", room: "lobby")
            try a.send(["type": "start_voice", "room": "lobby"])
            try expectError(a, "no_relay")
        }
        try withVoice(mode, configure: { c in setConfig(&c, "flag_enable_voice", "off") }) { server, _ in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            try a.send(["type": "start_voice", "room": "lobby"])
            try expectError(a, "feature_disabled")
        }
    }

    @Test("end_voice by the starter: voice_ended to the room; a new start gets a new channel", arguments: allIOModes)
    func end(mode: IOModeSetting) throws {
        try withVoice(mode) { server, relay in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            let g1 = try requestVoice(a, "start_voice", room: "lobby")
            try a.send(["type": "end_voice", "room": "lobby"])
            for c in [a, b] {
                let e = try c.read(until: "voice_ended")
                #expect(e["room"] as? String == "lobby" && e["reason"] as? String == "ended")
                #expect(e["channel"] as? String == String(format: "%08x", g1.channel))
            }
            let s = relayEventually(relay) { $0.revocations >= 1 }
            #expect(s.revocations >= 1, "the relay got the revocation")
            let g2 = try requestVoice(b, "start_voice", room: "lobby")
            #expect(g2.channel != g1.channel)
            let voice = try fetchStats(server.port)["voice"] as? JSONObject
            #expect(jsonInt(voice?["channels"]) == 1 && jsonInt(voice?["relays"]) == 1 && jsonInt(voice?["revocations_failed"]) == 0,
                    "\(voice ?? [:])")
        }
    }

    @Test("the last voice member leaving the room, or disconnecting, ends the voice", arguments: allIOModes)
    func autoEnd(mode: IOModeSetting) throws {
        try withVoice(mode) { server, _ in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            let w = try voiceMember(server.port, "watcher", room: "lobby")
            _ = try requestVoice(a, "start_voice", room: "lobby")
            _ = try requestVoice(b, "join_voice", room: "lobby")
            // alice leaves the room: bob is still in voice, nothing ends.
            try a.send(["type": "leave_room", "room": "lobby"])
            _ = try a.read(until: "left")
            Thread.sleep(forTimeInterval: 0.2)
            let quiet = try drainWithPings(w)
            #expect(!quiet.contains { $0.type == "voice_ended" }, "voice ended with bob still in it: \(quiet)")
            // bob disconnects: the last voice member is gone.
            b.close()
            let e = try w.read(until: "voice_ended", timeout: 3)
            #expect(e["reason"] as? String == "empty")
            // The room can start voice again.
            _ = try requestVoice(w, "start_voice", room: "lobby")
        }
    }
}
