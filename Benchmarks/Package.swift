// swift-tools-version:6.1
// Conclave's benchmarks: a separate package so the root package never depends on the
// benchmark harness. Each executable target under Benchmarks/<Name>/ is one suite that
// `swift package benchmark` discovers and runs (ordo-one/benchmark, release builds).
//   StorageBenchmarks   LMDB log append (fsync per batch), state-store apply, point reads
//   HTTPKVBenchmarks    KV over HTTP against an in-process agent; codec and parser micro benchmarks
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
    ],
    targets: [
        .target(name: "BenchmarkSupport"),
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
