// The optional io_uring techniques (recv bundles, incremental buffer consumption, fixed-file
// descriptors) each on and off: the protocol works the same over every combination, and with each switched off the
// plain path (the one a kernel without the feature takes) still carries everything. Small
// receive buffers (16 × 512 B) make every message above 512 B span buffers, and a 100 KB one
// run the ring dry (ENOBUFS and re-arm) mid-message. epoll mode has none of these techniques:
// the same traffic over epoll is covered by the other integration suites.

import Foundation
import Testing
@testable import UringServer

@Suite("Integration: io_uring techniques on and off")
struct IntegrationUringTechniquesTests {
    /// (recv bundle, incremental buffers, direct descriptors): all off, each alone, all on
    /// (with both descriptor variants). The 70 KB and 100 KB room messages go to members by
    /// splice (over splice_threshold): with `accept` descriptors the first such batch of a
    /// connection goes as a shared block while its fd is installed, the next by splice.
    static let combinations: [(UringFeatureSetting, UringFeatureSetting, UringDescriptorSetting)] = [
        (.off, .off, .off), (.on, .off, .off), (.off, .on, .off), (.off, .off, .register), (.off, .off, .accept),
        (.on, .on, .register), (.on, .on, .accept),
    ]

    @Test("ping, pipelined pings, chat fan-out, messages across buffers and > 64 KiB", arguments: combinations)
    func traffic(bundle: UringFeatureSetting, incremental: UringFeatureSetting, direct: UringDescriptorSetting) throws {
        try withServer(.uring, configure: { c in
            c.uringRecvBundle = bundle
            c.uringBufIncremental = incremental
            c.uringDirectDescriptors = direct
            c.recvBufferCount = 16
            c.recvBufferSize = 512
            c.maxFrameBytes = 256 << 10
            c.rateLimitPerSec = 0
            c.presence = false
        }) { port in
            let pub = try TestClient(port: port)
            try pub.hello("tech-pub")
            try pub.pingExpectingPongNext()
            // Many small requests in one write: one receive holds several of them.
            var burst = ""
            for i in 0..<50 { burst += J.obj(["type": "ping", "id": i]) + "\n" }
            try pub.send(burst)
            for i in 0..<50 {
                #expect(try pub.read().type == "pong")
                let ack = try pub.read()
                #expect(ack.type == "ack" && ack["id"] as? Int == i, "\(ack)")
            }
            let subs = try TestClient.members(3, port: port, user: "tech-sub-", room: "tech")
            try pub.join("tech")
            // Sizes below, at and far above one buffer, up to one that needs the ring ~13 times over.
            let sizes = [1, 40, 511, 512, 513, 1500, 4096, 9000, 70_000, 100_000, 3]
            func text(_ i: Int) -> String {
                let digit = Character(String(i % 10))
                return String(repeating: digit, count: sizes[i]) + "#\(i)"
            }
            for i in sizes.indices { try pub.send(["type": "send_chat", "room": "tech", "text": text(i)]) }
            for s in subs {
                for i in sizes.indices {
                    let m = try s.read(until: "chat", timeout: 10)
                    #expect(m["text"] as? String == text(i), "message \(i) (\(sizes[i]) B) differs: \((m["text"] as? String)?.count ?? -1) chars")
                }
            }
            // Subscribers talk too: every connection's receive path keeps working afterwards.
            for s in subs { try s.pingExpectingPongNext() }
            try Self.serverCloses(port)
        }
    }

    /// A connection the server closes (a line over max_frame_bytes) sees the error, then EOF:
    /// with fixed files the table's reference must go too, or the socket would stay open.
    static func serverCloses(_ port: Int) throws {
        let c = try TestClient(port: port)
        try c.hello("tech-closed")
        try c.send(String(repeating: "y", count: 300 << 10))
        let e = try c.read(until: "error", timeout: 5)
        #expect(e["code"] as? String == "frame_too_large", "\(e)")
        #expect(throws: Never.self, "EOF after frame_too_large") { _ = try c.readUntilClosed(timeout: 3) }
    }

