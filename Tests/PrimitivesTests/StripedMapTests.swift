import Testing
import Primitives
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(i)` for i in 0..<count, each on its own pthread, and joins them all. Real OS
/// threads (not tasks) so the threads truly run at the same time on a 2-core machine.
func runOnThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Job: @unchecked Sendable {
        let index: Int
        let body: @Sendable (Int) -> Void
        init(_ index: Int, _ body: @escaping @Sendable (Int) -> Void) { self.index = index; self.body = body }
    }
    var threads: [pthread_t] = []
    for i in 0..<count {
        var t = pthread_t()
        let job = Unmanaged.passRetained(Job(i, body)).toOpaque()
        let rc = pthread_create(&t, nil, { arg in
            let job = Unmanaged<Job>.fromOpaque(arg!).takeRetainedValue()
            job.body(job.index)
            return nil
        }, job)
        precondition(rc == 0, "pthread_create: \(rc)")
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

/// A start line so all threads begin hammering together.
final class StartGate: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var waiting = 0
    private let parties: Int
    init(parties: Int) {
        self.parties = parties
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
    }
    func arriveAndWait() {
        pthread_mutex_lock(&mutex)
        waiting += 1
        if waiting == parties { pthread_cond_broadcast(&cond) }
        while waiting < parties { pthread_cond_wait(&cond, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
}

@Suite struct StripedMapTests {
    @Test func basicOperations() {
        let m = StripedMap<String, Int>(stripes: 8)
        #expect(m.count == 0)
        #expect(m.value(forKey: "a") == nil)
        #expect(m.updateValue(1, forKey: "a") == nil)
        #expect(m.updateValue(2, forKey: "a") == 1)
        m.updateValue(10, forKey: "b")
        #expect(m.count == 2)
        #expect(m.withValue(forKey: "a") { $0 } == 2)
        let doubled = m.update(key: "b") { slot -> Int in
            slot = (slot ?? 0) * 2
            return slot!
        }
        #expect(doubled == 20)
        #expect(m.value(forKey: "b") == 20)
        // update can remove by setting nil.
        m.update(key: "a") { $0 = nil }
        #expect(m.value(forKey: "a") == nil)
        #expect(m.count == 1)
        #expect(m.removeValue(forKey: "b") == 20)
        #expect(m.removeValue(forKey: "b") == nil)
        #expect(m.count == 0)
    }

    @Test func stripeCountIsPowerOfTwo() {
        #expect(StripedMap<Int, Int>(stripes: 1).stripeCount == 1)
        #expect(StripedMap<Int, Int>(stripes: 5).stripeCount == 8)
        #expect(StripedMap<Int, Int>(stripes: 16).stripeCount == 16)
        #expect(StripedMap<Int, Int>(stripes: 0).stripeCount == 1)
    }

    @Test func keysSpreadOverStripes() {
        let m = StripedMap<Int, Int>(stripes: 16)
        for k in 0..<16_000 { m.updateValue(k, forKey: k) }
        #expect(m.count == 16_000)
        let counts = m.stripeCounts
        #expect(counts.count == 16)
        // 1000 expected per stripe; sequential Int keys must not pile into a few stripes.
        #expect(counts.allSatisfy { $0 > 600 && $0 < 1400 }, "\(counts)")
        m.removeAll()
        #expect(m.count == 0)
    }

    @Test func singleStripeStillWorks() {
        let m = StripedMap<Int, String>(stripes: 1)
        for k in 0..<100 { m.updateValue("\(k)", forKey: k) }
        #expect(m.count == 100)
        #expect(m.value(forKey: 42) == "42")
    }

    @Test func typedThrowsPropagate() {
        struct Boom: Error {}
        let m = StripedMap<Int, Int>()
        #expect(throws: Boom.self) {
            try m.update(key: 1) { (_: inout Int?) throws(Boom) in throw Boom() }
        }
        // The lock was released: the map is still usable.
        m.updateValue(1, forKey: 1)
        #expect(m.value(forKey: 1) == 1)
    }

    @Test func referenceValuesAreReleased() {
        final class Token {}
        weak var weakToken: Token?
        do {
            let m = StripedMap<Int, Token>()
            let t = Token()
            weakToken = t
            m.updateValue(t, forKey: 1)
        }
        #expect(weakToken == nil)
    }

    @Test(arguments: [2, 4])
    func stripedMapConcurrentExactCounts(threads: Int) {
        hammer(StripedMap<Int, Int>(stripes: 16), threads: threads)
    }

    @Test(arguments: [2, 4])
    func singleLockMapConcurrentExactCounts(threads: Int) {
        hammer(SingleLockMap<Int, Int>(), threads: threads)
    }
}

final class AtomicCounter: Sendable {
    let n = Atomic<Int>(0)
}

/// `threads` threads at once: each increments 64 shared counters `rounds` times (contended
/// read-modify-write), inserts `privateKeys` keys of its own and removes the even ones.
/// Afterwards every count must be exact.
private func hammer<M: ConcurrentMap & Sendable>(_ map: M, threads: Int) where M.Key == Int, M.Value == Int {
    let rounds = 20_480 // a multiple of `shared`, so every counter ends equal
    let shared = 64
    let privateKeys = 5_000
    let gate = StartGate(parties: threads)
    let mismatches = AtomicCounter()
    runOnThreads(threads) { t in
        gate.arriveAndWait()
        for r in 0..<rounds {
            map.update(key: r % shared) { $0 = ($0 ?? 0) + 1 }
            if r < privateKeys {
                let k = 1_000_000 * (t + 1) + r
                map.updateValue(r, forKey: k)
                if r % 2 == 0, r > 0 {
                    // Remove the previous even key inserted by this thread.
                    if map.removeValue(forKey: k - 2) != r - 2 { mismatches.n.add(1, ordering: .relaxed) }
                }
            }
        }
        // Remove the last even key left (privateKeys - 2 when privateKeys is even).
        map.removeValue(forKey: 1_000_000 * (t + 1) + privateKeys - 2)
        map.removeValue(forKey: 1_000_000 * (t + 1))
    }
    #expect(mismatches.n.load(ordering: .relaxed) == 0)
    var total = 0
    for k in 0..<shared { total += map.value(forKey: k) ?? 0 }
    #expect(total == threads * rounds)
    for k in 0..<shared { #expect(map.value(forKey: k) == threads * rounds / shared) }
    // Each thread keeps its odd private keys: privateKeys / 2 of them.
    #expect(map.count == shared + threads * privateKeys / 2)
    for t in 0..<threads {
        #expect(map.value(forKey: 1_000_000 * (t + 1) + 1) == 1)
        #expect(map.value(forKey: 1_000_000 * (t + 1) + 2) == nil)
    }
}
