import Primitives

/// The HTTP routes on the server's own port (HTTP is told apart from the chat protocol by its
/// first line, `RequestLine`). One request per connection; the response closes it; a head not
/// complete within `http_header_timeout_ms` gets 408 (`Reactor.checkTimeouts`).
///
/// /health, /stats, /metrics, /dashboard, /chat, the WebSocket upgrade on /ws
/// (`WebSocketUpgrade`), and the admin routes. Stats and metrics answer only
/// loopback clients unless `stats_public`; admin routes need `Authorization: Bearer <admin_token>`
/// and answer 403 while no token is configured.
///
/// Methods: a method outside `RequestLine.knownMethods` (case-sensitive: `get` is not GET)
/// gets 501; a known one a route does not serve gets 405 with `Allow` (RFC 9110 §15.5.6 makes
/// the header mandatory), as do CONNECT's authority-form and OPTIONS' `*`, which name no route.
enum HTTPRouter {
    enum Outcome {
        /// The head is not complete yet.
        case incomplete
        /// `out` holds the whole response; the connection closes after it.
        case response
        /// `out` holds `101 Switching Protocols` (GET /ws): the connection speaks WebSocket
        /// from here on; the request's bytes after `headLength` are already frames.
        case upgrade(headLength: Int)
    }

    /// Answers the request in `bytes` into `out`.
    static func route(_ bytes: UnsafeRawBufferPointer, from c: Connection, shared: ServerShared, into out: inout ByteBuffer) -> Outcome {
        switch HTTPRequest.parse(bytes) {
        case .incomplete:
            return .incomplete
        case let .error(status, reason, message):
            respond(&out, status, reason, "text/plain; charset=utf-8", message + "\n")
        case .request(let req):
            if req.path == "/ws" {
                return WebSocketUpgrade.respond(req, shared, &out) ? .upgrade(headLength: req.headLength) : .response
            }
            handle(req, c, shared, &out)
        }
        return .response
    }

    /// `408 Request Timeout`, for a request whose head did not arrive within
    /// `http_header_timeout_ms` (the connection is closed after it).
    static func requestTimeout() -> ByteBuffer {
        var out = ByteBuffer()
        respond(&out, 408, "Request Timeout", "text/plain; charset=utf-8", "request header not received in time\n")
        return out
    }

