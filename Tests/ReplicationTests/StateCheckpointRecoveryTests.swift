// The state store commits without fsync (EnvironmentCheckpoint): a server whose data dir is a
// crash image taken long after its last checkpoint rolls its state back to that checkpoint and
// replays the rest from its log.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Storage
import Testing

@Suite("State checkpoint recovery", .serialized)
struct StateCheckpointRecoveryTests {
    @Test func aCrashImageRollsTheStateBackToItsCheckpointAndReplaysTheLog() throws {
        var config = RaftReplicatorConfig.fastForTests()
        // No periodic checkpoint: only the one each server takes when it opens its state.
        config.stateCheckpointIntervalMilliseconds = 3_600_000
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let outcomes = try cluster.write(on: leader, prefix: "c", count: 300)
        #expect(outcomes.acknowledgedKeys.count == 300)
        let expected = try cluster.contents(leader)
        #expect(try eventually { try cluster.contents(follower) == expected })

        // A crash image: the files as the page cache holds them now, with no final checkpoint.
        let directory = cluster.servers[follower]!.dataDirectory
        let image = directory + "-image"
        let probe = directory + "-probe"
        defer {
            try? FileManager.default.removeItem(atPath: image)
            try? FileManager.default.removeItem(atPath: probe)
        }
        try FileManager.default.copyItem(atPath: directory, toPath: image)
        try FileManager.default.copyItem(atPath: directory, toPath: probe)
        let recovery = try EnvironmentCheckpoint.recover(directory: DataLayout.stateDirectory(probe))
        guard case let .rolledBack(from, to) = recovery else {
            Issue.record("expected a rollback, got \(recovery)")
            return
        }
        #expect(from > to)
        let probeEnvironment = try Environment(directory: DataLayout.stateDirectory(probe), durability: .noSync)
        let rolledBack = try StateStore(environment: probeEnvironment)
        #expect(try rolledBack.list(prefix: "c").entries.isEmpty, "the checkpoint predates every write")
        probeEnvironment.close()

        try cluster.stop(follower)
        try FileManager.default.removeItem(atPath: directory)
        try FileManager.default.moveItem(atPath: image, toPath: directory)
        try cluster.restart(follower)
        #expect(try eventually { try cluster.contents(follower) == expected }, "the log replays the writes")
        // And it keeps up with new writes.
        #expect(try cluster.write(on: leader, prefix: "d", count: 50).acknowledgedKeys.count == 50)
        let after = try cluster.contents(leader)
        #expect(try eventually { try cluster.contents(follower) == after })
    }
}
