import Glibc
import LoadClient

// The soak's state, and opening, writing to and closing client connections.

final class Soak {
    let o: Options
    var rng: SplitMix
    var clients: [Int32: Client] = [:]
    var nextNumber = 1
    var messages: [Message] = []
    var messageIndex: [UInt64: Int] = [:]   // sender << 32 | seq
    var violations: [String] = []
    var violationCount = 0
    var counts: [String: Int] = [:]
    var recvBuf = [UInt8](repeating: 0, count: 1 << 16)
    var lastChatAt: UInt64 = 0
    var stopping = false
    var started: UInt64 = 0

    init(_ o: Options) {
        self.o = o
        rng = SplitMix(seed: o.seed)
    }

    func violation(_ s: String) {
        violationCount += 1
        if violations.count < 20 { violations.append(s) }
    }

    func bump(_ k: String, _ n: Int = 1) { counts[k, default: 0] += n }

    func roomName(_ r: Int) -> String { "soak-r\(r)" }

    func random(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }

    // MARK: connections

    func open(_ kind: Kind, now: UInt64) -> Client? {
        let fd = connectTCP(o.host, o.port)
        if fd < 0 {
            if kind == .member { violation("member connect failed: errno \(errno_())") }
            bump("connect_failed")
            return nil
        }
        setNonBlocking(fd)
        let c = Client(number: nextNumber, fd: fd, kind: kind, now: now)
        nextNumber += 1
        clients[fd] = c
        bump("connections_\(kind.rawValue)")
        return c
    }

    enum Vanish { case clean, reset, shutdown }

    func vanish(_ c: Client, _ how: Vanish) {
        if c.gone { return }
        c.gone = true
        switch how {
        case .clean: close(c.fd); bump("close_clean")
        case .reset: closeWithReset(c.fd); bump("close_rst")
        case .shutdown: Glibc.shutdown(c.fd, Int32(SHUT_WR)); close(c.fd); bump("close_shutdown")
        }
        clients[c.fd] = nil
        if c.kind == .member && !stopping { violation("member \(c.number) vanished during the run") }
        // Members' receive records are kept for the final check.
        if c.kind == .member { finished.append(c) }
    }
    var finished: [Client] = []

    func queue(_ c: Client, _ bytes: [UInt8]) {
        if c.gone { return }
        if c.out.count - c.outOff == 0 {
            c.out.removeAll(keepingCapacity: true)
            c.outOff = 0
        }
        c.out += bytes
        flush(c)
    }

    func flush(_ c: Client) {
        while c.outOff < c.out.count {
            let n = c.out.withUnsafeBytes { send(c.fd, $0.baseAddress! + c.outOff, $0.count - c.outOff, Int32(MSG_NOSIGNAL)) }
            if n > 0 { c.outOff += n; continue }
            let e = errno_()
            if e == EINTR { continue }
            if e == EAGAIN {
                c.pollingOut = true
                return
            }
            // The server closed on us (expected for garbage; never for members).
            if c.kind == .member { violation("send to member \(c.number) failed: errno \(e)") }
            peerClosed(c)
            return
        }
        c.out.removeAll(keepingCapacity: true)
        c.outOff = 0
        c.pollingOut = false
    }

    func peerClosed(_ c: Client) {
        if c.gone { return }
        switch c.kind {
        case .member: if !stopping { violation("server closed member \(c.number)") }
        case .halfOpen: bump("half_open_closed_by_server")
        case .garbage: bump("garbage_closed_by_server")
        case .churner: bump("churner_closed_by_server")
        }
        vanish(c, .clean)
    }

    lazy var seqOf: [Int: Int] = {
        var d: [Int: Int] = [:]
        for (k, v) in messageIndex { d[v] = Int(k & 0xFFFF_FFFF) }
        return d
    }()
}
