// Snapshots in a real in-process cluster (TCP on 127.0.0.1, LMDB in temp dirs): logs are
// compacted past a threshold, a follower that missed compacted entries catches up through an
// InstallSnapshot stream, and servers restart from compacted or restored logs.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

@Suite("Raft snapshots in a cluster", .serialized)
struct RaftSnapshotClusterTests {
    static var config: RaftReplicatorConfig {
        var config = RaftReplicatorConfig.fastForTests()
        config.snapshotThreshold = 20
        config.trailingLogs = 5
        config.snapshotIntervalMilliseconds = 20
        // Several chunks per stream, so the stream's framing and backpressure are exercised.
        config.snapshotChunkBytes = 1 << 10
        config.snapshotWindowBytes = 4 << 10
        return config
    }

    @Test(arguments: [0, 5] as [UInt64])
    func aFollowerBehindTheCompactionPointCatchesUpThroughInstallSnapshot(trailingLogs: UInt64) throws {
        var config = Self.config
        config.trailingLogs = trailingLogs
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(cluster.running.map(\.id).first { $0 != leader })
        #expect(try cluster.write(on: leader, prefix: "a/", count: 10).acknowledgedKeys.count == 10)
        #expect(try eventually { try cluster.contents(follower).count == 10 })
        try cluster.stop(follower)
        // Every write so far is acknowledged, so the follower's log ends at or before this.
        let followerLast = try cluster.servers[leader]!.run { $0.commitIndex }
        let others = cluster.running.map(\.id)

        #expect(try cluster.write(on: leader, prefix: "b/", count: 300).acknowledgedKeys.count == 300)
        // Both other servers compact past everything the stopped follower has, so whichever
        // leads when it returns (a slow machine may change leaders) must send a snapshot.
        for id in others {
            #expect(try eventually { try cluster.servers[id]!.run { $0.lastSnapshotIndex } > followerLast + 1 }, "server \(id)")
        }

        try cluster.restart(follower)
        let expected = try cluster.contents(leader)  // it applied every write it acknowledged
        #expect(expected.count == 310)
        #expect(try eventually(30) { try cluster.contents(follower) == expected })
        // The state is readable as soon as the load commits; the counters follow on the loop.
        #expect(try eventually { try cluster.servers[follower]!.run { $0.snapshotsInstalled } >= 1 })
        #expect(try eventually { try others.map { id in try cluster.servers[id]!.run { $0.snapshotsSent } }.reduce(0, +) >= 1 })
        // The streams' temporary files are gone on both sides.
        for id in [leader, follower] {
            let directory = DataLayout.snapshotTempDirectory(cluster.servers[id]!.dataDirectory)
            #expect(eventually { ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? ["?"]).isEmpty }, "server \(id)")
        }

        // Replication carries on after the snapshot point.
        let leaderNow = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leaderNow, prefix: "c/", count: 50).acknowledgedKeys.count == 50)
        let after = try cluster.contents(leaderNow)
        #expect(try eventually(30) { try cluster.contents(follower) == after })

        // The follower restarts from its restored log (snapshot point, then entries).
        try cluster.stop(follower)
        try cluster.restart(follower)
        #expect(try cluster.servers[follower]!.run { $0.lastSnapshotIndex } > 0)
        #expect(try eventually(30) { try cluster.contents(follower) == after })
    }

    @Test func aNewServerJoiningAfterCompactionGetsTheStateThroughASnapshot() throws {
        let cluster = try TestCluster(size: 3, config: Self.config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "old/", count: 100).acknowledgedKeys.count == 100)
        #expect(try eventually { try cluster.servers[leader]!.run { $0.lastSnapshotIndex } > 50 })
        let address = try cluster.startJoiningServer(4)
        let added = try cluster.membershipChange(on: leader) { r, done in r.addServer(4, address: address, completion: done) }
        #expect(throws: Never.self) { try added?.get() }
        #expect(try eventually { try cluster.servers[4]!.run { $0.configuration.voters } == [1, 2, 3, 4] })
        #expect(try eventually { try cluster.servers[4]!.run { $0.snapshotsInstalled } >= 1 })
        // The new server knows every address although the entries carrying them were compacted.
        #expect(try eventually { try cluster.servers[4]!.run { Set($0.peers.keys) } == [1, 2, 3, 4] })
        let current = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: current, prefix: "new/", count: 20).acknowledgedKeys.count == 20)
        let expected = try cluster.contents(current)
        #expect(expected.count == 120)
        #expect(try eventually(30) { try cluster.contents(4) == expected })
    }

    /// With no trailing logs the snapshot point may sit past the state's last command (no-op,
    /// configuration and address entries are not commands): a restart must accept that.
    @Test(arguments: [0, 5] as [UInt64])
    func everyServerRestartsFromACompactedLog(trailingLogs: UInt64) throws {
        var config = Self.config
        config.trailingLogs = trailingLogs
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "k/", count: 200).acknowledgedKeys.count == 200)
        let expected = try cluster.contents(leader)
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually { try cluster.servers[id]!.run { $0.lastSnapshotIndex } > 100 }, "server \(id)")
        }
        for id in [1, 2, 3] as [NodeID] { try cluster.stop(id) }
        for id in [1, 2, 3] as [NodeID] { try cluster.restart(id) }
        let newLeader = try #require(try cluster.waitForLeader())
        for id in [1, 2, 3] as [NodeID] {
            #expect(try cluster.servers[id]!.run { $0.lastSnapshotIndex } > 100, "server \(id)")
            #expect(try cluster.contents(id) == expected, "server \(id)")
        }
        #expect(try cluster.write(on: newLeader, prefix: "more/", count: 30).acknowledgedKeys.count == 30)
        let after = try cluster.contents(newLeader)
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually { try cluster.contents(id) == after }, "server \(id)")
        }
    }
}
