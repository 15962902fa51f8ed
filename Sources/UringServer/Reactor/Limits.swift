import Glibc
import Primitives

// Limits: per-connection rate, timeouts, slow-consumer cuts, and the limit-hit counters.

extension Reactor {
    func checkTimeouts(_ now: UInt64) {
        let helloMs = UInt64(config.helloTimeoutMs)
        let idleMs = UInt64(config.idleTimeoutMs)
        let softNs = UInt64(config.outboundSoftSeconds) * 1_000_000_000
        for case let c? in connections where c.closing && !c.closeStarted && now > c.forceCloseAt {
            closeNow(c)   // its peer stopped reading what we still had to say
        }
        for case let c? in connections where !c.closing {
            // Idle connections hold no buffers: give back output memory a second after the
            // last send (busy ones keep theirs, so steady traffic does not allocate).
            if !c.sendInFlight && !c.hasQueuedOutput && c.sendingIsEmpty && Connection.elapsedMs(c.lastOutputMs, now) > 1000 {
                c.releaseOutput(pool: pool, blocksPool: blocksPool)
            }
            // An HTTP head (or a first line that may become one) has a deadline of its own and
            // never takes the JSON hello/idle path below: 408 for HTTP, a silent close while
            // undecided, so a slowloris client holds a connection for seconds, not minutes.
            if c.framing == .http || c.isSniffingRequestLine {
                if Connection.elapsedMs(c.acceptedMs, now) > UInt64(config.httpHeaderTimeoutMs) {
                    limitHit("http_header_timeout")
                    if c.framing == .http { sendHTTP(c, HTTPRouter.requestTimeout(), since: now) } else { closeNow(c) }
                }
                continue
            }
            // (ws_echo is a test mode for WebSocket suites that never say hello.)
            if !c.isAuthenticated && !(c.framing == .webSocket && config.wsEcho)
                && Connection.elapsedMs(c.acceptedMs, now) > helloMs {
                refuse(c, limit: "hello_timeout", .helloTimeout, "no hello within \(config.helloTimeoutMs) ms")
                continue
            }
            if c.overSoftSince != 0 && now &- c.overSoftSince > softNs {
                cutSlowConsumer(c, "output over outbound_soft_bytes for \(config.outboundSoftSeconds) s")
                continue
            }
            if idleMs > 0 && Connection.elapsedMs(c.lastReceiveMs, now) > idleMs {
                if Connection.elapsedMs(c.lastReceiveMs, now) > 2 * idleMs {
                    refuse(c, limit: "idle_timeout", .idleTimeout, "no traffic for \(2 * config.idleTimeoutMs) ms")
                } else if !c.idlePingSent {
                    c.idlePingSent = true
                    if c.framing == .webSocket { sendWebSocketPing(c); continue }
                    reply(to: c) { b in
                        b.append("{\"type\":\"ping\",\"ts\":")
                        b.appendDecimal(wallMillis())
                        b.append("}")
                    }
                }
            }
        }
    }

    /// A limit was hit: counted, the client told why (`code`), the connection closed after
    /// its output.
    func refuse(_ c: Connection, limit: String, _ code: ErrorCode, _ message: String) {
        limitHit(limit)
        sendError(c, code, message, id: nil)
        if c.framing == .webSocket {
            closeWebSocket(c, code == .frameTooLarge ? .tooBig : .policyViolation, message)
            return
        }
        closeAfterFlush(c)
    }

    public func limitHit(_ name: String) {
        counters.limitHits[name, default: 0] += 1
    }

    /// Token bucket per connection; sustained abuse closes the connection.
    @inline(__always)
    func admitByRate(_ c: Connection) throws(ProtocolError) {
        let rate = config.rateLimitPerSec
        if rate == 0 { return }
        if c.tokens < 1 {
            let elapsed = Double(Connection.elapsedMs(c.tokensRefilledMs, turnNanos)) / 1e3
            c.tokens = Float(min(Double(config.rateLimitBurst), Double(c.tokens) + elapsed * Double(rate)))
            c.tokensRefilledMs = Connection.ms(turnNanos)
        }
        if c.tokens >= 1 {
            c.tokens -= 1
            c.rateStrikes = 0
            return
        }
        limitHit("rate_limited")
        c.rateStrikes += 1
        if c.rateStrikes >= config.rateLimitStrikes {
            requestClose(c, WebSocketCloseCode.policyViolation.rawValue, "over the rate limit for too long")
            closeAfterFlush(c)
            throw ProtocolError(.rateLimited, "over \(rate) messages/s for too long; closing")
        }
        throw ProtocolError(.rateLimited, "over \(rate) messages/s (burst \(config.rateLimitBurst)); message dropped")
    }

    /// Drops what a consumer has not read and closes it with slow_consumer. Found while a
    /// message is being fanned out, so the cut itself waits for the end of the turn (closing
    /// announces user_left, which must not re-enter the fan-out in progress).
    func cutSlowConsumer(_ c: Connection, _ why: String) {
        if c.cutReason != nil || c.closing { return }
        c.extras.cutReason = why
        pendingCuts.append(c)
    }

    func performCuts() {
        let cuts = pendingCuts
        pendingCuts.removeAll(keepingCapacity: true)
        for c in cuts where !c.closing {
            limitHit("slow_consumer")
            // Drop what the consumer has not read and queue the error. It is not reading, so
            // the flush gets a short grace period before the close is forced.
            c.dropQueuedOutput(pool: pool)
            c.overSoftSince = 0
            counters.slowConsumerCuts &+= 1
            sendCutError(c)
            closeAfterFlush(c, grace: 250_000_000)
        }
    }

    /// slow_consumer with `offsets`: per room, the last offset queued to `c` before the cut.
    /// This reactor's cursor is exact for it: every entry up to the cursor was queued to each
    /// local member (the turn's batch is flushed before cuts run), none after it. What `c` had
    /// not read of them was dropped, so it rejoins with `since` = the last offset it received.
    func sendCutError(_ c: Connection) {
        counters.errorsSent &+= 1
        let why = c.cutReason ?? "slow consumer"
        reply(to: c) { b in
            b.append("{\"type\":\"error\",\"code\":\"slow_consumer\",\"message\":")
            b.appendJSONString(why)
            b.append(",\"offsets\":{")
            for (i, local) in c.rooms.enumerated() {
                if i > 0 { b.append(",") }
                b.appendJSONString(local.name)
                b.append(":")
                b.appendDecimal(local.cursor)
            }
            b.append("}}")
        }
    }
}
