// `stats [--json]`: GET /stats over HTTP on the server's port, shown as a table.

enum Stats {
    static func run(_ o: Options) -> ExitCode {
        let socket: LineSocket
        do {
            socket = try LineSocket.connect(host: o.host, port: o.port)
        } catch {
            Terminal.error(error.message)
            return .connection
        }
        let host = o.host.contains(":") ? "[\(o.host)]" : o.host
        socket.send(raw: "GET /stats HTTP/1.1\r\nHost: \(host):\(o.port)\r\nConnection: close\r\n\r\n")
        guard let response = socket.readToEnd(timeoutMs: 10_000) else {
            Terminal.error("no complete answer to GET /stats from \(socket.address)")
            return .connection
        }
        let (status, body) = split(response)
        guard status.hasPrefix("HTTP/") else {
            Terminal.error("\(socket.address) did not answer GET /stats with HTTP (is it a tcpserver?)")
            return .connection
        }
        guard status.split(separator: " ").dropFirst().first == "200" else {
            let reason = status.split(separator: " ", maxSplits: 1).dropFirst().first.map(String.init) ?? status
            Terminal.error("GET /stats: \(Terminal.sanitize(reason))" + (body.isEmpty ? "" : " — " + Terminal.sanitize(body.trimmingSpaces)))
            return .serverError
        }
        if o.json {
            Terminal.line(body)
            return .ok
        }
        guard let stats = JSON.parse(body) else {
            Terminal.error("GET /stats: the body is not JSON")
            return .serverError
        }
        Terminal.out(table(stats))
        return .ok
    }

    /// (status line, body) of an HTTP/1.1 response.
    private static func split(_ response: String) -> (String, String) {
        let bytes = Array(response.utf8)
        let status = String(decoding: bytes.prefix(while: { $0 != 0x0D && $0 != 0x0A }), as: UTF8.self)
        var i = 0
        while i + 3 < bytes.count {
            if bytes[i] == 0x0D && bytes[i + 1] == 0x0A && bytes[i + 2] == 0x0D && bytes[i + 3] == 0x0A {
                return (status, String(decoding: bytes[(i + 4)...], as: UTF8.self))
            }
            i += 1
        }
        return (status, "")
    }

    /// Key/value rows (nested objects flattened to `a.b`, arrays of scalars joined by commas),
    /// then one table per array of objects (`reactors`, `flags`), one row per element.
    static func table(_ stats: JSON) -> String {
        var rows: [(String, String)] = []
        var tables: [(String, [JSON])] = []
        flatten(stats, prefix: "", into: &rows, tables: &tables)
        let width = rows.map { $0.0.count }.max() ?? 0
        var out = ""
        for (k, v) in rows { out += pad(k, width) + "  " + v + "\n" }
        for (name, items) in tables { out += "\n" + grid(name, items) }
        return out
    }

    private static func flatten(_ v: JSON, prefix: String, into rows: inout [(String, String)], tables: inout [(String, [JSON])]) {
        switch v {
        case .object(let pairs):
            if pairs.isEmpty && !prefix.isEmpty { rows.append((prefix, "-")) }
            for (k, child) in pairs {
                flatten(child, prefix: prefix.isEmpty ? k : prefix + "." + k, into: &rows, tables: &tables)
            }
        case .array(let items):
            if !items.isEmpty && items.allSatisfy({ if case .object = $0 { return true } else { return false } }) {
                tables.append((prefix, items))
            } else {
                rows.append((prefix, items.isEmpty ? "-" : items.map { Terminal.sanitize($0.text) }.joined(separator: ", ")))
            }
        default:
            rows.append((prefix, Terminal.sanitize(v.text)))
        }
    }

    /// `name` then a header row of the keys (in first-seen order) and one row per object;
    /// nested values flattened into `a.b` columns.
    private static func grid(_ name: String, _ items: [JSON]) -> String {
        var columns: [String] = []
        let cells: [[String: String]] = items.map { item in
            var rows: [(String, String)] = []
            var nested: [(String, [JSON])] = []
            flatten(item, prefix: "", into: &rows, tables: &nested)
            for (k, v) in nested { rows.append((k, "\(v.count) items")) }
            for (k, _) in rows where !columns.contains(k) { columns.append(k) }
            return Dictionary(rows, uniquingKeysWith: { a, _ in a })
        }
        let widths = columns.map { c in max(c.count, cells.map { ($0[c] ?? "").count }.max() ?? 0) }
        func row(_ values: [String]) -> String {
            "  " + zip(values, widths).map { pad($0, $1) }.joined(separator: "  ").trimmingTrailingSpaces + "\n"
        }
        var out = name + "\n" + row(columns)
        for c in cells { out += row(columns.map { c[$0] ?? "" }) }
        return out
    }

    private static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        guard let last = lastIndex(where: { $0 != " " }) else { return "" }
        return String(self[...last])
    }
}
