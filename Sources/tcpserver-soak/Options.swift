import Glibc
import LoadClient

// Command-line options of tcpserver-soak and their parsing.

struct Options {
    var host = "127.0.0.1"
    var port = 0
    var seconds = 30
    var serverPid: Int32 = 0
    var seed: UInt64 = 0
    var members = 24
    var rooms = 4
    var churnPerSec = 20
    var garbagePerSec = 5
    var halfOpenPerSec = 2
    var maxPingMs = 200
    var rssSlackMB = 32
    var fdSlack = 0
    var label = ""
}

func parseOptions() -> Options {
    var o = Options()
    o.seed = monoNanos()
    let args = Array(CommandLine.arguments.dropFirst())
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { die("\(args[i - 1]) needs a value") }
        return args[i]
    }
    func int(_ s: String) -> Int { guard let v = Int(s) else { die("not a number: \(s)") }; return v }
    while i < args.count {
        switch args[i] {
        case "--host": o.host = value()
        case "--port": o.port = int(value())
        case "--seconds": o.seconds = int(value())
        case "--server-pid": o.serverPid = Int32(int(value()))
        case "--seed": o.seed = UInt64(int(value()))
        case "--members": o.members = int(value())
        case "--rooms": o.rooms = int(value())
        case "--churn": o.churnPerSec = int(value())
        case "--garbage": o.garbagePerSec = int(value())
        case "--half-open": o.halfOpenPerSec = int(value())
        case "--max-ping-ms": o.maxPingMs = int(value())
        case "--rss-slack-mb": o.rssSlackMB = int(value())
        case "--fd-slack": o.fdSlack = int(value())
        case "--label": o.label = value()
        case "--help", "-h":
            say("usage: tcpserver-soak --port P --seconds N [--server-pid PID] [--host H] [--seed S] [--members N] [--rooms N] [--churn N/s] [--garbage N/s] [--half-open N/s] [--max-ping-ms MS] [--rss-slack-mb MB] [--fd-slack N] [--label TEXT]")
            exit(0)
        default: die("unknown option \(args[i]) (see --help)")
        }
        i += 1
    }
    if o.port <= 0 { die("--port is required") }
    if o.rooms < 1 || o.rooms > 200 { die("--rooms: 1…200") }
    return o
}
