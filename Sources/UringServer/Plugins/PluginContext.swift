import Primitives

/// What a plugin may do, handed to every `MessageProcessor` call. It is the plugin's reactor
/// (the one thread that owns the connection), seen through the calls a plugin needs and
/// nothing of the engine behind them: output, rooms, held input, limits and the clock.
public protocol PluginContext: AnyObject {
    /// The reactor's index (0 ..< threads): per-reactor state is kept by index.
    var reactorIndex: Int { get }

    // Output.
    /// Renders one message with `body` and queues it for `c`, framed for its connection.
    func reply(to c: Connection, _ body: (inout ByteBuffer) -> Void)
    /// Renders a room message once and delivers it to every member of the room on every
    /// reactor, except `excluded`.
    func broadcast(_ room: LocalRoom, excluding excluded: Connection?, _ body: (inout ByteBuffer) -> Void)
    /// Delivers a message to every member of `room` on every reactor, also where this reactor
    /// has no members of its own.
    func broadcast(_ room: SharedRoom, _ body: (inout ByteBuffer) -> Void)
    /// Appends a chat line to the room's log and delivers it to every member on every reactor
    /// in offset order (except `excluded`). `body` renders the line without its closing brace:
    /// `,"offset":N}` is added. Returns N; the message's ack carries it.
    func publish(_ room: LocalRoom, excluding excluded: Connection?, _ body: (inout ByteBuffer) -> Void) -> Int
    /// The bytes of the message `broadcast`, `publish` or `reply` rendered last (valid until the next one).
    var lastRendered: UnsafeRawBufferPointer { get }
    /// Renders `body` without delivering it (cluster chat: Redis gives the line its offset
    /// first); the bytes are valid until the next render.
    func renderOnly(_ body: (inout ByteBuffer) -> Void) -> UnsafeRawBufferPointer
    /// The message being handled is acknowledged later, by the cluster link's answer (its ack
    /// then carries the cluster-wide offset).
    func deferAck()
    /// Replies `joined` (rendered by `body` with the room's epoch and offset, and the outcome
    /// of `since`), then queues the missed lines `since` asks for (docs/protocol.md, "Recovery").
    func replyJoined(_ c: Connection, _ local: LocalRoom, since: (epoch: String, offset: Int)?,
                     rejoin: Bool, _ body: (inout ByteBuffer, RoomPosition) -> Void)
    /// The room's epoch and latest offset on this server (nil: no such room).
    func roomLatest(_ name: String) -> (epoch: String, latest: Int)?

    // Rooms (see `RoomDirectory`: counts are per server; cluster counts come from ClusterNode).
    /// Counts one more member of room `name`; nil when it already has `limit` members.
    func enterRoom(_ name: String, limit: Int) -> (room: SharedRoom, members: Int)?
    /// Makes `c` a local member of `room` (counted by `enterRoom`): it receives the room's
    /// messages from now on, and the room is in `c.rooms`.
    func admit(_ c: Connection, to room: SharedRoom) -> LocalRoom
    /// Removes `c` from `local` (already taken out of `c.rooms`); returns the members left.
    func leaveRoom(_ c: Connection, _ local: LocalRoom) -> Int
    /// Takes back an `enterRoom` whose member was never admitted; returns the members left.
    func abandonRoom(_ room: SharedRoom) -> Int
    /// The room's members on this server (0 when it does not exist).
    func memberCount(_ name: String) -> Int

    // Held input: a message finished later (the plugin waits for something off-thread).
    /// Stops processing `c`'s input after the current message; what arrives meanwhile is kept
    /// (bounded) and processed, in order, by `releaseInput`.
    func holdInput(_ c: Connection)
    /// Sends the ack owed for the held message, then processes the input kept meanwhile.
    func releaseInput(_ c: Connection)

    // Limits and lifecycle.
    /// Counts a hit of limit `name` (shown in /stats and /metrics).
    func limitHit(_ name: String)
    /// No more input is processed; the connection closes once its output is sent.
    func close(_ c: Connection)

    // Time.
    /// Monotonic nanoseconds of the current batch of events (one clock read per turn).
    func now() -> UInt64
    /// Wall-clock milliseconds for `ts` fields.
    func wallMillis() -> Int
}
