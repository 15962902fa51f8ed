import Primitives

/// Renders GET /stats: the merged per-reactor snapshots (at most a second old), the monitor's
/// state and the feature flags, as one JSON object.
enum StatsReport {
    static func render(_ shared: ServerShared, into b: inout ByteBuffer) {
        let f = PerformanceMonitor.figures(shared)
        let monitor = shared.monitor.current
        let snaps = shared.reactors.map { $0.snapshots.read() }
        b.append("{\"msg_per_sec\":")
        b.appendDecimal(f.messagesPerSec)
        b.append(",\"deliveries_per_sec\":")
        b.appendDecimal(f.deliveriesPerSec)
        b.append(",\"latency_p50_ms\":")
        appendDouble(&b, f.latencyP50Ms)
        b.append(",\"latency_p99_ms\":")
        appendDouble(&b, f.latencyP99Ms)
        b.append(",\"memory_mb\":")
        appendDouble(&b, f.memoryMB)
        b.append(",\"connections\":")
        b.appendDecimal(f.connections)
        b.append(",\"memory_limit_mb\":")
        appendDouble(&b, f.memoryLimitMB)
        b.append(",\"error_rate\":")
        appendDouble(&b, f.errorRate)
        b.append(",\"client_error_rate\":")
        appendDouble(&b, f.clientErrorRate)
        b.append(",\"rooms\":")
        b.appendDecimal(shared.rooms.roomCount)
        b.append(",\"uptime_s\":")
        b.appendDecimal(Int((Clock.monoNanos() &- shared.startedAt) / 1_000_000_000))
        b.append(",\"io_mode\":\"")
        b.append(contentsOf: shared.ioMode.rawValue)
        b.append("\",\"threads\":")
        b.appendDecimal(shared.reactors.count)
        b.append(",\"kernel\":")
        b.appendJSONString(SystemInfo.kernelRelease)
        b.append(",\"version\":")
        b.appendJSONString(Server.version)
        b.append(",\"draining\":")
        b.append(shared.draining.load(ordering: .relaxed) ? "true" : "false")
        b.append(",\"overloaded\":")
        b.append(monitor.overloaded ? "true" : "false")
        b.append(",\"breaches\":[")
        for (i, s) in monitor.breaches.enumerated() {
            if i > 0 { b.append(",") }
            b.appendJSONString(s)
        }
        b.append("],\"thresholds\":{\"max_latency_ms\":")
        appendDouble(&b, shared.config.maxLatencyMs)
        b.append(",\"max_memory_mb\":")
        appendDouble(&b, shared.config.maxMemoryMB)
        b.append(",\"memory_per_reactor_mb\":")
        appendDouble(&b, shared.config.memoryPerReactorMB)
        b.append(",\"memory_per_connection_kb\":")
        b.appendDecimal(shared.config.memoryPerConnectionKB)
        b.append(",\"min_throughput\":")
        b.appendDecimal(shared.config.minThroughput)
        b.append(",\"max_error_rate\":")
        appendDouble(&b, shared.config.maxErrorRate)
        b.append(",\"monitor_breach_s\":")
        b.appendDecimal(shared.config.monitorBreachSeconds)
        b.append("},\"flags\":[")
        for (i, flag) in shared.flags.all.enumerated() {
            if i > 0 { b.append(",") }
            renderFlag(flag, into: &b)
        }
        b.append("],\"limits\":{")
        var limits: [String: Int] = [:]
        for s in snaps { for (k, v) in s.limitHits { limits[k, default: 0] += v } }
        for (i, k) in limits.keys.sorted().enumerated() {
            if i > 0 { b.append(",") }
            b.appendJSONString(k)
            b.append(":")
            b.appendDecimal(limits[k]!)
        }
        b.append("},\"totals\":{")
        let totals: [(StaticString, Int)] = [
            ("messages_in", snaps.reduce(0) { $0 + $1.totalMessagesIn }),
            ("deliveries", snaps.reduce(0) { $0 + $1.totalDeliveries }),
            ("errors", snaps.reduce(0) { $0 + $1.totalErrors }),
            ("client_errors", snaps.reduce(0) { $0 + $1.totalErrors }),
            ("server_failures", f.serverFailures),
            ("accepted", snaps.reduce(0) { $0 + $1.totalAccepted }),
            ("closed", snaps.reduce(0) { $0 + $1.totalClosed }),
            ("bytes_in", snaps.reduce(0) { $0 + $1.bytesIn }),
            ("bytes_out", snaps.reduce(0) { $0 + $1.bytesOut }),
            ("zero_copy_sends", snaps.reduce(0) { $0 + $1.zeroCopySends }),
            ("zero_copy_copied", snaps.reduce(0) { $0 + $1.zeroCopyCopied }),
            ("spliced_batches", snaps.reduce(0) { $0 + $1.splicedBatches }),
            ("websocket_connections", snaps.reduce(0) { $0 + $1.webSocketConnections }),   // open now
            ("websocket_frames_in", snaps.reduce(0) { $0 + $1.webSocketFramesIn }),
            ("websocket_frames_out", snaps.reduce(0) { $0 + $1.webSocketFramesOut }),
        ] + historyTotals(shared, snaps)
        for (i, (k, v)) in totals.enumerated() {
            if i > 0 { b.append(",") }
            b.append("\"")
            b.append(k)
            b.append("\":")
            b.appendDecimal(v)
        }
        b.append("},\"reactors\":[")
        for (i, s) in snaps.enumerated() {
            if i > 0 { b.append(",") }
            b.append("{\"index\":")
            b.appendDecimal(s.index)
            b.append(",\"connections\":")
            b.appendDecimal(s.connections)
            b.append(",\"msg_per_sec\":")
            b.appendDecimal(s.messagesPerSec)
            b.append(",\"deliveries_per_sec\":")
            b.appendDecimal(s.deliveriesPerSec)
            b.append(",\"latency_p99_ms\":")
            appendDouble(&b, Double(s.latencyLastSecond.percentile(0.99)) / 1000)
            b.append(",\"backlogged\":")
            b.appendDecimal(s.backlogged)
            b.append(",\"batched_wait\":")
            b.append(s.batchedWait ? "true" : "false")
            b.append(",\"open_pipes\":")
            b.appendDecimal(s.openPipes)
            b.append("}")
        }
        b.append("]")
        if let cluster = shared.cluster {
            b.append(",\"cluster\":")
            cluster.renderStats(into: &b)
        }
        if !shared.voice.relays.isEmpty {
            // The relays keep their own figures (their /stats); this is the control side.
            b.append(",\"voice\":{\"channels\":")
            b.appendDecimal(shared.voice.channelCount)
            b.append(",\"relays\":")
            b.appendDecimal(shared.voice.relays.count)
            b.append(",\"revocations_failed\":")
            b.appendDecimal(shared.voice.revocationsFailed.load(ordering: .relaxed))
            b.append("}")
        }
        b.append("}")
    }