    private static func handle(_ req: HTTPRequest, _ c: Connection, _ shared: ServerShared, _ out: inout ByteBuffer) {
        let head = req.method == "HEAD"
        let isGet = req.method == "GET" || head
        func text(_ status: Int, _ reason: StaticString, _ body: String) {
            respond(&out, status, reason, "text/plain; charset=utf-8", body, headOnly: head)
        }
        func notAllowed(_ allow: StaticString) {
            respond(&out, 405, "Method Not Allowed", "text/plain; charset=utf-8", "use \(allow)\n",
                    headOnly: head, allow: allow)
        }
        guard RequestLine.knownMethods.contains(req.method) else {
            return text(501, "Not Implemented", "method not implemented: \(req.method)\n")
        }
        guard req.path.hasPrefix("/") else { return notAllowed("GET, HEAD, POST") }
        switch req.path {
        case "/health":
            guard isGet else { return notAllowed("GET, HEAD") }
            if shared.draining.load(ordering: .relaxed) {
                text(503, "Service Unavailable", "draining\n")
            } else {
                text(200, "OK", "ok")
            }
        case "/stats", "/metrics":
            guard isGet else { return notAllowed("GET, HEAD") }
            guard c.isLoopback || shared.config.statsPublic else {
                return text(403, "Forbidden", "stats are served to loopback clients only (set stats_public=true)\n")
            }
            if req.path == "/stats" {
                var body = ByteBuffer()
                StatsReport.render(shared, into: &body)
                respond(&out, 200, "OK", "application/json", body.readable, headOnly: head)
            } else {
                let body = shared.metrics.render(shared)
                body.withUnsafeBytes {
                    respond(&out, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", $0, headOnly: head)
                }
            }
        case "/dashboard", "/":
            guard isGet else { return notAllowed("GET, HEAD") }
            respond(&out, 200, "OK", "text/html; charset=utf-8", DashboardPage.html, headOnly: head)
        case "/chat":
            guard isGet else { return notAllowed("GET, HEAD") }
            respond(&out, 200, "OK", "text/html; charset=utf-8", ChatPage.html, headOnly: head)
        default:
            if req.path.hasPrefix("/admin/") {
                admin(req, shared, &out)
            } else {
                text(404, "Not Found", "not found: \(req.path)\n")
            }
        }
    }

    /// POST /admin/features/<name>[?enabled=true|false] (toggles without the parameter) and
    /// POST /admin/rollout/<name>?percent=N.
    private static func admin(_ req: HTTPRequest, _ shared: ServerShared, _ out: inout ByteBuffer) {
        let head = req.method == "HEAD"   // a HEAD answer never carries a body, errors included
        func text(_ status: Int, _ reason: StaticString, _ body: String) {
            respond(&out, status, reason, "text/plain; charset=utf-8", body, headOnly: head)
        }
        let token = shared.config.adminToken
        guard !token.isEmpty else { return text(403, "Forbidden", "admin routes are disabled (no admin_token configured)\n") }
        guard let auth = req.authorization, auth.hasPrefix("Bearer "),
              constantTimeEquals(String(auth.dropFirst(7)), token) else {
            return text(401, "Unauthorized", "missing or wrong bearer token\n")
        }
        guard req.method == "POST" else {
            return respond(&out, 405, "Method Not Allowed", "text/plain; charset=utf-8", "use POST\n",
                           headOnly: head, allow: "POST")
        }
        let parts = req.path.split(separator: "/")   // ["admin", kind, name]
        guard parts.count == 3 else { return text(404, "Not Found", "not found: \(req.path)\n") }
        guard let flag = shared.flags[String(parts[2])] else {
            return text(404, "Not Found", "no feature flag named '\(parts[2])'\n")
        }
        let param = { (k: String) in req.query.first(where: { $0.0 == k })?.1 }
        switch parts[1] {
        case "features":
            if let v = param("enabled") {
                guard v == "true" || v == "false" else { return text(400, "Bad Request", "enabled must be true or false\n") }
                flag.setEnabled(v == "true")
            } else {
                flag.setEnabled(!flag.enabledByOperator.load(ordering: .relaxed))
            }
        case "rollout":
            guard let v = param("percent"), let p = Int(v), (0...100).contains(p) else {
                return text(400, "Bad Request", "percent must be an integer 0…100\n")
            }
            flag.setPercent(p)
        default:
            return text(404, "Not Found", "not found: \(req.path)\n")
        }
        var body = ByteBuffer()
        StatsReport.renderFlag(flag, into: &body)
        respond(&out, 200, "OK", "application/json", body.readable)
    }

    /// `extra`: one more header line (e.g. a 426's `Sec-WebSocket-Version: 13`).
    static func respond(_ out: inout ByteBuffer, _ status: Int, _ reason: StaticString, _ type: StaticString,
                        _ body: String, headOnly: Bool = false, allow: StaticString? = nil, extra: StaticString? = nil) {
        var body = body
        body.withUTF8 { respond(&out, status, reason, type, UnsafeRawBufferPointer($0), headOnly: headOnly, allow: allow, extra: extra) }
    }

    static func respond(_ out: inout ByteBuffer, _ status: Int, _ reason: StaticString, _ type: StaticString,
                        _ body: UnsafeRawBufferPointer, headOnly: Bool = false, allow: StaticString? = nil,
                        extra: StaticString? = nil) {
        out.append("HTTP/1.1 ")
        out.appendDecimal(status)
        out.append(" ")
        out.append(reason)
        if let allow {
            out.append("\r\nAllow: ")
            out.append(allow)
        }
        if let extra {
            out.append("\r\n")
            out.append(extra)
        }
        out.append("\r\nContent-Type: ")
        out.append(type)
        out.append("\r\nContent-Length: ")
        out.appendDecimal(body.count)
        out.append("\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
        if !headOnly { out.append(body) }
    }
}

/// Compares secrets without an early exit, so timing does not reveal how much matched.
func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(truncatingIfNeeded: x.count ^ y.count)
    for i in 0..<max(x.count, y.count) {
        diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return diff == 0
}
