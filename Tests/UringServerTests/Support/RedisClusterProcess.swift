// A real Redis Cluster for the cluster suites: 6 redis-server processes (3 masters, 3
// replicas) on fixed free ports below 22000 (each node's bus port, port + 10000, must be free
// too), created with `redis-cli --cluster create`. Creating one takes seconds, so the suites
// share ONE instance (`RedisClusterProcess.shared`), started on first use and torn down when
// the test process exits.

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

final class RedisClusterProcess: @unchecked Sendable {
    let ports: [Int]
    let dir: URL
    private let server: String
    private var processes: [Int: Process] = [:]
    private let lock = NSLock()

    nonisolated(unsafe) private static var instance: RedisClusterProcess?
    private static let startLock = NSLock()

    /// The shared cluster, created on first call.
    static func shared() throws -> RedisClusterProcess {
        startLock.lock()
        defer { startLock.unlock() }
        if let c = instance { return c }
        let c = try RedisClusterProcess()
        instance = c
        atexit { RedisClusterProcess.instance?.teardown() }
        return c
    }

    private init() throws {
        let path = ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        func find(_ name: String) -> String? {
            path.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        }
        guard let server = find("redis-server"), let cli = find("redis-cli") else {
            let msg = "redis-server/redis-cli not found: the Redis Cluster tests need them (apt-get install -y redis-server; `make test` installs it)"
            Issue.record(Comment(rawValue: msg))
            throw ClusterTestError(description: msg)
        }
        self.server = server
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("redis-cluster-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        ports = Self.pickPorts(6)
        for p in ports { try start(p) }
        for p in ports {
            guard waitFor(5, { redisQuery(port: p, ["PING"]) == "PONG" }) else {
                teardown()
                throw ClusterTestError(description: "redis cluster node \(p) did not start")
            }
        }
        let create = Process()
        create.executableURL = URL(fileURLWithPath: cli)
        create.arguments = ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "1", "--cluster-yes"]
        create.standardOutput = FileHandle.nullDevice
        create.standardError = FileHandle.nullDevice
        try create.run()
        create.waitUntilExit()
        guard create.terminationStatus == 0 else {
            teardown()
            throw ClusterTestError(description: "redis-cli --cluster create failed (\(create.terminationStatus))")
        }
        guard waitFor(20, { self.ports.allSatisfy { self.info($0)?.contains("cluster_state:ok") == true } }),
              waitFor(10, { self.masterPorts().count == 3 && self.ports.allSatisfy { self.nodesSeen($0) == 6 } })
        else {
            teardown()
            throw ClusterTestError(description: "redis cluster did not reach cluster_state:ok")
        }
    }

    /// Ports p with p and p + 10000 free, from a random start in 12000..<20000.
    private static func pickPorts(_ n: Int) -> [Int] {
        var out: [Int] = []
        var p = Int.random(in: 12000..<20000)
        while out.count < n {
            if portFree(p) && portFree(p + 10000) { out.append(p) }
            p = p >= 21990 ? 12000 : p + 1
        }
        return out
    }

    private static func portFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port)).bigEndian
        _ = inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// (Re)starts the node on `port`; its nodes-<port>.conf makes a restarted node rejoin.
    func start(_ port: Int) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: server)
        p.arguments = ["--cluster-enabled", "yes", "--cluster-config-file", dir.appendingPathComponent("nodes-\(port).conf").path,
                       "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no",
                       "--port", String(port), "--bind", "127.0.0.1", "--dir", dir.path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        lock.lock()
        processes[port] = p
        lock.unlock()
    }

    /// SIGKILL the node on `port` (a crash).
    func kill(_ port: Int) {
        lock.lock()
        let p = processes.removeValue(forKey: port)
        lock.unlock()
        guard let p else { return }
        _ = Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    func teardown() {
        for p in ports { kill(p) }
        try? FileManager.default.removeItem(at: dir)
    }

    func query(_ port: Int, _ args: [String]) -> String? { redisQuery(port: port, args) }

    /// A port of a node that is running.
    var livePort: Int {
        lock.lock()
        defer { lock.unlock() }
        return ports.first { processes[$0] != nil } ?? ports[0]
    }

    func info(_ port: Int) -> String? { query(port, ["CLUSTER", "INFO"]) }

    private func nodesSeen(_ port: Int) -> Int {
        (query(port, ["CLUSTER", "NODES"]) ?? "").split(separator: "\n").count
    }

    /// The slot of a room's keys and channel, as Redis computes it.
    func slot(ofRoom room: String) -> Int {
        Int(query(livePort, ["CLUSTER", "KEYSLOT", "tcpserver:room:{\(room)}"]) ?? "-1") ?? -1
    }

    /// Master port → the slot ranges it serves (masters not marked failed), from CLUSTER NODES.
    func masters(from port: Int? = nil) -> [Int: [ClosedRange<Int>]] {
        var out: [Int: [ClosedRange<Int>]] = [:]
        for line in (query(port ?? livePort, ["CLUSTER", "NODES"]) ?? "").split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 8, f[2].contains("master"), !f[2].contains("fail"),
                  let colon = f[1].firstIndex(of: ":"), let at = f[1].firstIndex(of: "@"),
                  let p = Int(f[1][f[1].index(after: colon)..<at]) else { continue }
            out[p] = f.dropFirst(8).compactMap { r -> ClosedRange<Int>? in
                let ends = r.split(separator: "-").compactMap { Int($0) }
                if ends.count == 1 { return ends[0]...ends[0] }
                return ends.count == 2 ? ends[0]...ends[1] : nil
            }
        }
        return out
    }

    func masterPorts() -> [Int] { masters().filter { !$0.value.isEmpty }.keys.sorted() }

    func master(ofSlot slot: Int) -> Int? {
        masters().first { $0.value.contains { $0.contains(slot) } }?.key
    }

    /// Room names whose slots land on each master (one per master, in masterPorts order).
    func roomsOnEachMaster(prefix: String) -> [(room: String, master: Int)] {
        var found: [Int: String] = [:]
        let all = masters()
        var i = 0
        while found.count < all.count && i < 1000 {
            let room = "\(prefix)\(i)"
            let s = slot(ofRoom: room)
            if let m = all.first(where: { $0.value.contains { $0.contains(s) } })?.key, found[m] == nil { found[m] = room }
            i += 1
        }
        return found.sorted { $0.key < $1.key }.map { ($0.value, $0.key) }
    }

    /// Waits until another node serves `slot` (a replica took over from `oldMaster`) and
    /// every running node reports cluster_state:ok; returns the new master's port.
    func waitForFailover(slot: Int, from oldMaster: Int, timeout: Double = 15) -> Int? {
        var newMaster: Int?
        let ok = waitFor(timeout) {
            guard let m = self.master(ofSlot: slot), m != oldMaster else { return false }
            newMaster = m
            self.lock.lock()
            let live = Array(self.processes.keys)
            self.lock.unlock()
            return live.allSatisfy { self.info($0)?.contains("cluster_state:ok") == true }
        }
        return ok ? newMaster : nil
    }

    func waitFor(_ seconds: Double, _ cond: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if cond() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return cond()
    }
}
