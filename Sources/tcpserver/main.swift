import Glibc
import UringServer

// Thin entry point: configuration → server → wait for a signal.
// Config parsing is ours rather than swift-argument-parser's: the same key table serves .env,
// the environment and flags, and the binary stays free of Foundation (see docs/architecture.md).

func readFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

func environment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") {
            env[String(s[..<eq])] = String(s[s.index(after: eq)...])
        }
        p += 1
    }
    return env
}

func fail(_ message: String, code: Int32) -> Never {
    let line = "tcpserver: \(message)\n"
    line.withCString { _ = write(2, $0, strlen($0)) }
    exit(code)
}

let outcome: ConfigLoader.Outcome
do {
    outcome = try ConfigLoader.load(arguments: Array(CommandLine.arguments.dropFirst()),
                                    environment: environment(), readFile: readFile)
} catch {
    fail("\(error.description)\n(see tcpserver --help)", code: 2)
}

let config: ServerConfig
switch outcome {
case .help(let text):
    print(text, terminator: "")
    exit(0)
case .version:
    print("tcpserver \(Server.version)")
    exit(0)
case .run(let c):
    config = c
}

// Block the stop signals before any thread starts, then wait for one here.
var signals = sigset_t()
sigemptyset(&signals)
sigaddset(&signals, SIGINT)
sigaddset(&signals, SIGTERM)
pthread_sigmask(SIG_BLOCK, &signals, nil)

let server = Server(config: config)
do {
    try server.start()
} catch {
    fail(error.description, code: 1)
}

var received: Int32 = 0
sigwait(&signals, &received)
let name = received == SIGINT ? "SIGINT" : "SIGTERM"
server.logger.info("draining", ["signal": name, "drain_timeout_ms": String(config.drainTimeoutMs)])
// A second signal while draining exits at once.
_ = spawnWatcher()
server.drainAndStop()
server.logger.info("stopped")
server.closeLog()
exit(0)

func spawnWatcher() -> pthread_t {
    var tid = pthread_t()
    pthread_create(&tid, nil, { _ in
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        var sig: Int32 = 0
        sigwait(&set, &sig)
        let msg = "tcpserver: second signal, exiting now\n"
        _ = msg.withCString { write(2, $0, strlen($0)) }
        _exit(0)
    }, nil)
    return tid
}