    /// Recovery and history (docs/protocol.md, "Recovery"): joins with `since` by outcome,
    /// lines replayed, history bytes and evictions, and messages dropped by reason.
    static func historyTotals(_ shared: ServerShared, _ snaps: [ReactorSnapshot]) -> [(StaticString, Int)] {
        func sum(_ k: (ReactorSnapshot) -> Int) -> Int { snaps.reduce(0) { $0 + k($1) } }
        return [
            ("recoveries_ok", sum { $0.recoveriesOK }),
            ("recoveries_failed_epoch", sum { $0.recoveriesFailedEpoch }),
            ("recoveries_failed_evicted", sum { $0.recoveriesFailedEvicted }),
            ("messages_replayed", sum { $0.messagesReplayed }),
            ("history_bytes", shared.historyBytes.load(ordering: .relaxed)
                + (shared.cluster?.historyBytes.value.load(ordering: .relaxed) ?? 0)),
            ("history_evictions", sum { $0.historyEvictions }),
            ("history_early_evictions", sum { $0.historyEarlyEvictions }),
            ("drops_slow_consumer_cut", sum { $0.slowConsumerCuts }),
            ("drops_cluster_publish_failure", shared.cluster?.stats.publishFailures ?? 0),
            // Offsets a node's log had to skip: no longer in the room's stream when fetched.
            ("cluster_lost_messages", shared.cluster?.stats.lostMessages ?? 0),
        ]
    }

    static func renderFlag(_ flag: FeatureFlag, into b: inout ByteBuffer) {
        b.append("{\"name\":")
        b.appendJSONString(flag.name)
        b.append(",\"enabled\":")
        b.append(flag.enabledByOperator.load(ordering: .relaxed) ? "true" : "false")
        b.append(",\"percent\":")
        b.appendDecimal(flag.rolloutPercent)
        b.append(",\"critical\":")
        b.append(flag.critical ? "true" : "false")
        b.append(",\"shed\":")
        b.append(flag.isShed ? "true" : "false")
        b.append("}")
    }

    /// Fixed three decimals, no exponent (JSON numbers from any Double we produce).
    static func appendDouble(_ b: inout ByteBuffer, _ v: Double) {
        guard v.isFinite else { b.append("0"); return }
        let scaled = Int((v * 1000).rounded())
        if scaled < 0 { b.append("-") }
        let m = scaled.magnitude
        b.appendDecimal(Int(m / 1000))
        b.append(".")
        let frac = Int(m % 1000)
        if frac < 100 { b.append("0") }
        if frac < 10 { b.append("0") }
        b.appendDecimal(frac)
    }
}
