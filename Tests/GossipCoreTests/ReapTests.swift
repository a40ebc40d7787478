// Reaping in simulation: every member forgets a failed member after reconnectTimeoutMs and a
// left member after tombstoneTimeoutMs, each exactly once, on its own timer.

import GossipCore
import Testing
import TestSupport

@Suite("Reap in simulation") struct ReapSimulationTests {
    @Test func everyMemberReapsTheFailedAndTheLeftMemberOnceAfterTheirTimeouts() throws {
        let seed = simulationSeed(404, "reap")
        let sim = Simulator(seed: seed)
        let n = 20
        sim.startWarmCluster(count: n) { c in
            c.pushPullIntervalMs = 0; c.reconnectTimeoutMs = 40_000; c.tombstoneTimeoutMs = 10_000
        }
        sim.run(untilMs: 2_000)
        var failedAt: [Int: Int64] = [:], leftAt: [Int: Int64] = [:]
        var reapedFailed: [Int: [Int64]] = [:], reapedLeft: [Int: [Int64]] = [:]
        sim.onEvent = { observer, event, at in
            switch event {
            case let .failed(m) where m.name == "n1": failedAt[observer] = at
            case let .leave(m) where m.name == "n2": leftAt[observer] = at
            case let .reap(m) where m.name == "n1": reapedFailed[observer, default: []].append(at)
            case let .reap(m) where m.name == "n2": reapedLeft[observer, default: []].append(at)
            default: break
            }
        }
        sim.kill(1)
        sim.perform(2) { try! $0.leave(nowMs: sim.nowMs) }
        sim.run(untilMs: 100_000)
        let observers = Set(0..<n).subtracting([1, 2])
        #expect(Set(reapedFailed.keys).subtracting([2]) == observers, "seed=\(seed)")  // n2 left but still hears gossip
        #expect(Set(reapedLeft.keys) == observers, "seed=\(seed)")
        for i in observers {
            let f = try #require(failedAt[i]), l = try #require(leftAt[i])
            // Exactly once, on the tick at the timeout (timers run at least every gossip interval).
            #expect(reapedFailed[i]!.count == 1 && reapedFailed[i]![0] >= f + 40_000 && reapedFailed[i]![0] <= f + 40_001)
            #expect(reapedLeft[i]!.count == 1 && reapedLeft[i]![0] >= l + 10_000 && reapedLeft[i]![0] <= l + 10_001)
            #expect(sim.node(i).member(named: "n1") == nil && sim.node(i).member(named: "n2") == nil)
        }
    }
}
