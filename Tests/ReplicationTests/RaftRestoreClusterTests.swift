// User restore (PUT /v1/snapshot's replicator side) in a real in-process cluster: the leader
// takes on an archive's state and every follower ends up with exactly that state through
// InstallSnapshot; a bad archive changes nothing.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

@Suite("Raft user snapshot restore", .serialized)
struct RaftRestoreClusterTests {
    /// Runs an asynchronous replicator call on `server`'s loop and waits for its answer.
    private func call<T>(_ cluster: TestCluster, on server: NodeID, seconds: Double = 30,
                         _ body: @escaping (RaftReplicator, @escaping (T) -> Void) -> Void) throws -> T? {
        let result = Unsafe<T?>(nil)
        let lock = NSLock()
        try cluster.servers[server]!.run { r in body(r) { value in lock.lock(); result.value = value; lock.unlock() } }
        _ = eventually(seconds) { lock.lock(); defer { lock.unlock() }; return result.value != nil }
        lock.lock(); defer { lock.unlock() }
        return result.value
    }

    private func archive(_ cluster: TestCluster, on server: NodeID) throws -> (index: UInt64, archive: [UInt8]) {
        let result = try #require(try call(cluster, on: server) { (r, done: @escaping (Result<(index: UInt64, archive: [UInt8]), RaftCommitError>) -> Void) in
            r.archiveSnapshot(completion: done)
        })
        return try result.get()
    }

    private func restore(_ cluster: TestCluster, on server: NodeID, _ bytes: [UInt8]) throws -> Result<UInt64, SnapshotRestoreError> {
        try #require(try call(cluster, on: server) { (r, done: @escaping (Result<UInt64, SnapshotRestoreError>) -> Void) in
            r.restoreSnapshot(archive: bytes, completion: done)
        })
    }

    @Test(arguments: [false, true])
    func restoreReplacesTheStateOnEveryServer(compacting: Bool) throws {
        var config = RaftReplicatorConfig.fastForTests()
        if compacting {
            config.snapshotThreshold = 20
            config.trailingLogs = 5
            config.snapshotIntervalMilliseconds = 20
        }
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "a/", count: 30).acknowledgedKeys.count == 30)
        let saved = try archive(cluster, on: leader)
        let aKeys = try cluster.contents(leader)
        #expect(aKeys.count == 30)
        #expect(try cluster.write(on: leader, prefix: "b/", count: 40).acknowledgedKeys.count == 40)
        let kvIndexBefore = try cluster.servers[leader]!.run { try $0.reader.get("a/0").index }
        let lastBefore = try cluster.servers[leader]!.run { $0.commitIndex }

        let restored = try restore(cluster, on: leader, saved.archive)
        let index = try restored.get()
        #expect(index > lastBefore)
        #expect(try cluster.contents(leader) == aKeys)
        // X-Consul-Index (the KV table index) does not go backwards.
        #expect(try cluster.servers[leader]!.run { try $0.reader.get("a/0").index } >= kvIndexBefore)
        #expect(try cluster.servers[leader]!.run { try $0.reader.appliedIndex() } == index)
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually(30) { try cluster.contents(id) == aKeys }, "server \(id)")
        }
        #expect(try cluster.servers[leader]!.run { $0.lastSnapshotIndex } >= index)

        // New writes work afterwards and reach everyone.
        let current = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: current, prefix: "c/", count: 10).acknowledgedKeys.count == 10)
        let after = try cluster.contents(current)
        #expect(after.count == 40)
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually(30) { try cluster.contents(id) == after }, "server \(id)")
        }

        // Every server restarts from its restored log with the same state.
        for id in [1, 2, 3] as [NodeID] { try cluster.stop(id) }
        for id in [1, 2, 3] as [NodeID] { try cluster.restart(id) }
        _ = try #require(try cluster.waitForLeader())
        for id in [1, 2, 3] as [NodeID] {
            #expect(try cluster.contents(id) == after, "server \(id)")
        }
    }

    @Test func aCorruptArchiveIsRefusedAndChangesNothing() throws {
        let cluster = try TestCluster(size: 3, config: .fastForTests())
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "a/", count: 10).acknowledgedKeys.count == 10)
        var saved = try archive(cluster, on: leader).archive
        #expect(try cluster.write(on: leader, prefix: "b/", count: 10).acknowledgedKeys.count == 10)
        let before = try cluster.contents(leader)
        let commitBefore = try cluster.servers[leader]!.run { $0.commitIndex }
        saved[saved.count / 2] ^= 0xFF
        for bad in [saved, Array("not a snapshot".utf8), []] {
            guard case let .failure(.invalidArchive(reason)) = try restore(cluster, on: leader, bad) else {
                Issue.record("a corrupt archive was not refused")
                continue
            }
            #expect(!reason.isEmpty)
        }
        #expect(try cluster.contents(leader) == before)
        #expect(try cluster.servers[leader]!.run { $0.commitIndex } == commitBefore)
        #expect(try cluster.servers[leader]!.run { $0.lastSnapshotIndex } < commitBefore)
        // A follower refuses (the agent forwards to the leader instead).
        let follower = try #require([1, 2, 3].first { $0 != leader } as NodeID?)
        guard case .failure(.failed(.notLeader)) = try restore(cluster, on: follower, saved) else {
            Issue.record("a follower accepted a restore")
            return
        }
        #expect(try cluster.write(on: leader, prefix: "c/", count: 5).acknowledgedKeys.count == 5)
    }
}
