// Admin routes and feature flags: auth on /admin, toggling a plugin's flag, percentage rollout
// of presence (stable per user), the beta list. Real server, real sockets, both io modes.

import Foundation
import Testing
import UringServer
import UringServerTesting

/// A plugin that handles nothing: registered only to capture the run-time `FeatureFlags`
/// (`PluginEnvironment.flags`), so a test can ask `FeatureGate.isEnabled` about the very flag
/// objects the server evaluates.
final class FlagProbe: MessageProcessor {
    init(_ env: PluginEnvironment, _ sink: Locked<FeatureFlags?>) { sink.withLock { $0 = env.flags } }
    func canHandle(_ type: String) -> Bool { false }
    func process(_ message: IncomingMessage, _ context: PluginContext) throws(ProtocolError) {}
}

@Suite("Ops: admin routes and feature flags")
struct OpsAdminTests {

    @Test("admin: 403 without admin_token configured, 401 on a wrong or missing token", arguments: allIOModes)
    func adminAuth(mode: IOModeSetting) throws {
        try withRunningServer(mode) { server in
            for token in [nil, "", "anything"] as [String?] {
                let r = try adminRequest(server.port, "/admin/features/enable_presence?enabled=false", token: token)
                #expect(r.statusLine.hasPrefix("HTTP/1.1 403"), "no admin_token configured, token \(token ?? "nil"): \(r.statusLine)")
            }
            // Nothing changed.
            #expect(statsFlag(try fetchStats(server.port), "enable_presence")?["enabled"] as? Bool == true)
        }
        try withRunningServer(mode, configure: { $0.adminToken = "adm1n" }) { server in
            let port = server.port
            for token in [nil, "wrong", "adm1n2", "adm", ""] as [String?] {
                let r = try adminRequest(port, "/admin/features/enable_presence?enabled=false", token: token)
                #expect(r.statusLine.hasPrefix("HTTP/1.1 401"), "token \(token ?? "nil"): \(r.statusLine)")
            }
            let basic = try httpRequest(port: port, "POST /admin/features/enable_presence HTTP/1.1\r\nHost: x\r\nAuthorization: Basic adm1n\r\n\r\n")
            #expect(basic.statusLine.hasPrefix("HTTP/1.1 401"), "Basic instead of Bearer: \(basic.statusLine)")
            #expect(statsFlag(try fetchStats(port), "enable_presence")?["enabled"] as? Bool == true, "401s must change nothing")

            let get = try adminRequest(port, "/admin/features/enable_presence", token: "adm1n", method: "GET")
            #expect(get.statusLine.hasPrefix("HTTP/1.1 405"), "GET on admin: \(get.statusLine)")
            let unknown = try adminRequest(port, "/admin/features/no_such_flag?enabled=true", token: "adm1n")
            #expect(unknown.statusLine.hasPrefix("HTTP/1.1 404"), "\(unknown.statusLine)")
            let badKind = try adminRequest(port, "/admin/frobnicate/enable_presence", token: "adm1n")
            #expect(badKind.statusLine.hasPrefix("HTTP/1.1 404"), "\(badKind.statusLine)")
            for q in ["percent=101", "percent=-1", "percent=abc", ""] {
                let r = try adminRequest(port, "/admin/rollout/enable_presence?\(q)", token: "adm1n")
                #expect(r.statusLine.hasPrefix("HTTP/1.1 400"), "rollout ?\(q): \(r.statusLine)")
            }
            let badBool = try adminRequest(port, "/admin/features/enable_presence?enabled=maybe", token: "adm1n")
            #expect(badBool.statusLine.hasPrefix("HTTP/1.1 400"), "\(badBool.statusLine)")

            let ok = try adminRequest(port, "/admin/rollout/enable_presence?percent=25", token: "adm1n")
            #expect(ok.statusLine.hasPrefix("HTTP/1.1 200"), "\(ok.statusLine)")
            let flag = try J.parse(Array(ok.body.utf8))
            #expect(flag["name"] as? String == "enable_presence" && jsonInt(flag["percent"]) == 25, "\(flag)")
            #expect(jsonInt(statsFlag(try fetchStats(port), "enable_presence")?["percent"]) == 25)
        }
    }

