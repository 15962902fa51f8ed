// The relay end to end, in both io modes: clients get tokens from the coordinator (TCP) and
// exchange datagrams through an in-process relay (UDP, real sockets).

import Foundation
import Testing
import UringServer
import VoiceRelay
import VoiceWire

@Suite("Voice: relay end to end")
struct VoiceRelayTests {

    @Test("two members exchange packets both ways; forged, expired and other-channel tokens get nothing", arguments: allIOModes)
    func exchange(mode: IOModeSetting) throws {
        try withVoice(mode) { server, relay in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            let o = try voiceMember(server.port, "olga", room: "other")
            let ga = try requestVoice(a, "start_voice", room: "lobby")
            let gb = try requestVoice(b, "join_voice", room: "lobby")
            let go = try requestVoice(o, "start_voice", room: "other")
            let ua = try VoiceUDP(relayPort: ga.relayPort), ub = try VoiceUDP(relayPort: gb.relayPort)
            let ma = try ua.joinAcked(ga), mb = try ub.joinAcked(gb)
            #expect(ma != mb)

            ua.audio(ga.channel, seq: 1, Array("hello bob".utf8))
            let atB = try #require(ub.receive(timeout: 2), "bob hears alice")
            #expect(Array(atB[12...]) == Array("hello bob".utf8))
            #expect(voiceHeader(atB).member == ma && voiceHeader(atB).seq == 1 && voiceHeader(atB).channel == ga.channel)
            ub.audio(gb.channel, seq: 7, Array("hi alice".utf8))
            let atA = try #require(ua.receive(timeout: 2), "alice hears bob")
            #expect(Array(atA[12...]) == Array("hi alice".utf8) && voiceHeader(atA).member == mb)

            // Intruders: a forged token, an expired one, olga's token for her own channel
            // presented for alice's, and olga bound to her own channel.
            let forged = try VoiceUDP(relayPort: relay.port)
            let fake = VoiceToken.issue(secret: Array("guess".utf8), channel: ga.channel, user: "mallory", expiryMillis: UInt64(ga.expires))
            forged.send(VoicePacket.make(type: VoicePacket.join, channel: ga.channel, seq: 0, payload: Array(fake.utf8)))
            let expired = try VoiceUDP(relayPort: relay.port)
            let old = VoiceToken.issue(secret: Array(voiceSecret.utf8), channel: ga.channel, user: "late",
                                       expiryMillis: UInt64(Date().timeIntervalSince1970 * 1000) - 1000)
            expired.send(VoicePacket.make(type: VoicePacket.join, channel: ga.channel, seq: 0, payload: Array(old.utf8)))
            let crosser = try VoiceUDP(relayPort: relay.port)
            crosser.join(go, channel: ga.channel)
            let uo = try VoiceUDP(relayPort: relay.port)
            try uo.joinAcked(go)
            for (i, u) in [forged, expired, crosser].enumerated() { u.audio(ga.channel, seq: UInt32(i), [9, 9, 9]) }
            ua.audio(ga.channel, seq: 2, [1])
            #expect(ub.receive(timeout: 2) != nil)
            for (name, u) in [("forged", forged), ("expired", expired), ("other channel", crosser), ("olga", uo)] {
                #expect(u.receive(timeout: 0.3) == nil, "\(name) got a datagram back")
            }
            #expect(ua.receive(timeout: 0.2) == nil, "intruders' audio reached alice")
            let s = relayEventually(relay) { $0.drops["bad_token"]! >= 1 && $0.drops["expired"]! >= 1 && $0.drops["wrong_channel"]! >= 1 && $0.drops["unknown_sender"]! >= 3 }
            #expect(s.drops["bad_token"] == 1 && s.drops["expired"] == 1 && s.drops["wrong_channel"] == 1, "\(s.drops)")
            #expect(s.drops["unknown_sender"] == 3, "\(s.drops)")
            #expect(s.channels == 2 && s.members == 3, "channels \(s.channels) members \(s.members)")
        }
    }

    @Test("after end_voice, relaying stops within one second", arguments: allIOModes)
    func endStops(mode: IOModeSetting) throws {
        try withVoice(mode) { server, relay in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            let ga = try requestVoice(a, "start_voice", room: "lobby")
            let gb = try requestVoice(b, "join_voice", room: "lobby")
            let ua = try VoiceUDP(relayPort: ga.relayPort), ub = try VoiceUDP(relayPort: gb.relayPort)
            try ua.joinAcked(ga)
            try ub.joinAcked(gb)
            ua.audio(ga.channel, seq: 1, [1])
            #expect(ub.receive(timeout: 2) != nil)
            try a.send(["type": "end_voice", "room": "lobby"])
            let ended = Date()
            _ = try b.read(until: "voice_ended")
            let silentAfter = timeUntilSilent(from: ua, to: ub, channel: ga.channel, timeout: 3)
            let stopped = try #require(silentAfter, "packets still relayed 3 s after end_voice")
            #expect(stopped - Date().timeIntervalSince(ended) < 1.0)
            // The old token cannot join again.
            let again = try VoiceUDP(relayPort: relay.port)
            again.join(ga)
            #expect(again.receive(timeout: 0.3) == nil, "an ended channel's token joined again: \(relay.snapshot())")
            let s = relayEventually(relay) { $0.drops["revoked"]! >= 2 }
            #expect(s.drops["revoked"]! >= 2, "\(s.drops)")
        }
    }

