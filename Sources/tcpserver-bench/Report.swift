import Glibc
import Histogram
import LoadClient

// Output: progress on stderr, the RESULT line (and JSON), latency and server-CPU fields.

func progress(_ o: Options, _ text: String) {
    if o.quiet { return }
    let s = "\r\(text)   "
    s.withCString { _ = write(2, $0, strlen($0)) }
}

func endProgress(_ o: Options) {
    if o.quiet { return }
    "\r\u{1B}[K".withCString { _ = write(2, $0, strlen($0)) }
}

func fmt(_ v: Double, _ digits: Int = 2) -> String {
    var m = 1.0
    for _ in 0..<digits { m *= 10 }
    let r = (v * m).rounded() / m
    if digits == 0 { return String(Int(r)) }
    return String(r)
}

/// Latencies in nanoseconds, 1 ns to 10 min, 3 significant digits.
func newHistogram() -> Histogram<UInt64> {
    var h = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000_000, numberOfSignificantValueDigits: .three)
    h.autoResize = true
    return h
}

func latencyFields(_ h: Histogram<UInt64>) -> [(String, String)] {
    func us(_ p: Double) -> String { fmt(Double(h.valueAtPercentile(p)) / 1000.0, 1) }
    return [
        ("p50_us", us(50)), ("p99_us", us(99)), ("p999_us", us(99.9)),
        ("max_us", fmt(Double(h.max) / 1000.0, 1)), ("latency_samples", "\(h.totalCount)"),
    ]
}

func jsonValue(_ v: String) -> String {
    if Double(v) != nil, !v.hasPrefix("+"), v.lowercased() != "nan", v.lowercased() != "inf" { return v }
    var s = "\""
    for c in v.unicodeScalars {
        switch c {
        case "\"": s += "\\\""
        case "\\": s += "\\\\"
        default: s.unicodeScalars.append(c)
        }
    }
    return s + "\""
}

func report(_ o: Options, _ fields: [(String, String)]) {
    print("RESULT " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
    if o.json {
        print("{" + fields.map { "\"\($0.0)\":\(jsonValue($0.1))" }.joined(separator: ",") + "}")
    }
}

func cpuFields(_ before: ProcSample?, _ after: ProcSample?, work: Int, name: String) -> [(String, String)] {
    guard let b = before, let a = after else { return [] }
    let cpu = a.cpuSeconds - b.cpuSeconds
    let user = a.userSeconds - b.userSeconds
    guard cpu > 0 else { return [("server_cpu_s", "0")] }
    return [
        ("server_cpu_s", fmt(cpu, 3)),
        ("\(name)_per_cpu_s", fmt(Double(work) / cpu, 0)),
        ("user_share", fmt(user / cpu, 3)),
    ]
}
