// SWIM probing and suspicion rules on one member driven by hand (SWIM §4, §4.2).

import GossipCore
import Testing

@Suite("Probing and suspicion") struct ProbeTests {
    @Test func ackClearsTheProbe() {
        let h = Harness(others: ["b"])
        let ping = h.advanceToNextPing()
        #expect(ping.target == "b")
        h.receive([.ack(seq: ping.seq)], from: "b")
        h.clear()
        h.advance(by: 999)
        #expect(!h.sent.contains { if case .indirectPing = $0.message { true } else { false } })
        #expect(h.node.member(named: "b")?.state == .alive)
        #expect(h.node.stats.probesAcked == 1)
    }

    @Test func missingAckSendsPingReqToIndirectMembersAndATCPFallback() {
        let h = Harness(others: ["b", "c", "d", "e"])
        let ping = h.advanceToNextPing()
        h.clear()
        h.advance(to: ping.atMs + 499)
        #expect(h.sent.isEmpty || !h.sent.contains { if case .indirectPing = $0.message { true } else { false } })
        h.advance(to: ping.atMs + 500)
        let relays = h.sent.compactMap { s -> String? in
            if case let .indirectPing(seq, target, _, _, _, wantNack) = s.message, seq == ping.seq, target == ping.target, wantNack { s.to } else { nil }
        }
        #expect(relays.count == 3)
        #expect(!relays.contains(Harness.address(ping.target)))
        #expect(Set(relays).count == 3)
        #expect(h.streams.contains { $0.kind == .fallbackPing && $0.to == Harness.address(ping.target) })
    }

    @Test func noAckAtAllMakesTheTargetSuspect() {
        let h = Harness(others: ["b", "c", "d", "e"])
        let ping = h.advanceToNextPing()
        h.advance(to: ping.atMs + 999)
        #expect(h.node.member(named: ping.target)?.state == .alive)
        h.advance(to: ping.atMs + 1_000)
        #expect(h.node.member(named: ping.target)?.state == .suspect)
        #expect(h.node.stats.suspicionsRaised == 1)
        #expect(h.node.pendingBroadcasts >= 1)
    }

    @Test func indirectAckRelayedByAnotherMemberClearsTheProbe() {
        let h = Harness(others: ["b", "c", "d", "e"])
        let ping = h.advanceToNextPing()
        h.advance(to: ping.atMs + 500)
        let relay = h.sent.first { if case .indirectPing = $0.message { true } else { false } }!
        h.receive([.ack(seq: ping.seq)], from: String(relay.to.prefix(1)))
        h.advance(to: ping.atMs + 999)
        #expect(h.node.member(named: ping.target)?.state == .alive)
        #expect(h.node.stats.probesAcked == 1)
        #expect(h.node.healthScore == 0, "an indirect ack neither raises nor lowers our own health score")
    }

    @Test func tcpFallbackAckClearsTheProbe() {
        let h = Harness(others: ["b"])
        let ping = h.advanceToNextPing()
        h.advance(to: ping.atMs + 500)
        let stream = h.streams.first { $0.kind == .fallbackPing }!
        let reply = Harness(name: "b", others: ["a"]).node.receiveStream(stream.bytes, from: Harness.address("a"), nowMs: 0)
        #expect(reply != nil)
        h.node.streamResult(id: stream.id, reply: reply, nowMs: h.nowMs)
        h.advance(to: ping.atMs + 999)
        #expect(h.node.stats.probesAcked == 1)
        #expect(h.node.member(named: "b")?.state == .alive)
    }

    @Test func memberRelaysAPingReqAndForwardsTheAck() {
        let h = Harness(others: ["b", "c"])
        h.receive([.indirectPing(seq: 77, target: "c", targetAddress: Harness.address("c"), source: "b",
                                 sourceAddress: Harness.address("b"), wantNack: true)], from: "b")
        guard case let .ping(relaySeq, "c", _, _)? = h.sent.first(where: { $0.to == Harness.address("c") })?.message else {
            Issue.record("no relayed ping to c"); return
        }
        h.clear()
        h.receive([.ack(seq: relaySeq)], from: "c")
        #expect(h.sent.contains { $0.to == Harness.address("b") && $0.message == .ack(seq: 77) })
    }

    @Test func relaySendsANackWhenTheTargetStaysSilent() {
        let h = Harness(others: ["b", "c"])
        h.receive([.indirectPing(seq: 78, target: "c", targetAddress: Harness.address("c"), source: "b",
                                 sourceAddress: Harness.address("b"), wantNack: true)], from: "b")
        h.clear()
        h.advance(by: 500)
        #expect(h.sent.contains { $0.to == Harness.address("b") && $0.message == .nack(seq: 78) })
    }

    @Test func suspectedMemberRefutesWithAHigherIncarnation() {
        let h = Harness(others: ["b", "c"])
        h.receive([.suspect(incarnation: 0, node: "a", from: "b")], from: "b")
        #expect(h.node.incarnation == 1)
        #expect(h.node.stats.refutations == 1)
        h.clear()
        h.advance(by: 1_000)
        #expect(h.sent.contains { if case .alive(1, "a", _, _) = $0.message { true } else { false } })
    }

