// tcpserver-cli: a command-line client for tcpserver, like redis-cli or `nats pub/sub`.
// Foundation-free (Glibc sockets and poll), like the server. `tcpserver-cli --help`.

import Glibc

Signals.installInterruptHandler()

let code: ExitCode
switch Options.parse(Array(CommandLine.arguments.dropFirst())) {
case .help:
    Terminal.out(Options.usage)
    code = .ok
case .usage(let problem):
    Terminal.error(problem)
    Terminal.err("run 'tcpserver-cli --help' for usage\n")
    code = .usage
case .run(let o):
    switch o.command {
    case .interactive: code = Interactive.run(o)
    case .pub: code = PubSub.pub(o)
    case .sub: code = PubSub.sub(o)
    case .stats: code = Stats.run(o)
    case .ping: code = Ping.run(o)
    }
}
exit(code.rawValue)
