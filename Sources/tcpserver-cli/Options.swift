import Glibc

// The command line: global options, the subcommand and its own options, and the usage text.

enum Command: String {
    case interactive, pub, sub, stats, ping
}

struct Options {
    var host = "127.0.0.1"
    var port = 4000
    var user = "cli-\(getpid())"
    var token: String?
    var command = Command.interactive
    /// Positional arguments after the subcommand.
    var args: [String] = []
    var count: Int?
    var json = false
    var intervalMs = 500
    /// Interactive: join this room at start.
    var room: String?

    static let usage = """
    usage: tcpserver-cli [options]                  interactive session (stdin: a terminal or a pipe)
           tcpserver-cli [options] pub ROOM TEXT…   send TEXT to ROOM, exit after the server's ack
           tcpserver-cli [options] sub ROOM… [--count N] [--json]
                                                    print ROOM's messages (until N chat messages, or ^C)
           tcpserver-cli [options] stats [--json]   GET /stats as a table
           tcpserver-cli [options] ping [--count N] [--interval MS]
                                                    round-trip times of ping/pong (default 4 pings, 500 ms apart)

    options:
      --host H       server address (default 127.0.0.1)
      --port P       server port (default 4000)
      --user U       user name for hello (default cli-<pid>)
      --token T      auth token, when the server has auth_token set
      --room R       interactive: join R at start
      -h, --help     this text

    interactive commands:
      /join ROOM     join ROOM and make it the current room
      /leave [ROOM]  leave ROOM (default: the current room)
      /room ROOM     switch the current room (one already joined)
      /rooms         rooms joined, with member counts
      /msg ROOM TEXT send TEXT to ROOM without switching
      /ping          round-trip time to the server
      /raw JSON      send one raw protocol line
      /quit          wait for the server's acks, then exit (so does end of input)
      anything else  sent to the current room ("//x" sends "/x")

    exit codes: 0 ok, 1 the server answered with an error, 2 connection failure, 64 usage error

    """

    enum Parsed {
        case run(Options)
        case help
        case usage(String)
    }

    static func parse(_ argv: [String]) -> Parsed {
        var o = Options()
        var positional: [String] = []
        var seen: Set<String> = []
        var i = 0
        var optionsEnded = false
        while i < argv.count {
            var arg = argv[i]
            i += 1
            if optionsEnded || !arg.hasPrefix("-") || arg == "-" {
                positional.append(arg)
                continue
            }
            if arg == "--" { optionsEnded = true; continue }
            if arg == "-h" || arg == "--help" { return .help }
            // --name=value or --name value
            var inline: String?
            if let eq = arg.firstIndex(of: "=") {
                inline = String(arg[arg.index(after: eq)...])
                arg = String(arg[..<eq])
            }
            let flagOnly = arg == "--json"
            if flagOnly {
                if inline != nil { return .usage("\(arg) takes no value") }
                o.json = true
                seen.insert(arg)
                continue
            }
            let valued: Set<String> = ["--host", "--port", "--user", "--token", "--room", "--count", "--interval"]
            guard valued.contains(arg) else { return .usage("unknown option \(arg)") }
            let value: String
            if let inline {
                value = inline
            } else {
                guard i < argv.count else { return .usage("\(arg) needs a value") }
                value = argv[i]
                i += 1
            }
            seen.insert(arg)
            switch arg {
            case "--host":
                guard !value.isEmpty else { return .usage("--host needs a value") }
                o.host = value
            case "--port":
                guard let p = Int(value), (1...65535).contains(p) else { return .usage("--port must be 1…65535, got '\(value)'") }
                o.port = p
            case "--user": o.user = value
            case "--token": o.token = value
            case "--room": o.room = value
            case "--count":
                guard let n = Int(value), n > 0 else { return .usage("--count must be a positive integer, got '\(value)'") }
                o.count = n
            case "--interval":
                guard let n = Int(value), n >= 0 else { return .usage("--interval must be milliseconds ≥ 0, got '\(value)'") }
                o.intervalMs = n
            default:
                return .usage("unknown option \(arg)")
            }
        }
        if let first = positional.first {
            if first == "help" { return .help }
            guard let c = Command(rawValue: first), c != .interactive else {
                return .usage("unknown command '\(first)' (commands: pub, sub, stats, ping)")
            }
            o.command = c
            o.args = Array(positional.dropFirst())
        }
        if let problem = o.check(seen) { return .usage(problem) }
        return .run(o)
    }

    /// Arguments and options that do not fit the subcommand.
    private func check(_ seen: Set<String>) -> String? {
        let allowed: [Command: Set<String>] = [
            .interactive: ["--room"], .pub: [], .sub: ["--count", "--json"],
            .stats: ["--json"], .ping: ["--count", "--interval"],
        ]
        let global: Set<String> = ["--host", "--port", "--user", "--token"]
        let name = command == .interactive ? "the interactive session" : command.rawValue
        for opt in seen.sorted() where !global.contains(opt) && !allowed[command]!.contains(opt) {
            return "\(opt) does not apply to \(name)"
        }
        switch command {
        case .interactive:
            if !args.isEmpty { return "unexpected argument '\(args[0])'" }
        case .pub:
            if args.count < 2 { return "pub needs a room and a text: pub ROOM TEXT…" }
        case .sub:
            if args.isEmpty { return "sub needs a room: sub ROOM… [--count N] [--json]" }
        case .stats, .ping:
            if !args.isEmpty { return "\(command.rawValue) takes no arguments, got '\(args[0])'" }
        }
        return nil
    }
}
