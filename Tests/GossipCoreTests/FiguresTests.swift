// The figures for the issue: join convergence and failure detection at 100 / 1,000 / 5,000
// members in virtual time, next to SWIM's analytic expectation and memberlist's timeouts.
//   GOSSIP_SIM_FIGURES=1 swift test --filter GossipCoreTests.FiguresTests            (100, 1,000)
//   GOSSIP_SIM_FIGURES=1 GOSSIP_SIM_LARGE=1 swift test -c release --filter GossipCoreTests.FiguresTests
// GOSSIP_SIM_LARGE=1 alone also runs the 5,000-member assertions in LargeSimulationTests.

import GossipCore
import Testing

private func fmt(_ ms: Int64?) -> String { ms.map { "\(Double($0) / 1_000) s" } ?? "n/a" }
private func fmt(_ x: Double, _ digits: Int = 2) -> String {
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    return "\((x * p).rounded() / p)"
}
private func ln(_ x: Double) -> Double {
    // Enough for printing: ln via repeated square roots.
    var v = x, k = 0.0
    while v > 1.001 { v = v.squareRoot(); k += 1 }
    var p = 1.0
    for _ in 0..<Int(k) { p *= 2 }
    return (v - 1 - (v - 1) * (v - 1) / 2) * p
}

@Suite("Figures") struct FiguresTests {
    static var sizes: [Int] { environment("GOSSIP_SIM_LARGE") != nil ? [100, 1_000, 5_000] : [100, 1_000] }

    @Test(.enabled(if: environment("GOSSIP_SIM_FIGURES") != nil))
    func printJoinAndFailureFigures() {
        let c = GossipConfig.lan(name: "x", address: "x", randomSeed: 0)
        print("""
        LAN profile: probe interval \(c.probeIntervalMs) ms, probe timeout \(c.probeTimeoutMs) ms, gossip interval \
        \(c.gossipIntervalMs) ms × \(c.gossipNodes) members, suspicion mult \(c.suspicionMult) (max × \(c.suspicionMaxTimeoutMult)), \
        retransmit mult \(c.retransmitMult); network 1-3 ms, no loss; seeds 1...\(3)
        """)
        for n in Self.sizes {
            let seeds: [UInt64] = n >= 5_000 ? [1] : [1, 2, 3]
            let joins = seeds.map { Scenarios.join(members: n, seed: $0) }
            let failures = seeds.map { Scenarios.failure(members: n, seed: $0) }
            let minS = GossipMath.suspicionTimeoutMs(mult: c.suspicionMult, members: n, probeIntervalMs: c.probeIntervalMs)
            let maxS = Int64(c.suspicionMaxTimeoutMult) * minS
            let epidemicRounds = ln(Double(n)) / ln(Double(c.gossipNodes + 1))
            print("""
            n=\(n)
              join → known by all:   \(joins.map { fmt($0.convergedMs) }.joined(separator: ", ")) \
            (= \(joins.map { fmt($0.rounds ?? -1, 1) }.joined(separator: ", ")) gossip rounds); \
            SWIM/epidemic expectation O(log N): log_\(c.gossipNodes + 1)(N) = \(fmt(epidemicRounds, 1)) rounds, ln N = \(fmt(ln(Double(n)), 1))
              kill → first suspicion: \(failures.map { fmt($0.firstSuspicionMs) }.joined(separator: ", ")) \
            (SWIM: first probe of the victim after 1/(1-e^-1) ≈ 1.58 periods on average, plus the 1 s probe itself)
              kill → first failed:    \(failures.map { fmt($0.firstFailedMs) }.joined(separator: ", "))
              kill → failed by all:   \(failures.map { fmt($0.allFailedMs) }.joined(separator: ", ")) \
            (memberlist suspicion timeout for n: min \(fmt(minS)), max \(fmt(maxS)); k = \(c.suspicionMult - 2) confirmations bring it to min)
              false failures: \(failures.map(\.falseFailures))
            """)
        }
    }
}

@Suite("Large simulation") struct LargeSimulationTests {
    @Test(.enabled(if: environment("GOSSIP_SIM_LARGE") != nil))
    func fiveThousandMembersConvergeAndDetectFailure() throws {
        let n = 5_000
        let join = Scenarios.join(members: n, seed: simulationSeed(5_000, "large join"))
        let rounds = try #require(join.rounds)
        #expect(rounds <= 3 * GossipMathTestHelpers.log2(Double(n)))
        let failure = Scenarios.failure(members: n, seed: simulationSeed(5_001, "large failure"))
        let all = try #require(failure.allFailedMs)
        let maxS = 6 * GossipMath.suspicionTimeoutMs(mult: 4, members: n, probeIntervalMs: 1_000)
        #expect(all <= 10_000 + maxS)
        #expect(failure.falseFailures == 0)
    }
}
