// swift-tools-version:6.1
import PackageDescription

// The server targets (CURing, Optimizers, UringServer, tcpserver) do not import Foundation:
// `make check-no-foundation` and a test enforce it. Tests may use Foundation.
let package = Package(
    name: "tcpserver",
    products: [
        .executable(name: "tcpserver", targets: ["tcpserver"]),
        .executable(name: "tcpserver-bench", targets: ["tcpserver-bench"]),
        .library(name: "UringServer", targets: ["UringServer"]),
        // For the Benchmarks/ package.
        .library(name: "Optimizers", targets: ["Optimizers"]),
        .library(name: "CURing", targets: ["CURing"]),
    ],
    targets: [
        // Thin C shim over liburing: only what Swift cannot import cleanly (buffer-ring set-up,
        // probing, packed user_data). liburing's static inline helpers are imported directly.
        .target(
            name: "CURing",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(name: "Optimizers"),
        .target(
            name: "UringServer",
            dependencies: ["CURing", "Optimizers"]
        ),
        .executableTarget(name: "tcpserver", dependencies: ["UringServer"]),
        // The load tool: drives tcpserver, redis-server or nats-server over real sockets.
        .executableTarget(name: "tcpserver-bench", dependencies: ["CURing"]),
        .testTarget(name: "OptimizersTests", dependencies: ["Optimizers"]),
        .testTarget(name: "UringServerTests", dependencies: ["UringServer", "Optimizers"]),
    ]
)
