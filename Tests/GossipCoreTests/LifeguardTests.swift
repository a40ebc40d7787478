// Lifeguard (Dadgar et al.): local health awareness and nacks, on one member driven by hand.

import GossipCore
import Testing

@Suite("Lifeguard awareness") struct LifeguardTests {
    @Test func missedNacksRaiseTheScoreAndStretchTheProbeTimeout() {
        let h = Harness(others: ["b", "c", "d", "e"])
        let first = h.advanceToNextPing()
        h.advance(to: first.atMs + 999)
        h.clear()
        h.advance(to: first.atMs + 1_000)  // no ack, no nacks from 3 relays: the next probe starts
        #expect(h.node.healthScore == 3)
        let secondSeq = first.seq + 1
        #expect(h.sent.contains { if case .ping(secondSeq, _, _, _) = $0.message { true } else { false } })
        let pingReq = { (h: Harness) in h.sent.contains { if case .indirectPing(secondSeq, _, _, _, _, _) = $0.message { true } else { false } } }
        // Timeout is now 500 ms × (3 + 1) = 2 s: no ping-req before that.
        h.advance(to: first.atMs + 1_000 + 1_999)
        #expect(!pingReq(h))
        h.advance(to: first.atMs + 1_000 + 2_000)
        #expect(pingReq(h))
        // And the probe lasts interval × 4 = 4 s before its target is suspected.
        #expect(h.node.stats.probesFailed == 1)
        h.advance(to: first.atMs + 1_000 + 3_999)
        #expect(h.node.stats.probesFailed == 1)
        h.advance(to: first.atMs + 1_000 + 4_000)
        #expect(h.node.stats.probesFailed == 2)
    }

    @Test func nacksFromRelaysMeanWeAreHealthySoTheScoreStays() {
        let h = Harness(others: ["b", "c", "d", "e"])
        let ping = h.advanceToNextPing()
        h.advance(to: ping.atMs + 500)
        for relay in h.sent.compactMap({ s -> String? in if case .indirectPing = s.message { s.to } else { nil } }) {
            h.receive([.nack(seq: ping.seq)], from: String(relay.prefix(1)))
        }
        h.advance(to: ping.atMs + 1_000)
        #expect(h.node.member(named: ping.target)?.state == .suspect)
        #expect(h.node.healthScore == 0)
    }

    @Test func successfulProbesLowerTheScore() {
        let h = Harness(others: ["b"])
        h.receive([.suspect(incarnation: 0, node: "a", from: "b")], from: "b")
        h.receive([.suspect(incarnation: 1, node: "a", from: "b")], from: "b")
        #expect(h.node.healthScore == 2, "each refutation raises the score")
        for expected in [1, 0, 0] {
            let ping = h.advanceToNextPing()
            h.receive([.ack(seq: ping.seq)], from: "b")
            #expect(h.node.healthScore == expected)
        }
    }

    @Test func scoreIsCappedBelowTheMaxMultiplier() {
        let h = Harness(others: ["b"])
        for inc in UInt32(0)..<20 { h.receive([.suspect(incarnation: inc, node: "a", from: "b")], from: "b") }
        #expect(h.node.healthScore == 7)
    }

    @Test func awarenessDisabledKeepsTheScoreAtZero() {
        let h = Harness(others: ["b"]) { $0.awarenessMaxMultiplier = 1 }
        h.receive([.suspect(incarnation: 0, node: "a", from: "b")], from: "b")
        #expect(h.node.healthScore == 0)
    }
}
