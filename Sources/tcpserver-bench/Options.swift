import Glibc

// Command-line options of tcpserver-bench and their parsing.

struct Options {
    var mode = "fanout"
    var wire = Wire.tcpserver
    var host = "127.0.0.1"
    var port = 4000
    /// Cluster fan-out: subscribers spread round-robin over these ports (publishers use `port`).
    var subscriberPorts: [Int] = []
    var subs = 50
    var pubs = 1
    var size = 64
    var duration = 5.0
    var window = 256
    var batch = 32
    var rate = 0.0
    var conns = 100
    var connSteps: [Int] = [100]
    var inflight = 8
    var serverPid: Int32 = 0
    var room = "bench"
    var settle = 1.0
    var drain = 3.0
    var quiet = false
    var json = false
    /// tcpserver only: subscribers ask for this codec ("lz4", "zstd") and get binary frames.
    var compress: String? = nil
    /// Payload filler: "x" (repeated 'x') or "text" (English-like words, compressible).
    var payload = "x"
    // voice mode
    /// "voice" (tcpserver-voice) or "turn" (coturn).
    var voiceWire = "voice"
    var channels = 10
    var speakers = 4
    var secret = ""
    var flood = false
    /// Subscribers and publishers use WebSocket (`WebSocketWire`; tcpserver or nats).
    var ws = false
}

let usage = """
usage: tcpserver-bench [fanout|ping|hold|voice] --wire tcpserver|redis|nats --port N [options]
  fanout: --subs N --pubs M --size S [--window W --batch B | --rate MSGS_PER_SEC] [--drain SEC]
          [--sub-ports P1,P2,…]  (cluster: subscribers spread over several nodes)
          [--payload x|text]  (filler: 'x' repeated, or English-like words)
          [--compress lz4|zstd]  (tcpserver: subscribers receive compressed binary frames)
          [--ws]  (subscribers and publishers over WebSocket: tcpserver /ws, or nats with --port its websocket listener)
  ping:   --conns C --inflight K
  hold:   --conns N[,N2,…] [--settle SEC]   (needs --server-pid)
  voice:  --wire voice|turn --port UDP_PORT --secret S --channels N --speakers M [--rate FRAMES_PER_SEC
          (per speaker, default 50) | --flood] --size BYTES (default 160)
  common: --host H --duration SEC --server-pid PID --room NAME --quiet --json
"""

func parseOptions() -> Options {
    var o = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    if let m = args.first, !m.hasPrefix("--") { o.mode = m; args.removeFirst() }
    var i = 0
    var sizeSet = false
    func value() -> String {
        i += 1
        guard i < args.count else { die("\(args[i - 1]) needs a value") }
        return args[i]
    }
    func int(_ s: String) -> Int { guard let v = Int(s) else { die("not a number: \(s)") }; return v }
    func double(_ s: String) -> Double { guard let v = Double(s) else { die("not a number: \(s)") }; return v }
    while i < args.count {
        switch args[i] {
        case "--wire":
            let v = value()
            if v == "voice" || v == "turn" { o.voiceWire = v; break }
            guard let w = Wire(rawValue: v) else { die("--wire: tcpserver, redis, nats (voice mode: voice or turn)") }
            o.wire = w
        case "--channels": o.channels = max(1, int(value()))
        case "--speakers": o.speakers = max(2, int(value()))
        case "--secret": o.secret = value()
        case "--flood": o.flood = true
        case "--host": o.host = value()
        case "--port": o.port = int(value())
        case "--sub-ports": o.subscriberPorts = value().split(separator: ",").map { int(String($0)) }
        case "--subs": o.subs = int(value())
        case "--pubs": o.pubs = max(1, int(value()))
        case "--size": o.size = int(value()); sizeSet = true
        case "--duration": o.duration = double(value())
        case "--window": o.window = int(value())
        case "--batch": o.batch = max(1, int(value()))
        case "--rate": o.rate = double(value())
        case "--conns":
            o.connSteps = value().split(separator: ",").map { int(String($0)) }
            guard let first = o.connSteps.first else { die("--conns needs a number") }
            o.conns = first
        case "--inflight": o.inflight = int(value())
        case "--server-pid": o.serverPid = Int32(int(value()))
        case "--room": o.room = value()
        case "--settle": o.settle = double(value())
        case "--drain": o.drain = double(value())
        case "--quiet": o.quiet = true
        case "--json": o.json = true
        case "--compress":
            let c = value().lowercased()
            guard c == "lz4" || c == "zstd" else { die("--compress: lz4 or zstd") }
            o.compress = c
        case "--ws": o.ws = true
        case "--payload":
            o.payload = value()
            guard o.payload == "x" || o.payload == "text" else { die("--payload: x or text") }
        case "--help", "-h": print(usage); exit(0)
        default: die("unknown option \(args[i])")
        }
        i += 1
    }
    if o.compress != nil && o.wire != .tcpserver { die("--compress needs --wire tcpserver") }
    if o.mode == "voice" && !sizeSet { o.size = 160 }   // 20 ms of 64 kbit/s audio
    if o.ws && (o.wire == .redis || o.compress != nil) { die("--ws needs --wire tcpserver or nats (its websocket port) and no --compress") }
    return o
}
