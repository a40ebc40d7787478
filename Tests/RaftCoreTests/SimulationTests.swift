// Runs the simulator over many seeds. Defaults keep the normal test run fast; a longer sweep:
//   RAFT_SIM_SEEDS=5000 swift test --filter RaftCoreTests
// and one failing seed replays with RAFT_SIM_SEED=<seed>.

import Foundation
import RaftCore
import Testing

enum SimulationSeeds {
    static func seeds(defaultCount: Int, salt: UInt64) -> [UInt64] {
        let env = ProcessInfo.processInfo.environment
        if let one = env["RAFT_SIM_SEED"], let seed = UInt64(one) { return [seed] }
        let count = env["RAFT_SIM_SEEDS"].flatMap { Int($0) } ?? defaultCount
        return (0 ..< UInt64(count)).map { salt &+ $0 }
    }
}

@Suite struct SimulationTests {
    func runSeeds(_ seeds: [UInt64], options: SimulationOptions) {
        var totals = Simulation.Stats()
        for seed in seeds {
            noteSimulationSeed(slot: options.nodeCount % 4, seed: seed, nodeCount: options.nodeCount)
            let sim = Simulation(seed: seed, options: options)
            if let failure = sim.run() {
                Issue.record("\(failure)  (replay: RAFT_SIM_SEED=\(seed) swift test --filter RaftCoreTests)")
                return
            }
            totals.elections += sim.stats.elections
            totals.crashes += sim.stats.crashes
            totals.snapshotsSent += sim.stats.snapshotsSent
            totals.readsServed += sim.stats.readsServed
            totals.configurationChanges += sim.stats.configurationChanges
            totals.transfers += sim.stats.transfers
            totals.messages += sim.stats.messages
            totals.snapshotsInstalled += sim.stats.snapshotsInstalled
            totals.timeoutNowDelivered += sim.stats.timeoutNowDelivered
            totals.restores += sim.stats.restores
        }
        print("raft-sim nodes=\(options.nodeCount) seeds=\(seeds.count) \(totals)")
        if seeds.count >= 50, !options.restores {
            // The sweep must actually exercise every feature it claims to check.
            #expect(totals.crashes > 0)
            #expect(totals.snapshotsInstalled > 0)
            #expect(totals.readsServed > 0)
            #expect(totals.timeoutNowDelivered > 0)
            #expect(totals.configurationChanges > 0)
        }
    }

    @Test func sameSeedReplaysIdentically() {
        for seed: UInt64 in [11, 12] {
            let a = Simulation(seed: seed, options: SimulationOptions())
            let b = Simulation(seed: seed, options: SimulationOptions())
            #expect(a.run() == nil && b.run() == nil, "seed=\(seed)")
            #expect(a.stats == b.stats, "seed=\(seed)")
            #expect(a.committedTerms == b.committedTerms, "seed=\(seed)")
            #expect(a.appliedHashes == b.appliedHashes, "seed=\(seed)")
        }
    }

    @Test func threeNodeClusterStaysSafeAndLiveUnderFaults() {
        var options = SimulationOptions()
        options.nodeCount = 3
        runSeeds(SimulationSeeds.seeds(defaultCount: 200, salt: 3_000_000), options: options)
    }

    /// User restores (RaftNode.restoreSnapshot) with reordered, delayed and duplicated messages,
    /// membership changes, reads and compaction, but no crashes, partitions, drops or
    /// leadership transfers (see SimulationOptions.restores for why).
    @Test func clusterStaysSafeAndLiveWithUserRestores() {
        var options = SimulationOptions()
        options.nodeCount = 3
        options.restores = true
        options.crashes = false
        options.partitions = false
        options.dropPercent = 0
        // A delayed TimeoutNow of an aborted transfer can elect a follower without the point.
        options.transfers = false
        var restores = 0
        var installs = 0
        for seed in SimulationSeeds.seeds(defaultCount: 100, salt: 7_000_000) {
            let sim = Simulation(seed: seed, options: options)
            if let failure = sim.run() {
                Issue.record("\(failure)  (replay: RAFT_SIM_SEED=\(seed) swift test --filter RaftCoreTests)")
                return
            }
            restores += sim.stats.restores
            installs += sim.stats.snapshotsInstalled
        }
        print("raft-sim restores=\(restores) snapshotsInstalled=\(installs)")
        #expect(restores > 0)
        #expect(installs > restores)
    }

    @Test func fiveNodeClusterStaysSafeAndLiveUnderFaults() {
        var options = SimulationOptions()
        options.nodeCount = 5
        runSeeds(SimulationSeeds.seeds(defaultCount: 120, salt: 5_000_000), options: options)
    }
}
