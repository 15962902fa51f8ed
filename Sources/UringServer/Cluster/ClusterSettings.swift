/// Where the cluster's Redis lives and how this node presents itself there.
public struct ClusterSettings: Sendable {
    public var redisHost: String
    public var redisPort: Int
    /// Unique per node; must not contain a newline (it prefixes every published message).
    public var nodeId: String
    /// How often the node refreshes its heartbeat key, user keys and room counts.
    public var heartbeatMillis = 1000
    /// TTL of the heartbeat key `<prefix>:node:<nodeId>` (and of user keys): a node whose key
    /// expired is dead and its member counts no longer count.
    public var nodeTTLMillis = 3000
    public var channelPrefix = "tcpserver"
    /// Publishes accepted but not yet handed to the socket are capped at this many bytes; past
    /// it, `publish` counts a failure instead of queueing (Redis too slow).
    public var maxPendingBytes = 8 << 20
    /// A connection whose commands get no reply for this long is considered dead.
    public var replyTimeoutMillis = 5000
    /// Chat history in Redis: the room stream's MAXLEN (~) and the TTL of its keys (the
    /// server's history_size and history_ttl_s).
    public var historySize = 100
    public var historyTTLMillis = 300_000
    /// A connect attempt that does not complete within this is a failure.
    public var connectTimeoutMillis = 2000

    public init(redisHost: String = "127.0.0.1", redisPort: Int = 6379, nodeId: String,
                heartbeatMillis: Int = 1000, nodeTTLMillis: Int = 3000, channelPrefix: String = "tcpserver") {
        self.redisHost = redisHost
        self.redisPort = redisPort
        self.nodeId = nodeId
        self.heartbeatMillis = heartbeatMillis
        self.nodeTTLMillis = nodeTTLMillis
        self.channelPrefix = channelPrefix
    }
}
