// swift-tools-version:6.1
// Conclave: service discovery, health checking and configuration, wire-compatible with
// Consul's HTTP API. Module map (one concern each; dependencies point toward the cores):
//   CLibShims/*   system-library shims for libuv, LMDB, http-parser and OpenSSL
//   EventLoop     Swift over libuv: the loop thread, TCP, UDP, timers, cross-thread mailbox
//   Storage       Swift over LMDB: environments, transactions, cursors, the log store
//   RaftCore      the Raft protocol as a deterministic state machine (no I/O, no clock)
//   GossipCore    SWIM membership with Lifeguard as a deterministic state machine (no I/O)
//   Gossip        the gossip transport: runs GossipCore on the loop over UDP + TCP, encryption
//   StateStore    the replicated state machine's tables (KV) and their binary commands
//   Replication   the replicated command log: RaftReplicator (RaftCore on the loop), Raft transport, disk thread
//   TLS           TLS client/server over EventLoop's TCP with OpenSSL memory BIOs (HTTPS checks)
//   HTTP          HTTP/1.1 parsing, responses, the server on the loop, a small blocking client
//   Agent         configuration and wiring; Consul's HTTP API endpoints; blocking queries
//   ConclaveCLI   the `conclave` command line (agent, kv, version)
import PackageDescription

let package = Package(
    name: "conclave",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "conclave", targets: ["conclave"]),
        .library(name: "ConclaveCore", targets: ["EventLoop", "Storage", "StateStore", "Replication", "HTTP", "Agent", "RaftCore", "GossipCore", "Gossip", "TLS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibUV", path: "CLibShims/CLibUV", pkgConfig: "libuv",
                       providers: [.apt(["libuv1-dev"]), .brew(["libuv"])]),
        .systemLibrary(name: "CLMDB", path: "CLibShims/CLMDB", pkgConfig: "lmdb",
                       providers: [.apt(["liblmdb-dev"]), .brew(["lmdb"])]),
        .systemLibrary(name: "CHTTPParser", path: "CLibShims/CHTTPParser",
                       providers: [.apt(["libhttp-parser-dev"]), .brew(["http-parser"])]),
        .systemLibrary(name: "CLibSSL", path: "CLibShims/CLibSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]),

        .target(name: "RaftCore"),
        .target(name: "GossipCore"),
        .target(name: "Gossip", dependencies: ["GossipCore", "EventLoop", .product(name: "Logging", package: "swift-log"),
                                               .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "EventLoop", dependencies: ["CLibUV", .product(name: "Logging", package: "swift-log")]),
        .target(name: "Storage", dependencies: ["CLMDB"]),
        .target(name: "TLS", dependencies: ["CLibSSL", "EventLoop"]),
        .target(name: "StateStore", dependencies: ["Storage"]),
        .target(name: "Replication", dependencies: ["Storage", "StateStore", "EventLoop", "RaftCore",
                                                    .product(name: "Logging", package: "swift-log"),
                                                    .product(name: "Metrics", package: "swift-metrics"),
                                                    .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "HTTP", dependencies: ["CHTTPParser", "EventLoop", .product(name: "Logging", package: "swift-log")]),
        .target(name: "Agent", dependencies: ["EventLoop", "Gossip", "GossipCore", "Storage", "StateStore", "Replication", "HTTP", "TLS",
                                              .product(name: "Logging", package: "swift-log"),
                                              .product(name: "Metrics", package: "swift-metrics")]),
        .target(name: "ConclaveCLI", dependencies: ["Agent", "HTTP", "Gossip", "Replication", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "conclave", dependencies: ["ConclaveCLI"]),

        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "EventLoopTests", dependencies: ["EventLoop"]),
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore", "TestSupport"]),
        .testTarget(name: "GossipTests", dependencies: ["Gossip", "GossipCore", "EventLoop"]),
        .testTarget(name: "GossipCoreTests", dependencies: ["GossipCore", "TestSupport"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage"]),
        .testTarget(name: "StateStoreTests", dependencies: ["StateStore", "Storage", "TestSupport"]),
        .testTarget(name: "ReplicationTests", dependencies: ["Replication", "StateStore", "Storage", "EventLoop", "RaftCore",
                                                             .product(name: "Metrics", package: "swift-metrics")]),
        .testTarget(name: "HTTPTests", dependencies: ["HTTP", "EventLoop", "TestSupport"]),
        .testTarget(name: "TLSTests", dependencies: ["TLS", "EventLoop", "TestSupport"]),
        .testTarget(name: "AgentTests", dependencies: ["Agent", "HTTP", "EventLoop", "Replication", "TestSupport", "TLS",
                                                 "Gossip", "GossipCore", "StateStore", "Storage",
                                                 .product(name: "Metrics", package: "swift-metrics")]),
        .testTarget(name: "ConclaveCLITests", dependencies: ["ConclaveCLI", "Agent", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "ProcessTests", dependencies: ["HTTP", "EventLoop", .product(name: "Logging", package: "swift-log")]),
    ]
)