    @Test("a member who leaves the room loses voice; the others keep it", arguments: allIOModes)
    func leaveLosesVoice(mode: IOModeSetting) throws {
        try withVoice(mode) { server, _ in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            let c = try voiceMember(server.port, "carol", room: "lobby")
            let g = [try requestVoice(a, "start_voice", room: "lobby"), try requestVoice(b, "join_voice", room: "lobby"),
                     try requestVoice(c, "join_voice", room: "lobby")]
            let u = try g.map { try VoiceUDP(relayPort: $0.relayPort) }
            for (x, gx) in zip(u, g) { try x.joinAcked(gx) }
            u[0].audio(g[0].channel, seq: 1, [1])
            #expect(u[1].receive(timeout: 2) != nil && u[2].receive(timeout: 2) != nil)
            try b.send(["type": "leave_room", "room": "lobby"])
            _ = try b.read(until: "left")
            // bob's packets stop reaching carol within a second...
            let t = try #require(timeUntilSilent(from: u[1], to: u[2], channel: g[0].channel, timeout: 3), "bob still relayed")
            #expect(t < 1.0)
            // ...and alice's stop reaching bob, while carol still hears alice.
            u[1].drain()
            u[2].drain()
            u[0].audio(g[0].channel, seq: 2, [2])
            #expect(u[2].receive(timeout: 2) != nil, "carol lost alice")
            #expect(u[1].receive(timeout: 0.3) == nil, "bob still hears alice")
        }
    }

