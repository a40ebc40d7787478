// Dissemination (broadcast queue, piggybacking, MTU), push-pull, tags, and the Config.

import GossipCore
import Testing

@Suite("Dissemination") struct DisseminationTests {
    @Test(arguments: [(4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (4, 1_000, 16), (2, 5_000, 8)])
    func retransmitLimitIsMultTimesCeilLog10OfNPlusOne(mult: Int, members: Int, limit: Int) {
        #expect(GossipMath.retransmitLimit(mult: mult, members: members) == limit)
    }

    @Test func eachUpdateIsSentNoMoreThanTheRetransmitLimit() {
        // 3 members: limit = 4 × ceil(log10(4)) = 4.
        let h = Harness(others: ["b", "c"])
        h.receive([.alive(incarnation: 1, node: "b", address: Harness.address("b"), tags: ["v": "2"])], from: "b")
        h.clear()
        h.advance(by: 60_000)
        let copies = h.sent.filter { if case .alive(1, "b", _, _) = $0.message { true } else { false } }.count
        #expect(copies == 4)
        #expect(h.node.pendingBroadcasts == 0)
    }

    @Test func newerUpdateAboutAMemberReplacesTheQueuedOne() {
        let h = Harness(others: ["b", "c"])
        h.receive([.alive(incarnation: 1, node: "b", address: Harness.address("b"), tags: [:])], from: "b")
        h.receive([.suspect(incarnation: 1, node: "b", from: "c")], from: "c")
        #expect(h.node.pendingBroadcasts == 1)
        h.clear()
        h.advance(by: 60_000)
        #expect(!h.sent.contains { if case .alive(1, "b", _, _) = $0.message { true } else { false } })
    }

    @Test func compoundPacketsStayUnderTheMTU() {
        let h = Harness(others: ["b"])
        let tags = ["role": String(repeating: "x", count: 100)]
        for i in 0..<200 {
            h.receive([.alive(incarnation: 0, node: "m\(i)", address: "10.0.0.\(i):7946", tags: tags)], from: "b")
        }
        h.clear()
        h.advance(by: 5_000)
        var compounds = 0
        for case let .sendPacket(_, bytes) in h.effects {
            #expect(bytes.count <= 1_400)
            if bytes.first == 9 { compounds += 1 }
        }
        #expect(compounds > 0)
    }

    @Test func broadcastQueueHasAHardMaximum() {
        let h = Harness(others: ["b"]) { $0.maxBroadcastQueueLength = 16; $0.gossipNodes = 0 }
        for i in 0..<100 { h.receive([.alive(incarnation: 0, node: "m\(i)", address: "m\(i):1", tags: [:])], from: "b") }
        #expect(h.node.pendingBroadcasts == 16)
    }

    @Test func pushPullMergesStateWithIncarnationPrecedence() {
        let h = Harness(others: ["b", "c", "d"])
        let remote: [MemberSnapshot] = [
            MemberSnapshot(name: "b", address: Harness.address("b"), incarnation: 3, state: .alive, tags: ["dc": "x"]),
            MemberSnapshot(name: "c", address: Harness.address("c"), incarnation: 0, state: .left, tags: [:]),
            MemberSnapshot(name: "d", address: Harness.address("d"), incarnation: 0, state: .dead, tags: [:]),
            MemberSnapshot(name: "e", address: Harness.address("e"), incarnation: 0, state: .alive, tags: [:]),
        ]
        let reply = h.node.receiveStream(GossipWire.encode(.pushPull(join: true, members: remote)), from: Harness.address("b"), nowMs: 0)
        h.collect()
        #expect(h.node.member(named: "b")?.incarnation == 3)
        #expect(h.node.member(named: "b")?.tags == ["dc": "x"])
        #expect(h.node.member(named: "c")?.state == .left)
        #expect(h.node.member(named: "d")?.state == .suspect, "a remote `dead` only makes us suspect")
        #expect(h.node.member(named: "e")?.state == .alive)
        #expect(h.events.contains { if case let .join(m) = $0 { m.name == "e" } else { false } })
        guard let reply, case let .pushPull(false, ours) = try? GossipWire.decodeMessage(reply) else {
            Issue.record("no push-pull reply"); return
        }
        #expect(Set(ours.map(\.name)) == ["a", "b", "c", "d"], "the reply is our state before the merge")
    }

    @Test func joinExchangesStateAndLearnsTheCluster() {
        let seedMember = Harness(name: "b", others: ["c", "d"])
        let joiner = Harness(name: "a", others: [])
        joiner.node.join(addresses: [Harness.address("b")], nowMs: 0)
        joiner.collect()
        let stream = joiner.streams.first!
        #expect(stream.kind == .pushPull)
        let reply = seedMember.node.receiveStream(stream.bytes, from: Harness.address("a"), nowMs: 0)
        joiner.node.streamResult(id: stream.id, reply: reply, nowMs: 0)
        #expect(joiner.node.members.count == 4)
        #expect(seedMember.node.member(named: "a")?.state == .alive)
    }

    @Test func periodicPushPullScalesWithClusterSize() {
        #expect(GossipMath.pushPullIntervalMs(base: 30_000, members: 32) == 30_000)
        #expect(GossipMath.pushPullIntervalMs(base: 30_000, members: 33) == 60_000)
        #expect(GossipMath.pushPullIntervalMs(base: 30_000, members: 64) == 60_000)
        #expect(GossipMath.pushPullIntervalMs(base: 30_000, members: 1_000) == 180_000)
        // Probes slowed down so that the unanswered probes of `b` do not get it declared dead first.
        let h = Harness(others: ["b"]) { $0.pushPullIntervalMs = 30_000; $0.probeIntervalMs = 100_000 }
        h.advance(by: 30_000)
        #expect(h.streams.contains { $0.kind == .pushPull && $0.to == Harness.address("b") })
    }

    @Test func tagsUpdateGivesAnUpdateEventAndAHigherIncarnation() throws {
        let h = Harness(others: ["b"])
        h.receive([.alive(incarnation: 1, node: "b", address: Harness.address("b"), tags: ["role": "web"])], from: "b")
        #expect(h.events.contains { if case let .update(m) = $0 { m.name == "b" && m.tags == ["role": "web"] } else { false } })

        try h.node.updateTags(["role": "db"], nowMs: h.nowMs)
        #expect(h.node.incarnation == 1)
        h.clear()
        h.advance(by: 1_000)
        #expect(h.sent.contains { $0.message == .alive(incarnation: 1, node: "a", address: Harness.address("a"), tags: ["role": "db"]) })
        #expect(throws: GossipError.tagsTooLarge(size: 601, limit: 512)) {
            try h.node.updateTags(["k": String(repeating: "v", count: 600)], nowMs: h.nowMs)
        }
    }

