import Primitives

/// A link in the plugin chain. Processors are asked in registration order; the first whose
/// `canHandle` says yes gets the message; the core handler (hello, ping) is the fallback and
/// anything left is `unsupported_type`.
///
/// `process` runs on the reactor thread that owns the connection and must never block: a
/// plugin with slow work hands it to its own thread and replies later through its context.
/// Each reactor gets its own instance (see `Server.register`), so per-reactor state needs no
/// locks.
public protocol MessageProcessor: AnyObject {
    /// Must answer by `type` alone, the same every time: a reactor remembers the answer.
    func canHandle(_ type: String) -> Bool
    func process(_ message: IncomingMessage, _ context: PluginContext) throws(ProtocolError)
    /// The connection is going away (peer closed, error, shutdown).
    func connectionClosed(_ connection: Connection, _ context: PluginContext)
    /// The feature flag that gates this plugin, if any: while it is off for a user, that
    /// user's messages of this plugin's types get `feature_disabled`.
    var featureFlag: String? { get }
    /// Called at the end of every loop turn, on the reactor thread: where a plugin that
    /// handed work elsewhere (and held a connection's input with `PluginContext.holdInput`) finishes
    /// it and replies.
    func turnEnded(_ context: PluginContext)
}

extension MessageProcessor {
    public func connectionClosed(_ connection: Connection, _ context: PluginContext) {}
    public var featureFlag: String? { nil }
    public func turnEnded(_ context: PluginContext) {}
}

/// Makes one processor for one reactor.
public typealias ProcessorFactory = @Sendable (PluginEnvironment) -> MessageProcessor

/// What a plugin may read when it is created.
public struct PluginEnvironment: Sendable {
    public let config: ServerConfig
    public let rooms: RoomDirectory
    public let reactorIndex: Int
    public let flags: FeatureFlags
    /// Cluster mode's link (nil on a single node).
    let cluster: ClusterNode?
    /// The server's voice channels (VoiceCoordinator), shared by every reactor.
    let voice: VoiceChannels
}

/// A parsed client message. Its bytes live in a receive buffer and are valid only during
/// `process`; copy what you keep (`string(_:)` returns an owned String).
public struct IncomingMessage {
    public let connection: Connection
    public let type: String
    public let bytes: UnsafeRawBufferPointer
    let fields: UnsafePointer<JSONFieldTable>

    public func field(_ key: StaticString) -> JSONField? {
        JSONFieldTable.find(key, in: bytes, table: fields)
    }

    /// The unescaped string value of `key`, or nil when absent or not a string.
    public func string(_ key: StaticString) -> String? {
        guard let f = field(key), f.kind == .string else { return nil }
        return JSONReader.string(f, in: bytes)
    }

    /// A non-empty string field, or `missing_field`.
    public func requireString(_ key: StaticString) throws(ProtocolError) -> String {
        guard let f = field(key), f.kind == .string else {
            throw ProtocolError(.missingField, "field '\(key)' (a string) is required")
        }
        let s = JSONReader.string(f, in: bytes)
        if s.isEmpty { throw ProtocolError(.missingField, "field '\(key)' must not be empty") }
        return s
    }

    /// A user or room name: 1…maxBytes bytes of UTF-8 with no control or invisible line
    /// characters and no leading or trailing whitespace; else `bad_name` (`missing_field` when
    /// absent). Quotes and backslashes are fine: every output escapes them.
    public func requireName(_ key: StaticString, maxBytes: Int) throws(ProtocolError) -> String {
        guard let f = field(key), f.kind == .string else {
            throw ProtocolError(.missingField, "field '\(key)' (a string) is required")
        }
        let s = JSONReader.string(f, in: bytes)
        if s.isEmpty { throw ProtocolError(.missingField, "field '\(key)' must not be empty") }
        if s.utf8.count > maxBytes {
            throw ProtocolError(.badName, "\(key) is longer than \(maxBytes) bytes")
        }
        for u in s.unicodeScalars where u.value < 0x20 || (u.value >= 0x7F && u.value < 0xA0)
            || u.value == 0x2028 || u.value == 0x2029 || u.value == 0xFEFF || (u.value >= 0x200B && u.value <= 0x200F) {
            throw ProtocolError(.badName, "\(key) may not contain control or invisible characters")
        }
        if s.unicodeScalars.first!.properties.isWhitespace || s.unicodeScalars.last!.properties.isWhitespace {
            throw ProtocolError(.badName, "\(key) may not start or end with whitespace")
        }
        return s
    }

    public func bool(_ key: StaticString) -> Bool? {
        guard let f = field(key), f.kind == .bool else { return nil }
        return JSONReader.bool(f, in: bytes)
    }

    /// The still-escaped inside of a string field, to copy verbatim into an outgoing message
    /// (valid JSON as it stands: the reader validated it).
    public func rawString(_ key: StaticString) -> UnsafeRawBufferPointer? {
        guard let f = field(key), f.kind == .string else { return nil }
        return UnsafeRawBufferPointer(rebasing: bytes[f.valueStart..<f.valueEnd])
    }
}
