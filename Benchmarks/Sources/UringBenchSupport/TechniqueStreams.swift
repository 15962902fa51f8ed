// The io_uring techniques the server can switch on (uring_recv_bundle, uring_buf_incremental,
// fixed files), each measured alone: one loopback TCP pair, both ends on one ring, the sender's
// bytes going out with IORING_OP_SEND and arriving through a multishot recv from a provided-
// buffer ring, received buffers handed back in bid order as the server does (UringCompletions).
// One iteration = one burst: `bytes` sent in one SEND, reaped until all of it has arrived.
// A technique the kernel lacks makes `init` return nil (the benchmark is then skipped).
internal import CLinux
import Glibc

public final class TechniqueStream {
    public struct Options: Sendable {
        public var bytes: Int
        public var bundle = false
        public var incremental = false
        public var fixedFiles = false
        public init(bytes: Int, bundle: Bool = false, incremental: Bool = false, fixedFiles: Bool = false) {
            self.bytes = bytes
            self.bundle = bundle
            self.incremental = incremental
            self.fixedFiles = fixedFiles
        }
    }

    static let group: UInt16 = 9
    static let bufCount = 64
    static let bufSize = 4096
    let ring = Ring(entries: 64)
    let o: Options
    let a: Int32, b: Int32
    let out: UnsafeMutableRawPointer
    let bufs = UnsafeMutableRawPointer.allocate(byteCount: bufCount * bufSize, alignment: 4096)
    let br: UnsafeMutablePointer<io_uring_buf_ring>
    let mask: Int32
    var returnedEarly = [Bool](repeating: false, count: bufCount)
    var consumed = [Int](repeating: 0, count: bufCount)
    var nextReturn = 0
    var pending: Int32 = 0
    /// Receive completions per burst, last run (what a bundle saves).
    public private(set) var completions = 0

    public init?(_ o: Options) {
        self.o = o
        (a, b) = tcpPair(nonBlocking: false)
        out = .allocate(byteCount: max(o.bytes, 64), alignment: 64)
        out.initializeMemory(as: UInt8.self, repeating: 0x74, count: max(o.bytes, 64))
        var err: Int32 = 0
        let flags: UInt16 = o.incremental ? UInt16(IOU_PBUF_RING_INC) : 0
        guard let br = clinux_buf_ring_setup_flags(&ring.ring, UInt32(Self.bufCount), Self.group, flags, &err) else {
            close(a); close(b); out.deallocate(); bufs.deallocate()
            return nil
        }
        self.br = br
        mask = io_uring_buf_ring_mask(UInt32(Self.bufCount))
        for i in 0..<Self.bufCount {
            io_uring_buf_ring_add(br, bufs + i * Self.bufSize, UInt32(Self.bufSize), UInt16(i), mask, Int32(i))
        }
        io_uring_buf_ring_advance(br, Int32(Self.bufCount))
        if o.bundle && clinux_ring_features(&ring.ring) & UInt32(IORING_FEAT_RECVSEND_BUNDLE) == 0 { return nil }
        if o.fixedFiles {
            var fds: [Int32] = [a, b]
            guard io_uring_register_files(&ring.ring, &fds, 2) == 0 else { return nil }
        }
        arm()
    }

    deinit {
        close(a); close(b)
        clinux_buf_ring_free(&ring.ring, br, UInt32(Self.bufCount), Self.group)
        out.deallocate(); bufs.deallocate()
    }

    /// The fd (or fixed-table index) of end `i` (0: sender, 1: receiver), and the SQE flag.
    @inline(__always) func target(_ i: Int32) -> (Int32, UInt8) {
        o.fixedFiles ? (i, UInt8(IOSQE_FIXED_FILE_BIT)) : (i == 0 ? a : b, 255)
    }

    func arm() {
        let s = ring.sqe()
        let (fd, bit) = target(1)
        clinux_prep_recv_multishot_bundle(s, fd, Self.group, o.bundle ? 1 : 0)
        if bit != 255 { s.pointee.flags |= 1 << bit }
        io_uring_sqe_set_data64(s, 2)
    }

    @inline(__always) func giveBack(_ bid: Int) {
        guard bid == nextReturn else { returnedEarly[bid] = true; return }
        var b = bid
        repeat {
            returnedEarly[b] = false
            io_uring_buf_ring_add(br, bufs + b * Self.bufSize, UInt32(Self.bufSize), UInt16(b), mask, pending)
            pending += 1
            b = (b + 1) & Int(mask)
        } while returnedEarly[b]
        nextReturn = b
    }

    /// Sums the bytes it reads so the work is not optimised away.
    @inline(never)
    public func run(iterations: Int) -> Int {
        var sum = 0
        var recvs = 0
        for _ in 0..<iterations {
            let s = ring.sqe()
            let (fd, bit) = target(0)
            io_uring_prep_send(s, fd, out, o.bytes, 0)
            if bit != 255 { s.pointee.flags |= 1 << bit }
            io_uring_sqe_set_data64(s, 1)
            var sent = false, left = o.bytes
            recvs = 0
            while !sent || left > 0 {
                _ = io_uring_submit_and_wait(&ring.ring, 1)
                let n = Int(io_uring_peek_batch_cqe(&ring.ring, ring.cqes, 64))
                for i in 0..<n {
                    let cqe = ring.cqes[i]!
                    let res = Int(cqe.pointee.res), flags = cqe.pointee.flags
                    if cqe.pointee.user_data == 1 {
                        precondition(res == o.bytes, "send \(res)")
                        sent = true
                        continue
                    }
                    precondition(res > 0 && flags & IORING_CQE_F_BUFFER != 0, "recv \(res)")
                    recvs += 1
                    var bid = Int(flags >> IORING_CQE_BUFFER_SHIFT), rest = res
                    while rest > 0 {
                        let start = o.incremental ? consumed[bid] : 0
                        let k = min(rest, Self.bufSize - start)
                        sum &+= Int(bufs.load(fromByteOffset: bid * Self.bufSize + start, as: UInt8.self))
                        rest -= k
                        if rest == 0 && flags & UInt32(IORING_CQE_F_BUF_MORE) != 0 {
                            consumed[bid] = start + k
                        } else {
                            consumed[bid] = 0
                            giveBack(bid)
                        }
                        bid = (bid + 1) & Int(mask)
                    }
                    left -= res
                    if flags & IORING_CQE_F_MORE == 0 { arm() }
                }
                io_uring_cq_advance(&ring.ring, UInt32(n))
                if pending > 0 { io_uring_buf_ring_advance(br, pending); pending = 0 }
            }
        }
        completions = recvs
        return sum
    }
}
