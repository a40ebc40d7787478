// An in-process cluster of RaftReplicators for tests: each server has its own loop thread,
// data dir and transport on 127.0.0.1 (port 0 at first, the same port on restart).
import EventLoop
import Foundation
import Logging
import RaftCore
@testable import Replication
import StateStore
import Storage

/// Thread-safe collection of write outcomes.
final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [(key: String, result: Result<CommitOutcome, RaftCommitError>)] = []
    func add(_ key: String, _ result: Result<CommitOutcome, RaftCommitError>) { lock.lock(); results.append((key, result)); lock.unlock() }
    var all: [(key: String, result: Result<CommitOutcome, RaftCommitError>)] { lock.lock(); defer { lock.unlock() }; return results }
    var count: Int { lock.lock(); defer { lock.unlock() }; return results.count }
    var acknowledgedKeys: [String] { all.filter { if case .success = $0.result { return true } else { return false } }.map(\.key) }
}

final class TestServer {
    let id: NodeID
    let dataDirectory: String
    var port: Int
    var loop: Loop
    var replicator: Unsafe<RaftReplicator>
    var running = true

    init(id: NodeID, dataDirectory: String, port: Int, loop: Loop, replicator: Unsafe<RaftReplicator>) {
        self.id = id
        self.dataDirectory = dataDirectory
        self.port = port
        self.loop = loop
        self.replicator = replicator
    }

    func run<T>(_ body: @escaping (RaftReplicator) throws -> T) throws -> T {
        let replicator = self.replicator
        return try onLoop(loop) { try body(replicator.value) }
    }
}

final class TestCluster {
    var servers: [NodeID: TestServer] = [:]
    let config: RaftReplicatorConfig
    let logger: Logger
    private(set) var addresses: [NodeID: String] = [:]

    init(size: Int, config: RaftReplicatorConfig = .fastForTests()) throws {
        self.config = config
        var logger = Logger(label: "test.raft")
        logger.logLevel = ProcessInfo.processInfo.environment["RAFT_TEST_LOG"] == nil ? .warning : .info
        self.logger = logger
        var transports: [NodeID: (Loop, Unsafe<RaftTransport>, Int)] = [:]
        for id in 1 ... UInt64(size) {
            let loop = try Loop(name: "raft-\(id)")
            loop.start()
            let transport = try Self.makeTransport(loop, port: 0, config: config, logger: logger)
            let port = try onLoop(loop) { transport.value.port }
            transports[id] = (loop, transport, port)
            addresses[id] = "127.0.0.1:\(port)"
        }
        for (id, (loop, transport, port)) in transports {
            let dir = temporaryDataDirectory()
            let replicator = try Self.startReplicator(id: id, loop: loop, dir: dir, transport: transport,
                                                      bootstrap: addresses, config: config, logger: logger)
            servers[id] = TestServer(id: id, dataDirectory: dir, port: port, loop: loop, replicator: replicator)
        }
    }

    static func makeTransport(_ loop: Loop, port: Int, config: RaftReplicatorConfig, logger: Logger) throws -> Unsafe<RaftTransport> {
        try onLoop(loop) { Unsafe(try RaftTransport(loop: loop, host: "127.0.0.1", port: port, config: config.transport, logger: logger)) }
    }

    static func startReplicator(id: NodeID, loop: Loop, dir: String, transport: Unsafe<RaftTransport>,
                                bootstrap: [NodeID: String]?, advertiseAddress: String? = nil,
                                config: RaftReplicatorConfig, logger: Logger) throws -> Unsafe<RaftReplicator> {
        try onLoop(loop) {
            let replicator = try RaftReplicator(id: id, loop: loop, dataDirectory: dir, transport: transport.value,
                                                bootstrap: bootstrap, advertiseAddress: advertiseAddress,
                                                config: config, logger: logger)
            replicator.start()
            return Unsafe(replicator)
        }
    }

    var running: [TestServer] { servers.values.filter(\.running).sorted { $0.id < $1.id } }

