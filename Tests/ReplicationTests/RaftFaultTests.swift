// A randomized fault run (hashicorp/raft's fuzzy tests in miniature): writes through random
// servers (forwarded to the leader) while servers stop, restart, and are cut off and healed.
// Real time and threads make a run not exactly replayable; the seed still picks the faults
// and is printed on failure.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

/// SplitMix64 (the package's TestSupport generator is not a dependency of this target).
struct FaultRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Raft replicator under faults", .serialized)
struct RaftFaultTests {
    /// Seeds 1...3 by default; RAFT_FAULT_SEEDS=N runs 1...N (for longer hunts).
    static let seeds: [UInt64] = Array(1 ... UInt64(ProcessInfo.processInfo.environment["RAFT_FAULT_SEEDS"].flatMap { UInt64($0) } ?? 3))

    /// `compacting`: tiny snapshot threshold and trailing logs, so restarted and partitioned
    /// servers often catch up through InstallSnapshot.
    @Test(arguments: seeds, [false, true])
    func acknowledgedWritesSurviveStopsRestartsAndPartitions(seed: UInt64, compacting: Bool) throws {
        var config = RaftReplicatorConfig.fastForTests()
        config.forwardTimeoutMilliseconds = 500
        if compacting {
            config.snapshotThreshold = 15
            config.trailingLogs = 3
            config.snapshotIntervalMilliseconds = 20
        }
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        _ = try #require(try cluster.waitForLeader())
        var random = FaultRandom(seed: seed)
        let outcomes = Outcomes()
        var partitioned: NodeID?
        var faults: [String] = []
        for round in 0 ..< 24 {
            let running = cluster.running.map(\.id)
            let target = running[Int(random.next() % UInt64(running.count))]
            switch random.next() % 6 {
            case 0 where running.count == 3 && partitioned == nil:
                try cluster.stop(target)
                faults.append("stop \(target)")
            case 1 where running.count < 3:
                let stopped = cluster.servers.keys.filter { !running.contains($0) }.sorted()[0]
                try cluster.restart(stopped)
                faults.append("restart \(stopped)")
            case 2 where partitioned == nil && running.count == 3:
                try cluster.servers[target]!.run { $0.transport.partitioned = true }
                partitioned = target
                faults.append("partition \(target)")
            case 3 where partitioned != nil:
                try cluster.servers[partitioned!]!.run { $0.transport.partitioned = false }
                faults.append("heal \(partitioned!)")
                partitioned = nil
            default:
                break
            }
            // Writes through any running server (followers forward); a quorum is always up.
            let writer = cluster.running.map(\.id)[Int(random.next() % UInt64(cluster.running.count))]
            let before = outcomes.count
            try cluster.servers[writer]!.run { r in
                for i in 0 ..< 10 {
                    let key = "r\(round)-\(i)"
                    r.submit(KVCommand.set(key: key, value: Array(key.utf8), flags: 0).encoded()) { outcomes.add(key, $0) }
                }
            }
            _ = eventually(3) { outcomes.count >= before + 10 }
        }
        if let p = partitioned { try cluster.servers[p]!.run { $0.transport.partitioned = false } }
        for id in cluster.servers.keys.sorted() where !cluster.servers[id]!.running { try cluster.restart(id) }
        let leader = try #require(try cluster.waitForLeader(), "seed \(seed): no leader after healing; faults \(faults)")
        #expect(try cluster.write(on: leader, prefix: "final", count: 5).acknowledgedKeys.count == 5)
        let acknowledged = outcomes.acknowledgedKeys
        #expect(acknowledged.count > 0)
        #expect(!faults.isEmpty, "seed \(seed) injected no fault")
        let expected = try cluster.contents(leader)
        let lost = acknowledged.filter { expected[$0] == nil }
        #expect(lost.isEmpty, "seed \(seed): acknowledged writes lost: \(lost.prefix(5)); faults \(faults)")
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually { try cluster.contents(id) == expected }, "seed \(seed): server \(id) diverged; faults \(faults)")
        }
    }
}