    @Test("10,000 packets per sender reach every other member in order, none duplicated", arguments: allIOModes)
    func ordering(mode: IOModeSetting) throws {
        try withVoice(mode) { server, relay in
            let names = ["s0", "s1", "s2"]
            let tcp = try names.map { try voiceMember(server.port, $0, room: "order") }
            var grants = [try requestVoice(tcp[0], "start_voice", room: "order")]
            for c in tcp.dropFirst() { grants.append(try requestVoice(c, "join_voice", room: "order")) }
            let udp = try grants.map { try VoiceUDP(relayPort: $0.relayPort) }
            var ids: [Int] = []
            for (x, g) in zip(udp, grants) { ids.append(try x.joinAcked(g)) }
            let channel = grants[0].channel
            let perSender = 10_000
            let received = Locked<[[Int: [UInt32]]]>(Array(repeating: [:], count: 3))
            let done = DispatchGroup()
            for i in 0..<3 {
                done.enter()
                Thread {
                    var got: [Int: [UInt32]] = [:]
                    let want = perSender * 2
                    var n = 0
                    while n < want, let p = udp[i].receive(timeout: 3) {
                        let h = voiceHeader(p)
                        got[h.member, default: []].append(h.seq)
                        n += 1
                    }
                    received.withLock { $0[i] = got }
                    done.leave()
                }.start()
            }
            let before = relay.snapshot()
            // Senders paced at ~10,000 packets/s each: far above voice rates, within loopback's.
            let senders = DispatchGroup()
            for i in 0..<3 {
                senders.enter()
                Thread {
                    let payload = [UInt8](repeating: UInt8(i), count: 160)
                    for seq in 0..<perSender {
                        udp[i].audio(channel, seq: UInt32(seq), payload)
                        if seq % 50 == 49 { usleep(5_000) }
                    }
                    senders.leave()
                }.start()
            }
            senders.wait()
            _ = done.wait(timeout: .now() + 30)
            let s = relayEventually(relay) { $0.packetsIn >= before.packetsIn + UInt64(3 * perSender) }
            let all = received.withLock { $0 }
            var missing = 0
            for r in 0..<3 {
                for sIdx in 0..<3 where sIdx != r {
                    let seqs = all[r][ids[sIdx]] ?? []
                    #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "member \(r) from \(sIdx): out of order or duplicated")
                    missing += perSender - seqs.count
                }
            }
            // Loopback drops nothing at this rate on a quiet machine; on a loaded one (the whole
            // suite runs in parallel) the kernel may drop when a socket buffer fills. Every
            // missing packet must then be on the counters: the relay's drops, or the kernel's
            // UDP buffer errors (host-wide, so they can only over-count).
            let accounted = Int(s.dropsTotal - before.dropsTotal)
                + Int(s.kernel.rcvbufErrors - before.kernel.rcvbufErrors) + Int(s.kernel.sndbufErrors - before.kernel.sndbufErrors)
            #expect(missing <= accounted,
                    "\(missing) of \(6 * perSender) copies missing, \(accounted) counted; relay drops \(s.drops), kernel \(s.kernel)")
            if missing > 0 { print("voice ordering: \(missing) copies lost, all counted by the relay or the kernel") }
        }
    }

    @Test("runts, garbage, oversized and unknown senders are dropped and counted", arguments: allIOModes)
    func badInput(mode: IOModeSetting) throws {
        try withVoice(mode) { server, relay in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let ga = try requestVoice(a, "start_voice", room: "lobby")
            let ua = try VoiceUDP(relayPort: ga.relayPort)
            try ua.joinAcked(ga)
            let x = try VoiceUDP(relayPort: relay.port)
            x.send([])                                   // runt (empty)
            x.send([0x56, 1, 0])                         // runt
            x.send([UInt8](repeating: 0x41, count: 40))  // garbage: bad magic
            x.send(VoicePacket.make(type: 9, channel: ga.channel, seq: 0, payload: [1]))          // unknown type
            x.send(VoicePacket.make(type: VoicePacket.join, channel: ga.channel, seq: 0, payload: Array("!!not base64!!".utf8)))
            x.send(VoicePacket.make(type: VoicePacket.revoke, channel: ga.channel, seq: 0, payload: [UInt8](repeating: 0, count: 56)))
            x.send(VoicePacket.make(type: VoicePacket.audio, channel: ga.channel, seq: 0, payload: [1]))
            ua.audio(ga.channel, seq: 1, [UInt8](repeating: 7, count: 1300))   // oversized, from a member
            #expect(x.receive(timeout: 0.3) == nil)
            let s = relayEventually(relay) { $0.dropsTotal >= 8 }
            #expect(s.drops["runt"] == 2 && s.drops["malformed"] == 2 && s.drops["bad_token"] == 2, "\(s.drops)")
            #expect(s.drops["unknown_sender"] == 1 && s.drops["oversized"] == 1, "\(s.drops)")
            #expect(s.revocations == 0, "a forged revocation was accepted")
            // The stats port shows the same.
            let body = try httpGet(relay.statsPort, "/stats").body
            #expect(body.contains("\"runt\":2") && body.contains("\"oversized\":1"), "\(body)")
            let metrics = try httpGet(relay.statsPort, "/metrics").body
            #expect(metrics.contains("voice_drops_total{reason=\"malformed\"} 2"), "\(metrics)")
        }
    }

    @Test("NAT rebinding moves a member; idle members are unbound", arguments: allIOModes)
    func rebindAndIdle(mode: IOModeSetting) throws {
        try withVoice(mode, idleMs: 400) { server, relay in
            let a = try voiceMember(server.port, "alice", room: "lobby")
            let b = try voiceMember(server.port, "bob", room: "lobby")
            let ga = try requestVoice(a, "start_voice", room: "lobby")
            let gb = try requestVoice(b, "join_voice", room: "lobby")
            let ua = try VoiceUDP(relayPort: ga.relayPort), ub = try VoiceUDP(relayPort: gb.relayPort)
            let ma = try ua.joinAcked(ga)
            try ub.joinAcked(gb)
            // alice's NAT gives her a new port: the same token from the new address moves her.
            let ua2 = try VoiceUDP(relayPort: ga.relayPort)
            #expect(try ua2.joinAcked(ga) == ma, "the member keeps its id")
            ub.audio(gb.channel, seq: 1, [5])
            #expect(ua2.receive(timeout: 2) != nil, "the new address hears bob")
            #expect(ua.receive(timeout: 0.3) == nil, "the old address still hears bob")
            ua2.audio(ga.channel, seq: 2, [6])
            #expect(ub.receive(timeout: 2) != nil)
            let s1 = relayEventually(relay) { $0.rebinds >= 1 }
            #expect(s1.rebinds == 1 && s1.members == 2)
            // Everyone goes quiet past voice_idle_ms: unbound.
            let s2 = relayEventually(relay, timeout: 3) { $0.members == 0 }
            #expect(s2.members == 0 && s2.idleUnbinds >= 2, "members \(s2.members), idle unbinds \(s2.idleUnbinds)")
            ua2.audio(ga.channel, seq: 3, [7])
            #expect(ub.receive(timeout: 0.3) == nil, "an unbound member was relayed")
        }
    }
}
