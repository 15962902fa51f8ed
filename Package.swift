// swift-tools-version:6.1
import PackageDescription

// The server targets (CLinux, Primitives, UringServer, tcpserver, VoiceWire, VoiceRelay,
// tcpserver-voice) do not import Foundation:
// `make check-no-foundation` and a test enforce it. Tests may use Foundation.
// Release builds of the server targets skip dynamic exclusivity checks: the reactor mutates
// buffers stored in class instances on every message, and the runtime checks are a noticeable
// share of server CPU on the fan-out load (docs/performance.md). Debug builds (tests) keep them.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "tcpserver",
    products: [
        .executable(name: "tcpserver", targets: ["tcpserver"]),
        .executable(name: "tcpserver-bench", targets: ["tcpserver-bench"]),
        .executable(name: "tcpserver-soak", targets: ["tcpserver-soak"]),
        .executable(name: "tcpserver-cli", targets: ["tcpserver-cli"]),
        .executable(name: "tcpserver-voice", targets: ["tcpserver-voice"]),
        .library(name: "UringServer", targets: ["UringServer"]),
        // ProtocolHarness: one reactor over the in-memory backend (tests, Fuzz/, Benchmarks/).
        .library(name: "UringServerTesting", targets: ["UringServerTesting"]),
        // For the Benchmarks/ package.
        .library(name: "Primitives", targets: ["Primitives"]),
        .library(name: "CLinux", targets: ["CLinux"]),
    ],
    dependencies: [
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // tcpserver-bench only: latency percentiles.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // Thin C shim over liburing: only what Swift cannot import cleanly (buffer-ring set-up,
        // probing, packed user_data). liburing's static inline helpers are imported directly.
        .target(
            name: "CLinux",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(name: "CCompression", linkerSettings: [.linkedLibrary("lz4"), .linkedLibrary("zstd")]),
        // Thin C shim over OpenSSL's libcrypto: SHA-1 + Base64 (WebSocket handshake), HMAC-SHA256
        // (voice tokens), constant-time compare. No hand-written crypto.
        .target(name: "CCrypto"),   // libcrypto is dlopen()ed on first use (Sources/CCrypto/CCrypto.c)
        // Thin wrappers over libnuma + sched_setaffinity for the Primitives buffer pool.
        .target(name: "CNuma", linkerSettings: [.linkedLibrary("numa")]),
        .target(name: "Primitives", dependencies: ["CCompression", "CNuma"]),
        // Thin C shim over hiredis' RESP reader for the cluster link (Redis pub/sub).
        .target(name: "CHiredis", linkerSettings: [.linkedLibrary("hiredis")]),
        .target(
            name: "UringServer",
            dependencies: [
                "CLinux", "CHiredis", "CCrypto", "Primitives", "VoiceWire",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPath
        ),
        // Drives one reactor over MemoryBackend through UringServer's package-level hooks, so the
        // server itself carries no test seams.
        .target(name: "UringServerTesting", dependencies: ["UringServer", "Primitives"]),
        .executableTarget(name: "tcpserver", dependencies: ["UringServer"]),
        // Voice: the token and packet formats both sides share (coordinator plugin, relay, bench).
        .target(name: "VoiceWire", dependencies: ["CCrypto"]),
        // The UDP relay (io_uring or epoll), a library so tests run it in-process.
        .target(name: "VoiceRelay", dependencies: ["CLinux", "CCrypto", "Primitives", "VoiceWire"], swiftSettings: hotPath),
        .executableTarget(name: "tcpserver-voice", dependencies: ["VoiceRelay"]),
        // Command-line client (interactive, pub, sub, stats, ping); Foundation-free, no dependencies.
        .executableTarget(name: "tcpserver-cli"),
        // Soak test tool: churning clients, delivery/ordering checks, server fd/RSS (scripts/soak.sh).
        .executableTarget(name: "tcpserver-soak", dependencies: ["LoadClient"]),
        // Socket/clock/proc helpers shared by the two load tools.
        .target(name: "LoadClient"),
        // The load tool: drives tcpserver, redis-server or nats-server over real sockets.
        .executableTarget(name: "tcpserver-bench", dependencies: ["CLinux", "CCrypto", "LoadClient", "Primitives", "VoiceWire", .product(name: "Histogram", package: "hdrhistogram-swift")]),
        .testTarget(name: "PrimitivesTests", dependencies: ["Primitives"]),
        .testTarget(name: "UringServerTests", dependencies: ["UringServer", "UringServerTesting", "Primitives", "VoiceWire", "VoiceRelay"]),
    ]
)