    @Test func aliveWithTagsOverTheLimitIsIgnored() {
        let h = Harness(others: ["b"])
        h.receive([.alive(incarnation: 5, node: "b", address: Harness.address("b"), tags: ["k1": String(repeating: "v", count: 300), "k2": String(repeating: "v", count: 300)])], from: "b")
        #expect(h.node.member(named: "b")?.incarnation == 0)
        #expect(h.node.stats.rejectedUpdates == 1)
    }
}

@Suite("Config") struct ConfigTests {
    @Test func profilesMatchMemberlistDefaults() {
        let lan = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        #expect([lan.probeIntervalMs, lan.probeTimeoutMs, lan.gossipIntervalMs, lan.pushPullIntervalMs] == [1_000, 500, 200, 30_000])
        #expect([lan.suspicionMult, lan.suspicionMaxTimeoutMult, lan.retransmitMult, lan.gossipNodes, lan.indirectChecks,
                 lan.awarenessMaxMultiplier, lan.udpBufferSizeBytes] == [4, 6, 4, 3, 3, 8, 1_400])
        let wan = GossipConfig.wan(name: "a", address: "a:1", randomSeed: 0)
        #expect([wan.probeIntervalMs, wan.probeTimeoutMs, wan.gossipIntervalMs, wan.pushPullIntervalMs] == [5_000, 3_000, 500, 60_000])
        #expect([wan.suspicionMult, wan.gossipNodes] == [6, 4])
        let local = GossipConfig.local(name: "a", address: "a:1", randomSeed: 0)
        #expect([local.probeIntervalMs, local.probeTimeoutMs, local.gossipIntervalMs, local.pushPullIntervalMs] == [1_000, 200, 100, 15_000])
        #expect([local.suspicionMult, local.retransmitMult, local.indirectChecks] == [3, 2, 1])
        for c in [lan, wan, local] { #expect(throws: Never.self) { try c.validate() } }
    }

    @Test func validateNamesTheBadField() {
        var c = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        c.probeTimeoutMs = 5_000
        #expect(throws: GossipConfigError.invalid(field: "probeTimeoutMs", reason: "must be in 1...probeIntervalMs")) { try c.validate() }
        c = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        c.udpBufferSizeBytes = 100
        #expect(throws: GossipConfigError.invalid(field: "udpBufferSizeBytes", reason: "must be in 512...65000")) { try c.validate() }
        c = GossipConfig.lan(name: "", address: "a:1", randomSeed: 0)
        #expect(throws: GossipConfigError.self) { try Memberlist(config: c) }
    }

    @Test func suspicionTimeoutFollowsMemberlistsFormula() {
        #expect(GossipMath.suspicionTimeoutMs(mult: 4, members: 1, probeIntervalMs: 1_000) == 4_000)
        #expect(GossipMath.suspicionTimeoutMs(mult: 4, members: 100, probeIntervalMs: 1_000) == 8_000)
        #expect(GossipMath.suspicionTimeoutMs(mult: 4, members: 1_000, probeIntervalMs: 1_000) == 12_000)
        #expect(GossipMath.suspicionTimeoutMs(confirmations: 0, expected: 2, minMs: 12_000, maxMs: 72_000) == 72_000)
        #expect(GossipMath.suspicionTimeoutMs(confirmations: 2, expected: 2, minMs: 12_000, maxMs: 72_000) == 12_000)
        #expect(GossipMath.suspicionTimeoutMs(confirmations: 0, expected: 0, minMs: 12_000, maxMs: 72_000) == 12_000)
    }
}
