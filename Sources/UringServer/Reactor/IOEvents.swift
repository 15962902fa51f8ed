import Glibc
import Primitives

// The reactor's side of the kernel seam: what the backend reports (accepts, receives, send
// completions, releases, wake-ups).

extension Reactor {
    func connectionAccepted(_ socket: AcceptedSocket) {
        counters.accepted += 1
        let fd = socket.fd, peer = socket.peerIPv4
        switch shared.admit(peerIP: peer) {
        case .admitted: break
        case .serverFull:
            limitHit("max_connections")
            rejectAtAccept(socket, "{\"type\":\"error\",\"code\":\"server_full\",\"message\":\"server is at max_connections\"}\n")
            return
        case .tooManyFromAddress:
            limitHit("max_connections_per_ip")
            rejectAtAccept(socket, "{\"type\":\"error\",\"code\":\"too_many_connections\",\"message\":\"too many connections from this address (max_connections_per_ip)\"}\n")
            return
        }
        let slot = freeSlots.popLast() ?? {
            connections.append(nil)
            return connections.count - 1
        }()
        let c = Connection(fd: fd, fixedIndex: socket.fixedIndex, slot: slot, peerIP: peer,
                           now: turnNanos == 0 ? Clock.monoNanos() : turnNanos, burst: config.rateLimitBurst)
        connections[slot] = c
        lastAcceptedSlot = slot
        liveConnections += 1
        backend.startReceiving(c)
    }

    func rejectAtAccept(_ socket: AcceptedSocket, _ msg: StaticString) {
        backend.refuse(socket, UnsafeRawBufferPointer(start: msg.utf8Start, count: msg.utf8CodeUnitCount))
        counters.closed += 1
    }

    package func connectionReceiveEnded(_ c: Connection, error: Int32) {
        // Peer closed or reset: flush what is queued (if the socket still takes it), then close.
        if error != 0 { c.dropQueuedOutput(pool: pool) }
        closeAfterFlush(c)
    }

    func connectionSendCompleted(_ c: Connection, error: Int32) {
        if error != 0 {
            // A peer that reset or went away is its own doing; any other send error is the
            // server's (the monitor's error_rate counts those).
            if error != EPIPE && error != ECONNRESET && error != ETIMEDOUT { counters.serverFailures &+= 1 }
            c.dropQueuedOutput(pool: pool)
            closeAfterFlush(c)
        } else {
            sendFinished(c)
        }
        if c.closing || c.hasQueuedOutput { markForFlush(c) }
    }


    func connectionReleased(_ c: Connection) {
        c.releaseOutput(pool: pool, blocksPool: blocksPool)
        connections[Int(c.slot)] = nil
        freeSlots.append(Int(c.slot))
        liveConnections -= 1
        counters.closed += 1
        if c.framing == .webSocket { counters.webSocketOpen -= 1 }
        shared.connectionClosed(peerIP: c.peerIP)
    }

    func wakeup() {
        if shared.draining.load(ordering: .acquiring) && !draining { beginDrain() }
        // Ring records first: anything in the overflow inbox is newer than them.
        for source in 0..<shared.reactors.count where source != index {
            shared.handoff[source][index]!.drain { room, origin, body in
                guard let local = room.locals[index] else { return }
                if body.isEmpty { return catchUp(local) }   // a poke: the room's log has new entries
                originNanos = origin
                renderGeneration &+= 1
                deliverLocal(local, body, excluding: nil)
            }
        }
        inbox.drain(into: &deliveries)
        for d in deliveries {
            guard let local = d.room.locals[index] else { continue }
            if d.message.body.readableCount == 0 { catchUp(local); continue }
            originNanos = d.message.originNanos
            renderGeneration &+= 1
            deliverLocal(local, d.message.body.readable, excluding: nil)
        }
        deliveries.removeAll(keepingCapacity: true)
        if shared.cluster != nil { answerClusterPublishes() }
    }

    /// Cluster mode: the acks (with the cluster-wide offset) or errors of chat lines this
    /// reactor's connections sent, as Redis answered them.
    private func answerClusterPublishes() {
        inbox.drainClusterReplies(into: &clusterReplies)
        guard !clusterReplies.items.isEmpty else { return }
        for r in clusterReplies.items {
            guard let c = connection(slot: Int(r.slot), generation: r.generation) else { continue }
            clusterReplies.ids.withUnsafeBytes { all in
                let id = UnsafeRawBufferPointer(rebasing: all[r.idStart..<(r.idStart + r.idCount)])
                if r.offset == 0 {
                    sendError(c, .clusterUnavailable, "the cluster could not take this message (Redis unavailable); it was not delivered",
                              id: r.idCount > 0 ? id : nil)
                }
                if r.idCount > 0 {
                    ackOffset = r.offset
                    ack(c, id)
                    ackOffset = 0
                }
            }
        }
        clusterReplies.removeAll()
    }
}