    @Test("a full fixed-file table: later connections use plain fds, slots freed by closes are reused",
          arguments: [UringDescriptorSetting.register, .accept])
    func tableFull(variant: UringDescriptorSetting) throws {
        try withRunningServer(.uring, threads: 1, configure: { c in
            c.uringDirectDescriptors = variant
            c.uringFixedFiles = 2
            c.rateLimitPerSec = 0
            c.presence = false
        }) { server in
            let port = server.port
            // Slots 0-1 registered, 2-5 beyond the table: all six talk in one room.
            var clients = try TestClient.members(6, port: port, user: "full-", room: "full")
            try clients[0].send(["type": "send_chat", "room": "full", "text": "to all"])
            for c in clients[1...] { #expect(try c.read(until: "chat")["text"] as? String == "to all") }
            for c in clients { try c.pingExpectingPongNext(skipPresence: true) }
            // The server closes a registered connection and a plain one; both see EOF.
            try Self.serverCloses(port)
            clients[0].close()
            clients[4].close()
            Thread.sleep(forTimeInterval: 0.2)
            // Their slots go to new connections (registered again where the slot is in the table).
            clients[0] = try TestClient(port: port)
            try clients[0].hello("full-new0")
            try clients[0].join("full")
            clients[4] = try TestClient(port: port)
            try clients[4].hello("full-new4")
            try clients[4].join("full")
            try clients[5].send(["type": "send_chat", "room": "full", "text": "again"])
            for (i, c) in clients.enumerated() where i != 5 {
                #expect(try c.read(until: "chat")["text"] as? String == "again", "client \(i)")
            }
            for c in clients { try c.pingExpectingPongNext(skipPresence: true) }
        }
    }

    @Test("accept descriptors: a socket turned away at max_connections gets the error, then EOF; the slot is reused")
    func refusedDirect() throws {
        try withRunningServer(.uring, threads: 1, configure: { c in
            c.uringDirectDescriptors = .accept
            c.uringFixedFiles = 4
            c.maxConnections = 2
            c.rateLimitPerSec = 0
            c.presence = false
        }) { server in
            let port = server.port
            let a = try TestClient(port: port)
            try a.hello("cap-a")
            let b = try TestClient(port: port)
            try b.hello("cap-b")
            for _ in 0..<3 {   // each refusal closes its fixed slot; the next one needs a slot again
                let turnedAway = try TestClient(port: port)
                let e = try turnedAway.read(until: "error", timeout: 5)
                #expect(e["code"] as? String == "server_full", "\(e)")
                #expect(throws: Never.self, "EOF after server_full") { _ = try turnedAway.readUntilClosed(timeout: 3) }
            }
            b.close()
            Thread.sleep(forTimeInterval: 0.2)
            let c = try TestClient(port: port)
            try c.hello("cap-c")
            try c.pingExpectingPongNext()
            try a.pingExpectingPongNext()
        }
    }

    /// The `accept` variant sets TCP_NODELAY on the listener only: the kernel copies it to each
    /// accepted socket (checked here on a plain accept, where getsockopt can see it).
    @Test("TCP_NODELAY set on a listening socket is inherited by accepted sockets")
    func noDelayInherited() throws {
        let l = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(l >= 0)
        defer { Glibc.close(l) }
        var one: Int32 = 1
        setsockopt(l, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(4))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                bind(l, p, len) == 0 && listen(l, 4) == 0 && getsockname(l, p, &len) == 0
            }
        }
        #expect(bound)
        let client = try TestClient(port: Int(UInt16(bigEndian: addr.sin_port)))
        defer { client.close() }
        let fd = accept(l, nil, nil)
        #expect(fd >= 0)
        defer { Glibc.close(fd) }
        var v: Int32 = 0
        var vlen = socklen_t(4)
        #expect(getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &v, &vlen) == 0)
        #expect(v != 0, "accepted socket lacks TCP_NODELAY")
    }

    @Test("uring_recv_bundle / uring_buf_incremental: parsed, flags, bad values refused; off and a kernel without them resolve off")
    func config() throws {
        var c = ServerConfig()
        #expect(c.uringRecvBundle == .auto && c.uringBufIncremental == .auto)
        try c.set("uring_recv_bundle", "off")
        try c.set("uring_buf_incremental", "ON")
        #expect(c.uringRecvBundle == .off && c.uringBufIncremental == .on)
        #expect(throws: ConfigError.self) { try c.set("uring_recv_bundle", "yes please") }
        let outcome = try ConfigLoader.load(arguments: ["--uring-buf-incremental", "off", "--uring-recv-bundle", "on"],
                                            environment: [:], readFile: { _ in nil })
        guard case .run(let flags) = outcome else { Issue.record("flags: \(outcome)"); return }
        #expect(flags.uringBufIncremental == .off && flags.uringRecvBundle == .on)

        let all = UringTechniques.bundleBit | UringTechniques.incrementalBit
        let used = UringTechniques(c, offered: all)
        #expect(!used.recvBundle && used.bufIncremental)
        let none = UringTechniques(c, offered: 0)
        #expect(!none.recvBundle && !none.bufIncremental, "a kernel without the features: plain path")
        let d = UringTechniques.describe(c, offered: 0)
        #expect(d.recvBundle == "off" && d.bufIncremental == "off (kernel lacks it)")

        // The fixed-file table: the configured size, else a share of the fd limit.
        try c.set("uring_direct_descriptors", "on")
        #expect(c.uringDirectDescriptors == .register, "on is register's earlier name")
        try c.set("uring_direct_descriptors", "ACCEPT")
        #expect(c.uringDirectDescriptors == .accept)
        #expect(throws: ConfigError.self) { try c.set("uring_direct_descriptors", "direct") }
        let fixedOnly = UringTechniques.fixedFilesBit, withInstall = fixedOnly | UringTechniques.fdInstallBit
        #expect(UringTechniques(c, offered: withInstall).acceptDirect)
        #expect(!UringTechniques(c, offered: fixedOnly).acceptDirect && UringTechniques(c, offered: fixedOnly).fixedFiles > 0,
                "accept without FIXED_FD_INSTALL falls back to register")
        #expect(UringTechniques.describe(c, offered: fixedOnly).directDescriptors.hasPrefix("register"))
        #expect(UringTechniques.descriptors(.auto, offered: withInstall) == UringTechniques.keptDescriptors)
        #expect(UringTechniques.descriptors(.register, offered: 0) == .off)
        c.uringDirectDescriptors = .register
        c.uringFixedFiles = 100
        #expect(UringTechniques(c, reactors: 2, offered: UringTechniques.fixedFilesBit).fixedFiles == 100)
        #expect(UringTechniques(c, reactors: 2, offered: 0).fixedFiles == 0)
        c.uringFixedFiles = 0
        c.maxConnections = 10_000
        let auto = UringTechniques(c, reactors: 4, offered: UringTechniques.fixedFilesBit).fixedFiles
        #expect(auto > 0 && auto <= 5_000, "auto table size \(auto)")
        try c.set("uring_direct_descriptors", "off")
        #expect(UringTechniques(c, reactors: 2, offered: UringTechniques.fixedFilesBit).fixedFiles == 0)
        #expect(throws: ConfigError.self) { try c.set("uring_fixed_files", "-3") }
    }
}
