import Primitives

// Membership: the reactor's side of joining and leaving rooms — the directory's counts, this
// reactor's local member lists (a batch in progress is delivered first, so members get exactly
// the messages sent while they were members), and the cluster hook (ClusterNode learns every
// change in this node's counts; plugins never call the link).

extension Reactor {
    public func enterRoom(_ name: String, limit: Int) -> (room: SharedRoom, members: Int)? {
        guard let (room, count) = shared.rooms.join(name, reactor: index, limit: limit) else { return nil }
        shared.cluster?.localMembersChanged(room: name, count: count, joined: true)
        return (room, count)
    }

    public func admit(_ c: Connection, to room: SharedRoom) -> LocalRoom {
        let local = room.local(for: index)
        // Entries this reactor has not delivered yet go to the members it had: the new one
        // starts after the cursor (its `joined` offset).
        catchUp(local)
        if batch.room === local { flushBatch() }
        local.add(c)
        c.rooms.append(local)
        return local
    }

    public func leaveRoom(_ c: Connection, _ local: LocalRoom) -> Int {
        if batch.room === local { flushBatch() }
        local.remove(c)
        if local.memberCount == 0 { local.shared.dropLocal(for: index) }
        return abandonRoom(local.shared)
    }

    public func abandonRoom(_ room: SharedRoom) -> Int {
        let remaining = shared.rooms.leave(room, reactor: index)
        shared.cluster?.localMembersChanged(room: room.name, count: remaining, joined: false)
        return remaining
    }

    public func memberCount(_ name: String) -> Int { shared.rooms.memberCount(name) }
}

/// The reactor as plugins see it (Plugins/PluginContext.swift); the calls not defined here are
/// the reactor's own (FanOut.swift, Input.swift, Limits.swift, Membership.swift).
extension Reactor: PluginContext {
    public var reactorIndex: Int { index }
    /// A plugin closes a connection for a policy reason (a WebSocket gets close code 1008,
    /// after the error the plugin sends).
    public func close(_ c: Connection) {
        requestClose(c, WebSocketCloseCode.policyViolation.rawValue, "closed by the server (see the error message)")
        closeAfterFlush(c)
    }
    public func now() -> UInt64 { batchNow() }
}
