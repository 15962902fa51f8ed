import Glibc
import VoiceRelay

// tcpserver-voice: the UDP voice relay beside tcpserver (docs/deployment.md, "Voice").
/// Unbuffered writes (stdio's FILE globals are not concurrency-safe in Swift 6).
func say(_ fd: Int32, _ s: String) { (s + "\n").withCString { _ = write(fd, $0, strlen($0)) } }

let env = getenv("VOICE_SECRET").map { String(cString: $0) }
let config: RelayConfig
do {
    config = try RelayConfig.parse(Array(CommandLine.arguments.dropFirst()), environment: env)
} catch {
    say(2, "\(error)")
    exit(error.description.hasPrefix("usage:") ? 0 : 2)
}

// SIGTERM / SIGINT are taken by sigwait below: blocked before the threads start, so they
// inherit the mask and the signal reaches this thread.
var set = sigset_t()
sigemptyset(&set)
sigaddset(&set, SIGTERM)
sigaddset(&set, SIGINT)
pthread_sigmask(SIG_BLOCK, &set, nil)

let relay = VoiceRelay(config: config)
do {
    try relay.start()
} catch {
    say(2, "tcpserver-voice: \(error)")
    exit(1)
}
var line = "msg=\"voice relay started\" address=\(config.host):\(relay.port) io=\(relay.ioMode) threads=\(relay.threadCount)"
if relay.statsPort > 0 { line += " stats=127.0.0.1:\(relay.statsPort)" }
if let why = relay.fallbackReason { line += " fallback=\"\(why)\"" }
say(1, line)

var sig: Int32 = 0
sigwait(&set, &sig)
relay.stop()
say(1, "msg=\"voice relay stopped\"")
