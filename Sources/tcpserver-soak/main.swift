import Glibc

// tcpserver-soak: many clients against a running tcpserver for N seconds, then checks.
//
//   members   stay connected the whole run; join and leave rooms, send small and large (up to
//             ~30 KB) chat messages with an id (acked), now and then a malformed line
//   churners  hello, join, send a few messages, then vanish: clean close, RST (SO_LINGER 0),
//             or shutdown(SHUT_WR) and close, at random points (before or after their acks)
//   half-open connect and never send (the server's hello timeout must close them)
//   garbage   junk first bytes, junk JSON lines, absurd binary frame headers, partial lines
//   probe     its own thread and connection: a ping every 100 ms, round trips recorded
//
// Every chat text is "m<sender>.<seq>.<padding>", seq counting per sender. At the end:
//   - every message a surviving member should have got arrived exactly once, in order per
//     sender: a message is owed to member R when it was sent after R saw "joined" and acked
//     before R sent leave_room (so the server surely handled it while R was in the room);
//   - nothing arrived that the server handled surely outside R's membership, or twice, or out
//     of order, or to its own sender;
//   - members got no errors but the bad_json they provoked, and were never disconnected;
//   - the server's fd count (/proc/PID/fd) is back to its baseline, RSS near it;
//   - probe round trips: max <= --max-ping-ms.
// Prints one summary line; exit 1 on any violation, 2 on a usage or set-up error.
// Files: Options, Client (kinds and records), Soak (state, connections), Requests, Receiving,
// Behaviour, Run (loop, wind-down, summary), Verify (the delivery check), Support (helpers).

signal(SIGPIPE, SIG_IGN)
let options = parseOptions()
let soak = Soak(options)
exit(soak.run())
