// HTTP on the chat port: requests and responses, admin routes, /stats and /metrics readers.

import Foundation
import Testing

struct HTTPResponse {
    var statusLine: String
    var headers: [String: String]
    var body: String
}

/// Sends `request`, reads the status line, headers and (by Content-Length, or to EOF) the body.
func httpRequest(port: Int, _ request: String, head: Bool = false) throws -> HTTPResponse {
    let c = try TestClient(port: port)
    try c.send(request)
    let status = try c.readLine()
    var headers: [String: String] = [:]
    while true {
        let l = try c.readLine()
        if l.isEmpty { break }
        if let colon = l.firstIndex(of: ":") {
            headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    var body: [UInt8] = []
    if head {
        // no body; make sure nothing else follows before the server closes or idles
        if let more = try? c.readExactly(1, timeout: 0.2) { body = more }
    } else if let len = headers["content-length"].flatMap({ Int($0) }) {
        body = try c.readExactly(len)
    } else {
        while let b = try? c.readExactly(1) { body += b }
    }
    return HTTPResponse(statusLine: status, headers: headers, body: String(decoding: body, as: UTF8.self))
}

/// `httpRequest` through a given local address (the one above always uses 127.0.0.1).
func httpRequest(port: Int, via host: String, _ request: String) throws -> HTTPResponse {
    let c = try TestClient(port: port, host: host)
    try c.send(request)
    let status = try c.readLine()
    var headers: [String: String] = [:]
    while true {
        let l = try c.readLine()
        if l.isEmpty { break }
        if let colon = l.firstIndex(of: ":") {
            headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    let len = headers["content-length"].flatMap { Int($0) } ?? 0
    let body = try c.readExactly(len)
    return HTTPResponse(statusLine: status, headers: headers, body: String(decoding: body, as: UTF8.self))
}

func httpGet(_ port: Int, _ path: String, host: String = "127.0.0.1") throws -> HTTPResponse {
    try httpRequest(port: port, "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n")
}

/// POST to an admin route with an optional bearer token.
func adminRequest(_ port: Int, _ pathAndQuery: String, token: String?, method: String = "POST") throws -> HTTPResponse {
    var req = "\(method) \(pathAndQuery) HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
    if let token { req += "Authorization: Bearer \(token)\r\n" }
    req += "Connection: close\r\n\r\n"
    return try httpRequest(port: port, req)
}

// MARK: /stats

/// GET /stats, parsed. Fails the test (throws) unless the answer is 200 with a JSON object.
func fetchStats(_ port: Int, sourceLocation: SourceLocation = #_sourceLocation) throws -> JSONObject {
    let r = try httpGet(port, "/stats")
    try #require(r.statusLine.hasPrefix("HTTP/1.1 200"), "GET /stats: \(r.statusLine) \(r.body)",
                 sourceLocation: sourceLocation)
    #expect(r.headers["content-type"] == "application/json", "content-type: \(r.headers)", sourceLocation: sourceLocation)
    return try J.parse(Array(r.body.utf8))
}

func jsonDouble(_ v: Any?) -> Double? { (v as? NSNumber)?.doubleValue }
func jsonInt(_ v: Any?) -> Int? { (v as? NSNumber)?.intValue }

/// `limits.<name>` from /stats (0 when the limit was never hit).
func statsLimit(_ stats: JSONObject, _ name: String) -> Int {
    jsonInt((stats["limits"] as? JSONObject)?[name]) ?? 0
}

func statsTotal(_ stats: JSONObject, _ name: String) -> Int {
    jsonInt((stats["totals"] as? JSONObject)?[name]) ?? -1
}

/// The flag object named `name` in /stats `flags`.
func statsFlag(_ stats: JSONObject, _ name: String) -> JSONObject? {
    (stats["flags"] as? [JSONObject])?.first { $0["name"] as? String == name }
}

// MARK: /metrics

/// Sample lines of a Prometheus text exposition: `name{labels} value` → value, keyed by
/// `name` or `name{labels}` exactly as written.
func parseMetrics(_ text: String) -> [String: Double] {
    var out: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let sp = line.lastIndex(of: " "), let v = Double(line[line.index(after: sp)...]) else { continue }
        out[String(line[..<sp])] = v
    }
    return out
}
