import Primitives
import Prometheus
import Synchronization

/// GET /metrics in the Prometheus text format, through swift-prometheus.
///
/// Reactors never touch these metrics: the hot path counts in plain per-reactor integers, and
/// on each scrape the exporter copies the merged snapshots into the registry (counters advance
/// by the difference since the previous scrape). That keeps shared atomics off the hot path.
final class MetricsExporter: Sendable {
    private struct Last {
        var messages = 0, deliveries = 0, errors = 0, failures = 0, accepted = 0, closed = 0, bytesIn = 0, bytesOut = 0
        var wsFramesIn = 0, wsFramesOut = 0
        var limits: [String: Int] = [:]
        var history: [String: Int] = [:]
    }

    private let registry = PrometheusCollectorRegistry()
    private let last = Locked(Last())
    private let messages, deliveries, errors, failures, accepted, closed, bytesIn, bytesOut: Counter
    private let wsFramesIn, wsFramesOut: Counter
    private let connections, memory, latencyP50, latencyP99, overloaded, uptime, rooms, wsConnections: Gauge
    private let msgRate, deliveryRate: Gauge

    init() {
        messages = registry.makeCounter(name: "tcpserver_messages_in_total", help: "Client messages received")
        deliveries = registry.makeCounter(name: "tcpserver_deliveries_total", help: "Messages queued to clients (replies and room deliveries)")
        errors = registry.makeCounter(name: "tcpserver_errors_sent_total", help: "Error messages sent to clients (client errors: never a reason to shed)")
        failures = registry.makeCounter(name: "tcpserver_server_failures_total", help: "Failures of the server's own doing (send errors other than the peer going away, cluster publish failures)")
        accepted = registry.makeCounter(name: "tcpserver_connections_accepted_total", help: "Connections accepted")
        closed = registry.makeCounter(name: "tcpserver_connections_closed_total", help: "Connections closed")
        bytesIn = registry.makeCounter(name: "tcpserver_received_bytes_total", help: "Bytes received")
        bytesOut = registry.makeCounter(name: "tcpserver_sent_bytes_total", help: "Bytes handed to the kernel for sending")
        connections = registry.makeGauge(name: "tcpserver_connections", help: "Open connections")
        wsConnections = registry.makeGauge(name: "tcpserver_websocket_connections", help: "Open WebSocket connections (upgraded on /ws)")
        wsFramesIn = registry.makeCounter(name: "tcpserver_websocket_frames_in_total", help: "WebSocket messages and control frames received")
        wsFramesOut = registry.makeCounter(name: "tcpserver_websocket_frames_out_total", help: "WebSocket frames queued to clients")
        memory = registry.makeGauge(name: "tcpserver_resident_memory_bytes", help: "Resident set size")
        latencyP50 = registry.makeGauge(name: "tcpserver_latency_p50_seconds", help: "Receive-to-send latency, p50 over the last second")
        latencyP99 = registry.makeGauge(name: "tcpserver_latency_p99_seconds", help: "Receive-to-send latency, p99 over the last second")
        overloaded = registry.makeGauge(name: "tcpserver_overloaded", help: "1 while the performance monitor sheds features")
        uptime = registry.makeGauge(name: "tcpserver_uptime_seconds", help: "Seconds since start")
        rooms = registry.makeGauge(name: "tcpserver_rooms", help: "Rooms with members")
        msgRate = registry.makeGauge(name: "tcpserver_messages_per_second", help: "Messages received in the last second")
        deliveryRate = registry.makeGauge(name: "tcpserver_deliveries_per_second", help: "Deliveries in the last second")
    }

    func render(_ shared: ServerShared) -> [UInt8] {
        let f = PerformanceMonitor.figures(shared)
        let snaps = shared.reactors.map { $0.snapshots.read() }
        func sum(_ k: (ReactorSnapshot) -> Int) -> Int { snaps.reduce(0) { $0 + k($1) } }
        var limitTotals: [String: Int] = [:]
        for s in snaps { for (k, v) in s.limitHits { limitTotals[k, default: 0] += v } }
        return last.withLock { l in
            func advance(_ c: Counter, _ now: Int, _ prev: inout Int) {
                if now > prev { c.increment(by: Int64(now - prev)) }
                prev = now
            }
            advance(messages, sum { $0.totalMessagesIn }, &l.messages)
            advance(deliveries, sum { $0.totalDeliveries }, &l.deliveries)
            advance(errors, sum { $0.totalErrors }, &l.errors)
            advance(failures, f.serverFailures, &l.failures)
            advance(accepted, sum { $0.totalAccepted }, &l.accepted)
            advance(closed, sum { $0.totalClosed }, &l.closed)
            advance(bytesIn, sum { $0.bytesIn }, &l.bytesIn)
            advance(bytesOut, sum { $0.bytesOut }, &l.bytesOut)
            advance(wsFramesIn, sum { $0.webSocketFramesIn }, &l.wsFramesIn)
            advance(wsFramesOut, sum { $0.webSocketFramesOut }, &l.wsFramesOut)
            for (k, v) in limitTotals {
                let c = registry.makeCounter(name: "tcpserver_limit_hits_total", labels: [("limit", k)],
                                             help: "Times a limit was enforced")
                var prev = l.limits[k] ?? 0
                advance(c, v, &prev)
                l.limits[k] = prev
            }
            // Recovery and history: the same figures as /stats totals (gauges for the bytes).
            for (name, v) in StatsReport.historyTotals(shared, snaps) {
                let key = "\(name)"
                if key == "history_bytes" {
                    registry.makeGauge(name: "tcpserver_history_bytes", help: "Bytes of room history held (line bytes + 24 B per entry)").set(to: Double(v))
                    continue
                }
                let c = registry.makeCounter(name: "tcpserver_\(key)_total", help: "See /stats totals.\(key)")
                var prev = l.history[key] ?? 0
                advance(c, v, &prev)
                l.history[key] = prev
            }
            connections.set(to: Double(f.connections))
            wsConnections.set(to: Double(sum { $0.webSocketConnections }))
            memory.set(to: f.memoryMB * 1_048_576)
            latencyP50.set(to: f.latencyP50Ms / 1000)
            latencyP99.set(to: f.latencyP99Ms / 1000)
            overloaded.set(to: shared.monitor.overloaded.load(ordering: .relaxed) ? 1 : 0)
            uptime.set(to: Double((Clock.monoNanos() &- shared.startedAt) / 1_000_000) / 1000)
            rooms.set(to: Double(shared.rooms.roomCount))
            msgRate.set(to: Double(f.messagesPerSec))
            deliveryRate.set(to: Double(f.deliveriesPerSec))
            var out: [UInt8] = []
            registry.emit(into: &out)
            return out
        }
    }
}
