// swift-tools-version:6.1
import PackageDescription

// libFuzzer target over the frame splitter, the JSON codec and the protocol dispatch
// (ProtocolHarness). A package of its own so the fuzzer/sanitizer flags never reach the normal
// build: `scripts/fuzz.sh SECONDS` builds it with
//   swift build --package-path Fuzz --scratch-path .build-fuzz -c debug \
//     -Xswiftc -sanitize=fuzzer,address
let package = Package(
    name: "tcpserver-fuzz",
    dependencies: [
        .package(name: "tcpserver", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "tcpserver-fuzz",
            dependencies: [
                .product(name: "UringServer", package: "tcpserver"),
                .product(name: "UringServerTesting", package: "tcpserver"),
                .product(name: "Primitives", package: "tcpserver"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ]
)
