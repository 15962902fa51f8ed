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

    /// The scripts must be loaded again (a new connection, or Redis lost them).
    func forgetScripts() {
        scriptSHA = Array(repeating: nil, count: Self.scripts.count)
        inbox.withLock { $0.chatSHA = nil }
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

    /// Every room-keyed script goes through here (a Redis Cluster link routes it by the room's
    /// slot; this single-instance link just evaluates it on `cmd`).
    func roomScript(_ i: Int, room: String, keys: [String], args: [String], _ e: Expect) {
        evalScript(i, keys: keys, args: args, e)
    }

    /// Every room-keyed command goes through here (see roomScript).
    func roomCommand(_ room: String, _ args: [String], _ e: Expect) {
        command(args, e)
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
                if r.hasPrefix("NOSCRIPT") { forgetScripts(); loadScripts() }
            } else {
                published.wrappingAdd(1, ordering: .relaxed)
            }
            answerTicket(r)
            if n > 1 {
                expect[expectHead] = .publishes(n - 1)
                return
            }
        case .ignore:
            if r.isError { noteError(r, what: "command") }
        case .scriptLoad(let i):
            if r.isString && r.bytes.count == 40 {
                scriptSHA[i] = r.string
                if i == Self.chatScript {
                    let sha = [UInt8](r.bytes)
                    inbox.withLock { $0.chatSHA = sha }
                }
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
        case .roomSync(let room):
            onSyncReply(room, r)
        }
        expectHead += 1
        if expectHead == expect.count {
            expect.removeAll(keepingCapacity: true)
            expectHead = 0
        }
    }

    private func noteError(_ r: RedisReply, what: String) {
        if r.isError && r.hasPrefix("NOSCRIPT") {
            forgetScripts()
            loadScripts()
            return
        }
        logger.debug("unexpected redis reply", ["for": what, "reply": r.string])
    }
}
