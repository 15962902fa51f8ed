import Synchronization

// The command connection's pipeline: every command records what its reply is for, in order,
// and replies are matched against that queue (publish acknowledgements, script SHAs, counts).

extension RedisLink {
    func expectReply(_ e: Expect) {
        if expectHead == expect.count {
            cmdWaitingSince = Self.nowMillis()
            if expectHead > 0 {
                expect.removeAll(keepingCapacity: true)
                expectHead = 0
            }
        }
        expect.append(e)
    }

    func command(_ args: [String], _ e: Expect = .ignore) {
        RESP.appendCommand(&cmd.out, args)
        expectReply(e)
    }

    func loadScripts() {
        guard !scriptsLoading else { return }
        scriptsLoading = true
        for (i, src) in Self.scripts.enumerated() { command(["SCRIPT", "LOAD", src], .scriptLoad(i)) }
    }

    func evalScript(_ i: Int, keys: [String], args: [String], _ e: Expect) {
        if let sha = scriptSHA[i] {
            command(["EVALSHA", sha, String(keys.count)] + keys + args, e)
        } else {
            command(["EVAL", Self.scripts[i], String(keys.count)] + keys + args, e)
        }
    }

    func onCommandReply(_ r: RedisReply) throws(RedisLinkError) {
        guard expectHead < expect.count else {
            throw RedisLinkError("unexpected reply from redis (\(r.string))")
        }
        cmdWaitingSince = Self.nowMillis()
        let e = expect[expectHead]
        switch e {
        case .publishes(let n):
            if r.isError {
                countFailures(1, reason: "redis error: \(r.string)")
            } else {
                published.wrappingAdd(1, ordering: .relaxed)
            }
            if n > 1 {
                expect[expectHead] = .publishes(n - 1)
                return
            }
        case .ignore:
            if r.isError { noteError(r, what: "command") }
        case .scriptLoad(let i):
            if r.isString && r.bytes.count == 40 {
                scriptSHA[i] = r.string
            } else {
                logger.warning("redis SCRIPT LOAD failed", ["reply": r.string])
            }
            if i == Self.scripts.count - 1 { scriptsLoading = false }
        case .roomCount(let room, let mine):
            if r.isInteger {
                if activeRooms.contains(room) || localCounts[room] != nil {
                    let n = r.integer
                    clusterCounts.withLock { $0[room] = n }
                    remoteCounts.withLock { $0[room] = max(0, n - mine) }
                }
            } else {
                noteError(r, what: "presence")
                if r.isError { dirtyRooms.insert(room) }
            }
        }
        expectHead += 1
        if expectHead == expect.count {
            expect.removeAll(keepingCapacity: true)
            expectHead = 0
        }
    }

    private func noteError(_ r: RedisReply, what: String) {
        if r.isError && r.hasPrefix("NOSCRIPT") {
            scriptSHA = [nil, nil]
            loadScripts()
            return
        }
        logger.debug("unexpected redis reply", ["for": what, "reply": r.string])
    }
}
