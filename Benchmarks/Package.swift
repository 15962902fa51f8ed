// swift-tools-version:6.1
// Benchmarks for tcpserver, kept in their own package so the server itself does not depend on
// package-benchmark (and its malloc interposer). Run: `cd Benchmarks && swift package benchmark`.
import PackageDescription

let package = Package(
    name: "tcpserver-benchmarks",
    dependencies: [
        // The server package one level up. Named explicitly so the product references below do
        // not depend on the checkout's directory name (a path dependency's identity is otherwise
        // the folder's last path component).
        .package(name: "tcpserver", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The io_uring/epoll workloads. CLinux and package-benchmark cannot be imported in the
        // same Swift module (swift-system's <linux/io_uring.h> and liburing's copy of it
        // clash in clang), so CLinux is used only here, behind an `internal import`.
        .target(
            name: "UringBenchSupport",
            dependencies: [.product(name: "CLinux", package: "tcpserver")],
            // Resilient, so clients do not load the internally imported CLinux module.
            swiftSettings: [.unsafeFlags(["-enable-library-evolution"])]
        ),
        .executableTarget(
            name: "UringBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                "UringBenchSupport",
            ],
            path: "Benchmarks/UringBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v5)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        .executableTarget(
            name: "PrimitiveBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "Primitives", package: "tcpserver"),
            ],
            path: "Benchmarks/PrimitiveBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v5)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // The server's message path over the in-memory backend: 0 mallocs per message.
        .executableTarget(
            name: "ServerBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "UringServer", package: "tcpserver"),
                .product(name: "UringServerTesting", package: "tcpserver"),
            ],
            path: "Benchmarks/ServerBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v5)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // CompressionContext (lz4, zstd -1/-3) compress/decompress throughput and ratio.
        .executableTarget(
            name: "CompressionBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "Primitives", package: "tcpserver"),
            ],
            path: "Benchmarks/CompressionBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v5)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
