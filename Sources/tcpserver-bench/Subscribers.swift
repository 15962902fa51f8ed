import Glibc
import LoadClient

// Opening subscribed connections in batches (the fanout and hold loads).

/// Opens `count` connections that subscribe to the room, `batch` at a time (so the listen
/// backlog never overflows), each confirmed before the next batch. Confirmed sockets are made
/// non-blocking and added to `ep`; `drainAll` runs between batches so earlier connections never
/// leave unread bytes piling up in the server (presence notices, for instance).
/// With `o.compress`, the set-up reads the (binary-framed) replies exactly and hands each
/// subscriber's bytes past its join reply to `leftover`.
func openSubscribers(_ o: Options, count: Int, firstIndex: Int, ep: Int32, batch: Int = 200,
                     drainAll: () -> Void = {}, leftover: (Int32, [UInt8]) -> Void = { _, _ in }) -> [Int32] {
    var out: [Int32] = []
    out.reserveCapacity(count)
    while out.count < count {
        let n = min(batch, count - out.count)
        var fresh: [Int32] = []
        for k in 0..<n {
            let i = firstIndex + out.count + k
            let port = o.subscriberPorts.isEmpty ? o.port : o.subscriberPorts[i % o.subscriberPorts.count]
            let fd = connectTCP(o.host, port)
            let hello = o.wire.subscribe(user: "sub\(firstIndex + out.count + k)", room: o.room, compress: o.compress)
            WebSocketWire.writeSetup(o, fd: fd, port: port, hello)
            fresh.append(fd)
        }
        for fd in fresh {
            if let codec = o.compress {
                leftover(fd, awaitJoinedBinary(fd, codec: codec))
            } else {
                awaitMarker(fd, o.wire.subscribedMarker)
            }
            setNonBlocking(fd)
            addToEpoll(ep, fd)
        }
        out += fresh
        drainAll()
        if count > batch {
            progress(o, "[\(o.wire.rawValue)] connected \(firstIndex + out.count)")
        }
    }
    return out
}
