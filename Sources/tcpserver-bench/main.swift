import Glibc

// tcpserver-bench: drives a pub/sub server over real sockets and measures it.
//   fanout: N subscribers in one room, M publishers, payload S bytes. Either a closed window (at
//           most W messages not yet delivered to every subscriber: maximum throughput) or, with
//           --rate R, R messages/s paced on a fixed schedule. Every payload carries its publish
//           time (see Stamp); subscribers parse it, so every delivery is counted and timed:
//           publish→deliver p50/p99/p999 (with --rate, from the scheduled send time, so a
//           stall of the tool or the server is not hidden by coordinated omission).
//   ping:   C connections with K pings in flight each; round-trip percentiles.
//   voice:  UDP voice relay load (tcpserver-voice, or coturn over TURN): channels × speakers at a
//           frame rate or flooding; copies delivered per relay CPU-second, latency (Voice.swift).
//   hold:   opens N subscribed connections that then stay idle, and reads the server's RSS at 0
//           connections (before connecting) and after each step of --conns 500,10000.
// --wire tcpserver|redis|nats picks the protocol; --server-pid reads the server's CPU and RSS.
// Output: progress on stderr, one `RESULT key=value …` line on stdout (and a JSON object with
// --json). Exit 3 when deliveries are missing or a connection was closed by the server.
// Files: Options (arguments), Fanout / Ping / Hold (the three loads), Subscribers (opening
// subscribed connections), Frames (compressed mode), Report (output), Wire, Net.

let options = parseOptions()
signal(SIGPIPE, SIG_IGN)
raiseNoFileLimit()
switch options.mode {
case "fanout": runFanout(options)
case "ping": runPing(options)
case "hold": runHold(options)
case "voice": runVoice(options)
default: die("unknown mode \(options.mode) (fanout, ping, hold or voice)")
}
