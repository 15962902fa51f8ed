/// A backend with no kernel behind it: tests and the fuzzer hand bytes to the reactor as if
/// they had been received, and read back what it sent. Sends complete at once; closes release
/// at once. (TigerBeetle's approach: the same reactor code, driven one step at a time.)
import Glibc
import Primitives

package final class MemoryBackend: IOBackend {
    /// What each connection was sent, by connection slot.
    package var sent: [Int: [UInt8]] = [:]
    package var closedSlots: Set<Int> = []
    private var released: [Connection] = []

    func addListener(fd: Int32) throws(SyscallError) {}
    func addWakeup(_ target: WakeTarget) throws(SyscallError) {}
    func wake(_ peer: WakeTarget) {}
    /// Accepts turned away (`refuse`), with the message each was sent.
    var refused: [[UInt8]] = []
    func refuse(_ socket: AcceptedSocket, _ message: UnsafeRawBufferPointer) { refused.append(Array(message)) }
    let counters = KernelCounters()

    func startReceiving(_ c: Connection) {
        c.ops.recv = .inFlight
        closedSlots.remove(Int(c.slot))   // a reused slot is a new, open connection
        sent[Int(c.slot)] = nil
    }

    /// Drop output instead of collecting it (for allocation benchmarks of the message path).
    package var discardOutput = false

    /// The reactor's pool, which shared message blocks go back to.
    var pool: BufferPool!

    package init() {}

    func send(_ c: Connection) {
        if discardOutput {
            c.dropQueuedOutput(pool: pool)
            return
        }
        if let b = c.output.blocks, !b.pointee.out.isEmpty {
            // Gather own bytes and shared blocks in queue order, as sendmsg would.
            while c.hasQueuedOutput {
                let (n, total) = b.pointee.out.fill(b.pointee.iov, max: OutputBlocks.iovCapacity, own: c.output.out.readable)
                for i in 0..<n {
                    let v = b.pointee.iov[i]
                    sent[Int(c.slot), default: []].append(contentsOf: UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len))
                }
                c.consumeQueued(total, pool: pool)
            }
            return
        }
        sent[Int(c.slot), default: []].append(contentsOf: c.output.out.readable)
        c.output.out.removeAll()
    }

    func close(_ c: Connection) {
        c.ops.recv = .idle
        c.lifecycle = .released
        closedSlots.insert(Int(c.slot))
        released.append(c)
    }

    @discardableResult
    func poll(timeoutMillis: Int32, gather: Bool, handler: IOEventHandler) -> Bool {
        let r = released
        released.removeAll()
        for c in r { handler.connectionReleased(c) }
        return false
    }

    func releaseIdleMemory() {}   // one small scratch buffer: nothing worth giving back

    func shutdown() {}
}
