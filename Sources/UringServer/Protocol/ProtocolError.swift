/// Error codes sent to clients as `{"type":"error","code":…}`.
public enum ErrorCode: String, Sendable {
    case badJSON = "bad_json"
    case badFrame = "bad_frame"
    case unsupportedType = "unsupported_type"
    case missingField = "missing_field"
    case helloRequired = "hello_required"
    case alreadyHello = "already_hello"
    case notInRoom = "not_in_room"
    case frameTooLarge = "frame_too_large"
    case serverFull = "server_full"
    case featureDisabled = "feature_disabled"
    case rateLimited = "rate_limited"
    case helloTimeout = "hello_timeout"
    case idleTimeout = "idle_timeout"
    case slowConsumer = "slow_consumer"
    case unauthorized = "unauthorized"
    case badName = "bad_name"
    case tooManyRooms = "too_many_rooms"
    case roomFull = "room_full"
    case unsupportedCodec = "unsupported_codec"
    case badSince = "bad_since"
    /// Cluster mode: Redis could not give a chat line its offset (down, or failed the script).
    case clusterUnavailable = "cluster_unavailable"
    // Voice (docs/protocol.md, "Voice").
    case noRelay = "no_relay"
    case voiceAlreadyRunning = "voice_already_running"
    case voiceNotRunning = "voice_not_running"
    case notVoiceStarter = "not_voice_starter"
}

public struct ProtocolError: Error {
    public let code: ErrorCode
    public let message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
}
