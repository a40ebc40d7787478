// swift-tools-version:6.1
// Conclave's benchmarks: a separate package so the root package never depends on the
// benchmark harness. Each executable target under Benchmarks/<Name>/ is one suite that
// `swift package benchmark` discovers and runs (ordo-one/benchmark, release builds).
//   StorageBenchmarks   LMDB log append (fsync per batch), state-store apply, point reads
//   HTTPKVBenchmarks    KV over HTTP against an in-process agent; codec and parser micro benchmarks
// and one plain executable (not an ordo-one suite: it lives under Sources/, which the plugin skips):
//   conclave-bench      cluster load generator: starts N agents (or targets running ones), drives
//                       C keep-alive connections, reports an HDR histogram; optionally beside etcd
import PackageDescription

let package = Package(
    name: "ConclaveBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "conclave", path: ".."),
        // The MallocInterposer trait alone (no default traits) gives malloc counts without
        // jemalloc and without the 6.3-only runtime interposer package, which is not mirrored here.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(name: "BenchmarkSupport"),
        // The load generator's logic (options, HTTP response parsing, request encoding, the
        // libuv driver, clusters, reports) is a library so its pure parts have unit tests.
        .target(
            name: "ConclaveBenchKit",
            dependencies: [
                .product(name: "ConclaveCore", package: "conclave"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "conclave-bench", dependencies: ["ConclaveBenchKit"]),
        .testTarget(name: "ConclaveBenchKitTests", dependencies: ["ConclaveBenchKit"]),
        .executableTarget(
            name: "StorageBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ConclaveCore", package: "conclave"),
                "BenchmarkSupport",
            ],
            path: "Benchmarks/StorageBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "HTTPKVBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ConclaveCore", package: "conclave"),
                .product(name: "Logging", package: "swift-log"),
                "BenchmarkSupport",
            ],
            path: "Benchmarks/HTTPKVBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