    /// The one server that believes it leads, once exactly one running server does and every
    /// running server agrees.
    func waitForLeader(_ seconds: Double = 20, excluding: NodeID? = nil, among: [NodeID]? = nil) throws -> NodeID? {
        var found: NodeID?
        _ = try eventually(seconds) {
            let servers = running.filter { among?.contains($0.id) ?? true }
            let states = try servers.map { s in try s.run { ($0.id, $0.isLeader, $0.leaderID) } }
            let leaders = states.filter(\.1).map(\.0)
            guard leaders.count == 1, leaders[0] != excluding, states.allSatisfy({ $0.2 == leaders[0] }) else { return false }
            found = leaders[0]
            return true
        }
        return found
    }

    /// Submits `count` writes of keys "\(prefix)\(i)" on `server` and waits for every answer.
    @discardableResult
    func write(on server: NodeID, prefix: String, count: Int, forward: Bool? = nil, seconds: Double = 30) throws -> Outcomes {
        let outcomes = Outcomes()
        try servers[server]!.run { r in
            for i in 0 ..< count {
                let key = "\(prefix)\(i)"
                r.submit(KVCommand.set(key: key, value: Array(key.utf8), flags: 0).encoded(), forwardToLeader: forward) {
                    outcomes.add(key, $0)
                }
            }
        }
        _ = eventually(seconds) { outcomes.count == count }
        return outcomes
    }

    /// Every key and value in a server's state store, once it shows every write the server
    /// applied (`localReadBarrier`; with `committedOnly`, what its readers see right now).
    func contents(_ id: NodeID, committedOnly: Bool = false) throws -> [String: [UInt8]] {
        if !committedOnly {
            let visible = Unsafe(false)
            let lock = NSLock()
            try servers[id]!.run { r in r.localReadBarrier { _ in lock.lock(); visible.value = true; lock.unlock() } }
            _ = eventually(10) { lock.lock(); defer { lock.unlock() }; return visible.value }
        }
        return try servers[id]!.run { r in
            Dictionary(uniqueKeysWithValues: try r.reader.list(prefix: "").entries.map { ($0.key, $0.value) })
        }
    }

    func stop(_ id: NodeID) throws {
        let server = servers[id]!
        try server.run { $0.close() }
        server.loop.shutdown()
        server.running = false
    }

    func restart(_ id: NodeID) throws {
        let server = servers[id]!
        precondition(!server.running)
        let loop = try Loop(name: "raft-\(id)")
        loop.start()
        let transport = try Self.makeTransport(loop, port: server.port, config: config, logger: logger)
        server.replicator = try Self.startReplicator(id: id, loop: loop, dir: server.dataDirectory, transport: transport,
                                                     bootstrap: nil, config: config, logger: logger)
        server.loop = loop
        server.running = true
    }

    /// Starts a server outside the configuration (no bootstrap): it waits to be added.
    func startJoiningServer(_ id: NodeID) throws -> String {
        let loop = try Loop(name: "raft-\(id)")
        loop.start()
        let transport = try Self.makeTransport(loop, port: 0, config: config, logger: logger)
        let port = try onLoop(loop) { transport.value.port }
        let address = "127.0.0.1:\(port)"
        let dir = temporaryDataDirectory()
        let replicator = try Self.startReplicator(id: id, loop: loop, dir: dir, transport: transport, bootstrap: nil,
                                                  advertiseAddress: address, config: config, logger: logger)
        servers[id] = TestServer(id: id, dataDirectory: dir, port: port, loop: loop, replicator: replicator)
        addresses[id] = address
        return address
    }

    /// Runs a membership call on `server` and waits for its answer.
    func membershipChange(on server: NodeID, _ call: @escaping (RaftReplicator, @escaping (Result<Void, RaftCommitError>) -> Void) -> Void) throws -> Result<Void, RaftCommitError>? {
        let result = Unsafe<Result<Void, RaftCommitError>?>(nil)
        let lock = NSLock()
        try servers[server]!.run { r in call(r) { res in lock.lock(); result.value = res; lock.unlock() } }
        _ = eventually(20) { lock.lock(); defer { lock.unlock() }; return result.value != nil }
        lock.lock(); defer { lock.unlock() }
        return result.value
    }

    func shutdown() {
        for server in running { try? stop(server.id) }
        for server in servers.values { try? FileManager.default.removeItem(atPath: server.dataDirectory) }
    }
}
