// Scenario drivers shared by the simulation tests and the figures: each builds a cluster
// in the simulator, injects one fault and measures in virtual time.

import GossipCore
import TestSupport

struct JoinMeasurement {
    var members: Int
    /// Virtual ms from the join call until every member reported `join` for the newcomer.
    var convergedMs: Int64?
    var gossipIntervalMs: Int64
    var rounds: Double? { convergedMs.map { Double($0) / Double(gossipIntervalMs) } }
}

struct FailureMeasurement {
    var members: Int
    /// Virtual ms from the kill until the first member suspected the victim.
    var firstSuspicionMs: Int64?
    /// ... until the first member declared it failed, and until all members had.
    var firstFailedMs: Int64?
    var allFailedMs: Int64?
    var probeIntervalMs: Int64
    var falseFailures: Int
}

enum Scenarios {
    static func join(members n: Int, seed: UInt64, network: NetworkModel = NetworkModel()) -> JoinMeasurement {
        let sim = Simulator(seed: seed, network: network)
        sim.startWarmCluster(count: n - 1) { $0.pushPullIntervalMs = 0 }
        sim.run(untilMs: 2_000)
        let newcomer = Simulator.name(n - 1)
        var knowers = Set<Int>()
        sim.onEvent = { observer, event, _ in
            if case let .join(m) = event, m.name == newcomer { knowers.insert(observer) }
        }
        let start = sim.nowMs
        let j = sim.addMember { $0.pushPullIntervalMs = 0 }
        let seedMember = Int.random(in: 0..<(n - 1), using: &sim.rng)
        sim.perform(j) { $0.join(addresses: [Simulator.address(seedMember)], nowMs: sim.nowMs) }
        let done = sim.run(untilMs: start + 120_000, checkEveryMs: 10) {
            knowers.count == n - 1 && sim.node(j).members.count == n
        }
        return JoinMeasurement(members: n, convergedMs: done ? sim.nowMs - start : nil, gossipIntervalMs: sim.node(0).config.gossipIntervalMs)
    }

    static func failure(members n: Int, seed: UInt64, network: NetworkModel = NetworkModel()) -> FailureMeasurement {
        let sim = Simulator(seed: seed, network: network)
        sim.startWarmCluster(count: n) { $0.pushPullIntervalMs = 0 }
        sim.run(untilMs: 2_000)
        let victimIndex = Int.random(in: 0..<n, using: &sim.rng)
        let victim = Simulator.name(victimIndex)
        var failedBy = Set<Int>()
        var falseFailures = 0
        var firstFailed: Int64?
        let start = sim.nowMs
        sim.onEvent = { observer, event, at in
            guard case let .failed(m) = event else { return }
            if m.name == victim {
                failedBy.insert(observer)
                if firstFailed == nil { firstFailed = at - start }
            } else {
                falseFailures += 1
            }
        }
        sim.kill(victimIndex)
        var firstSuspicion: Int64?
        let done = sim.run(untilMs: start + 300_000, checkEveryMs: 50) {
            if firstSuspicion == nil {
                for i in 0..<n where i != victimIndex && sim.node(i).member(named: victim)?.state != .alive {
                    firstSuspicion = sim.nowMs - start
                    break
                }
            }
            return failedBy.count == n - 1
        }
        return FailureMeasurement(members: n, firstSuspicionMs: firstSuspicion, firstFailedMs: firstFailed,
                                  allFailedMs: done ? sim.nowMs - start : nil,
                                  probeIntervalMs: sim.node(0).config.probeIntervalMs, falseFailures: falseFailures)
    }
}