    @Test func aliveWithAHigherIncarnationClearsSuspicion() {
        let h = Harness(others: ["b", "c", "d"])
        h.receive([.suspect(incarnation: 0, node: "b", from: "c")], from: "c")
        #expect(h.node.member(named: "b")?.state == .suspect)
        h.receive([.alive(incarnation: 0, node: "b", address: Harness.address("b"), tags: [:])], from: "b")
        #expect(h.node.member(named: "b")?.state == .suspect, "the same incarnation does not refute")
        h.receive([.alive(incarnation: 1, node: "b", address: Harness.address("b"), tags: [:])], from: "b")
        #expect(h.node.member(named: "b")?.state == .alive)
        #expect(h.node.suspicionDeadlineMs(of: "b") == nil)
    }

    @Test func suspicionTimeoutDeclaresTheMemberFailed() {
        let h = Harness(others: ["b", "c", "d"])
        h.receive([.suspect(incarnation: 0, node: "b", from: "c")], from: "c")
        let deadline = h.node.suspicionDeadlineMs(of: "b")!
        h.clear()
        h.advance(to: deadline - 1)
        #expect(h.events.isEmpty)
        h.advance(to: deadline)
        #expect(h.node.member(named: "b")?.state == .dead)
        #expect(h.events.contains { if case let .failed(m) = $0 { m.name == "b" } else { false } })
    }

    @Test func independentConfirmationsShortenTheSuspicionTimeout() {
        // 10 members: min = 4 × log10(10) × 1 s = 4 s, max = 6 × min = 24 s, k = 4 - 2 = 2.
        let h = Harness(others: (1...9).map { "m\($0)" })
        h.receive([.suspect(incarnation: 0, node: "m1", from: "m2")], from: "m2")
        #expect(h.node.suspicionDeadlineMs(of: "m1") == 24_000)
        h.receive([.suspect(incarnation: 0, node: "m1", from: "m2")], from: "m2")
        #expect(h.node.suspicionDeadlineMs(of: "m1") == 24_000, "a repeat from the same member is not independent")
        h.receive([.suspect(incarnation: 0, node: "m1", from: "m3")], from: "m3")
        // 24 - log(2)/log(3) × 20 s
        #expect(h.node.suspicionDeadlineMs(of: "m1") == 11_381)
        h.receive([.suspect(incarnation: 0, node: "m1", from: "m4")], from: "m4")
        #expect(h.node.suspicionDeadlineMs(of: "m1") == 4_000)
    }

    @Test func gracefulLeaveGivesLeftNotFailed() {
        let h = Harness(others: ["b", "c"])
        h.receive([.dead(incarnation: 0, node: "b", from: "b")], from: "b")
        #expect(h.node.member(named: "b")?.state == .left)
        #expect(h.events.contains { if case let .leave(m) = $0 { m.name == "b" } else { false } })
        #expect(!h.events.contains { if case .failed = $0 { true } else { false } })

        let leaver = Harness(name: "b", others: ["a", "c"])
        try! leaver.node.leave(nowMs: 0)
        leaver.advance(by: 1_000)
        #expect(leaver.sent.contains { $0.message == .dead(incarnation: 0, node: "b", from: "b") })
    }

    @Test func failedMembersAreReapedAfterReconnectTimeoutAndLeftOnesAfterTombstoneTimeout() {
        // Probing off the path (a long interval) so reaping cannot ride on the probe round.
        let h = Harness(others: ["b", "c", "d"]) { c in
            c.reconnectTimeoutMs = 7_000; c.tombstoneTimeoutMs = 3_000
            c.probeIntervalMs = 600_000; c.probeTimeoutMs = 500
        }
        h.advance(to: 1_000)
        h.receive([.dead(incarnation: 0, node: "b", from: "c")], from: "c")  // failed at 1,000
        h.receive([.dead(incarnation: 0, node: "d", from: "d")], from: "d")  // left at 1,000
        func reaped() -> [String] { h.events.compactMap { if case let .reap(m) = $0 { m.name } else { nil } } }
        h.advance(to: 3_999)
        #expect(reaped().isEmpty)
        h.advance(to: 4_000)
        #expect(reaped() == ["d"])
        #expect(h.node.member(named: "d") == nil && h.node.member(named: "b")?.state == .dead)
        h.advance(to: 7_999)
        #expect(reaped() == ["d"])
        h.advance(to: 8_000)
        #expect(reaped() == ["d", "b"])
        #expect(h.node.members.map(\.name).sorted() == ["a", "c"])
        // A member that came back before its reap time is not reaped.
        h.receive([.dead(incarnation: 0, node: "c", from: "a")], from: "c")
        h.advance(by: 1_000)
        h.receive([.alive(incarnation: 1, node: "c", address: Harness.address("c"), tags: [:])], from: "c")
        h.advance(by: 20_000)
        #expect(reaped() == ["d", "b"])
        #expect(h.node.member(named: "c")?.state == .alive)
    }

    @Test func reapDefaultsAreSerfs() {
        let c = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        #expect(c.reconnectTimeoutMs == 72 * 3_600_000)
        #expect(c.tombstoneTimeoutMs == 24 * 3_600_000)
    }

    @Test func buddySystemPiggybacksTheSuspicionOnThePingToTheSuspect() {
        let h = Harness(others: ["b"])
        h.receive([.suspect(incarnation: 0, node: "b", from: "x")], from: "x")
        let ping = h.advanceToNextPing()
        #expect(ping.target == "b")
        #expect(h.sent.contains { $0.to == Harness.address("b") && { if case .suspect(0, "b", _) = $0 { true } else { false } }($0.message) })
    }
}