    @Test("admin: disabling enable_chat_rooms → feature_disabled; re-enabling restores rooms", arguments: allIOModes)
    func toggleChatRooms(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { $0.adminToken = "t0k" }) { server in
            let port = server.port
            let a = try TestClient(port: port), b = try TestClient(port: port)
            try a.hello("tog-a"); try b.hello("tog-b")
            try a.join("tog")

            let off = try adminRequest(port, "/admin/features/enable_chat_rooms?enabled=false", token: "t0k")
            #expect(off.statusLine.hasPrefix("HTTP/1.1 200"), "\(off.statusLine) \(off.body)")
            #expect(try J.parse(Array(off.body.utf8))["enabled"] as? Bool == false, "\(off.body)")

            try b.send(["type": "join_room", "room": "tog", "id": 7])
            let e = try b.read()
            #expect(e.type == "error" && e["code"] as? String == "feature_disabled" && jsonInt(e["id"]) == 7, "\(e)")
            #expect(try b.read().type == "ack", "the ack still follows the error")
            try a.send(["type": "send_chat", "room": "tog", "text": "x"])
            try expectError(a, "feature_disabled", "send_chat while rooms are off")
            try a.send(["type": "leave_room", "room": "tog"])
            try expectError(a, "feature_disabled", "leave_room while rooms are off")
            // The core handler is not gated.
            try b.pingExpectingPongNext()
            let st = try fetchStats(port)
            #expect(statsFlag(st, "enable_chat_rooms")?["enabled"] as? Bool == false, "\(st["flags"] ?? "")")

            let on = try adminRequest(port, "/admin/features/enable_chat_rooms?enabled=true", token: "t0k")
            #expect(on.statusLine.hasPrefix("HTTP/1.1 200"))
            let j = try b.join("tog")
            #expect(jsonInt(j["members"]) == 2, "a kept its membership while rooms were off: \(j)")
            try b.send(["type": "send_chat", "room": "tog", "text": "back"])
            let chat = try a.read(until: "chat")
            #expect(chat["text"] as? String == "back")

            // Without ?enabled the route toggles.
            let t1 = try J.parse(Array(try adminRequest(port, "/admin/features/enable_chat_rooms", token: "t0k").body.utf8))
            #expect(t1["enabled"] as? Bool == false)
            try b.send(["type": "join_room", "room": "tog2"])
            try expectError(b, "feature_disabled")
            let t2 = try J.parse(Array(try adminRequest(port, "/admin/features/enable_chat_rooms", token: "t0k").body.utf8))
            #expect(t2["enabled"] as? Bool == true)
            try b.join("tog2")
        }
    }

    @Test("admin rollout: enable_presence at 0 % → no user_joined; at 100 % → delivered", arguments: allIOModes)
    func rolloutPresence(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { $0.adminToken = "t0k" }) { server in
            let port = server.port
            let obs = try TestClient(port: port)
            try obs.hello("observer")
            try obs.join("ro")

            let r0 = try adminRequest(port, "/admin/rollout/enable_presence?percent=0", token: "t0k")
            #expect(r0.statusLine.hasPrefix("HTTP/1.1 200"), "\(r0.statusLine)")
            let joiners = (0..<4).map { "ro-user-\($0)" }
            var clients: [TestClient] = []
            for u in joiners {
                let c = try TestClient(port: port)
                try c.hello(u)
                try c.join("ro")
                clients.append(c)
            }
            clients[0].close()   // and leaving is silent too
            let seen0 = try drainWithPings(obs)
            #expect(!seen0.contains { $0.type == "user_joined" || $0.type == "user_left" },
                    "percent=0: no presence at all, got \(seen0)")

            let r100 = try adminRequest(port, "/admin/rollout/enable_presence?percent=100", token: "t0k")
            #expect(r100.statusLine.hasPrefix("HTTP/1.1 200"))
            let late = try TestClient(port: port)
            try late.hello("ro-late")
            try late.join("ro")
            let uj = try obs.read(until: "user_joined", timeout: 2)
            #expect(uj["user"] as? String == "ro-late" && uj["room"] as? String == "ro", "\(uj)")
            clients[1].close()
            let ul = try obs.read(until: "user_left", timeout: 2)
            #expect(ul["user"] as? String == "ro-user-1", "\(ul)")
        }
    }

    @Test("beta list: with enable_presence at 0 %, a beta user's joins are still announced", arguments: allIOModes)
    func betaList(mode: IOModeSetting) throws {
        try withRunningServer(mode, configure: { c in
            setConfig(&c, "flag_enable_presence", "0%")
            setConfig(&c, "beta_enable_presence", "alice, carol")
        }) { server in
            let port = server.port
            let st = try fetchStats(port)
            #expect(statsFlag(st, "enable_presence")?["enabled"] as? Bool == true)
            #expect(jsonInt(statsFlag(st, "enable_presence")?["percent"]) == 0)

            // The observer is not in the beta: whose hash matters is the joiner's.
            let obs = try TestClient(port: port)
            try obs.hello("zed")
            try obs.join("beta")
            let alice = try TestClient(port: port)
            try alice.hello("alice")
            try alice.join("beta")
            let uj = try obs.read(until: "user_joined", timeout: 2)
            #expect(uj["user"] as? String == "alice", "\(uj)")

            let bob = try TestClient(port: port)
            try bob.hello("bob")
            try bob.join("beta")
            // bob is not in the beta: nothing for him (alice, in the room, gets nothing either).
            let seen = try drainWithPings(obs)
            #expect(!hasPresence(seen, user: "bob"), "bob is not in the beta and percent is 0: \(seen)")
            let seenA = try drainWithPings(alice)
            #expect(!hasPresence(seenA, user: "bob"), "\(seenA)")

            // A beta user sees nothing special as an observer: bob leaving is still silent.
            bob.close()
            let seen2 = try drainWithPings(alice)
            #expect(!hasPresence(seen2, "user_left", user: "bob"), "\(seen2)")
            // ... and alice leaving is announced.
            try alice.send(["type": "leave_room", "room": "beta"])
            let ul = try obs.read(until: "user_left", timeout: 2)
            #expect(ul["user"] as? String == "alice")
        }
    }

    @Test("flag_enable_presence=50%: exactly the users FeatureGate puts in are announced", arguments: allIOModes)
    func halfRollout(mode: IOModeSetting) throws {
        let probe = Locked<FeatureFlags?>(nil)
        try withRunningServer(mode, configure: { setConfig(&$0, "flag_enable_presence", "50%") },
                          register: [{ env in FlagProbe(env, probe) }]) { server in
            let flag = try #require(probe.value?["enable_presence"])
            #expect(flag.rolloutPercent == 50 && flag.isOn)
            let names = (0..<40).map { "half-\($0)" }
            let ins = names.filter { FeatureGate.isEnabled(flag, userHash: FeatureGate.userHash($0)) }
            let outs = names.filter { !ins.contains($0) }
            try #require(ins.count >= 3 && outs.count >= 3, "sample should have users in and out: \(ins.count) in")
            // Independently of FeatureGate: the documented rule (FNV-1a 64 % 100 < percent).
            #expect(ins == names.filter { FeatureGate.userHash($0) % 100 < 50 })
            let users = Array(ins.prefix(3)) + Array(outs.prefix(3))

            let obs = try TestClient(port: server.port)
            try obs.hello(outs[0] + "-observer")
            try obs.join("half")
            var joined: [TestClient] = []
            for u in users.shuffled() {
                let c = try TestClient(port: server.port)
                try c.hello(u)
                try c.join("half")
                joined.append(c)
            }
            var seen = try drainWithPings(obs)
            // A delivery to the observer may cross reactors: allow a moment for stragglers.
            if let extra = try? obs.read(timeout: 0.3) { seen.append(extra) }
            let announced = Set(seen.filter { $0.type == "user_joined" }.compactMap { $0["user"] as? String })
            #expect(announced == Set(ins.prefix(3)), "announced \(announced.sorted()), FeatureGate says \(ins.prefix(3).sorted())")
        }
    }

    @Test("rollout is stable: a user in at 30 % stays in at 60 % (and every larger percentage)")
    func rolloutStability() throws {
        // FNV-1a 64 reference vectors: the hash is stable across runs and machines.
        #expect(FeatureGate.userHash("") == 0xcbf2_9ce4_8422_2325)
        #expect(FeatureGate.userHash("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(FeatureGate.userHash("foobar") == 0x8594_4171_f739_67e8)

        let probe = Locked<FeatureFlags?>(nil)
        _ = ProtocolHarness(plugins: [{ env in FlagProbe(env, probe) }])
        let flag = try #require(probe.value?["enable_presence"])
        let names = (0..<3000).map { "user-\($0)-\(String($0 * 7919, radix: 36))" } + ["alice", "bob", "Ålice", "李"]
        func inSet(_ p: Int) -> Set<String> {
            flag.setPercent(p)
            return Set(names.filter { FeatureGate.isEnabled(flag, userHash: FeatureGate.userHash($0)) })
        }
        var previous = inSet(0)
        #expect(previous.isEmpty, "0 %: nobody (no beta list)")
        for p in stride(from: 5, through: 100, by: 5) {
            let now = inSet(p)
            #expect(previous.isSubset(of: now), "users in at \(p - 5) % but out at \(p) %: \(previous.subtracting(now).prefix(5))")
            // Roughly p % of a large sample.
            let share = Double(now.count) / Double(names.count) * 100
            #expect(abs(share - Double(p)) < 4, "\(p) %: \(share) % of users in")
            previous = now
        }
        #expect(previous.count == names.count, "100 %: everybody")
        let at30 = inSet(30), at60 = inSet(60)
        #expect(at30.isSubset(of: at60))
        #expect(inSet(30) == at30, "the same percentage gives the same users every time")
        // Off beats everything; on again restores the same set.
        flag.setEnabled(false)
        #expect(inSet(100).isEmpty)
        flag.setEnabled(true)
        #expect(inSet(30) == at30)
    }
}
