// The Serf layer's user events: Lamport clock, de-duplication window, size limit, priority
// behind member updates, and delivery to every member exactly once in simulation.

import GossipCore
import Testing
import TestSupport

extension Harness {
    var userEvents: [(name: String, payload: [UInt8], ltime: UInt64)] {
        events.compactMap { if case let .user(n, p, l, _) = $0 { (n, p, l) } else { nil } }
    }
}

@Suite("Serf user events") struct SerfEventTests {
    @Test func firingStampsTheLamportClockAndDeliversLocallyAndGossips() throws {
        let h = Harness(others: ["b", "c"])
        #expect(h.node.eventLamportTime == 0)
        try h.node.fireUserEvent(name: "deploy", payload: [1, 2], coalesce: false, nowMs: h.nowMs)
        h.collect()
        #expect(h.events == [.user(name: "deploy", payload: [1, 2], ltime: 0, coalesce: false)])
        #expect(h.node.eventLamportTime == 1)
        // Receiving a later time moves the clock past it; the next fire is stamped after it.
        h.receive([.userEvent(ltime: 100, name: "x", payload: [], coalesce: true)], from: "b")
        #expect(h.node.eventLamportTime == 101)
        try h.node.fireUserEvent(name: "y", payload: [], nowMs: h.nowMs)
        h.collect()
        #expect(h.userEvents.map(\.ltime) == [0, 100, 101])
        // Queued for gossip and actually sent with the next gossip round.
        #expect(h.node.pendingSerfBroadcasts == 3)
        h.clear()
        h.advance(by: 400)
        let gossiped = h.sent.compactMap { if case let .userEvent(l, n, _, _) = $0.message { "\(n)@\(l)" } else { nil } }
        #expect(Set(gossiped) == ["deploy@0", "x@100", "y@101"])
    }

    @Test func duplicatesAreDeliveredOnceAndEventsOlderThanTheWindowAreIgnored() {
        let h = Harness(others: ["b", "c"]) { $0.eventBufferSize = 64 }
        h.receive([.userEvent(ltime: 100, name: "e", payload: [1], coalesce: true)], from: "b")
        h.receive([.userEvent(ltime: 100, name: "e", payload: [1], coalesce: true)], from: "c")  // duplicate
        h.receive([.userEvent(ltime: 100, name: "e", payload: [2], coalesce: true)], from: "c")  // same time, other payload
        h.receive([.userEvent(ltime: 100, name: "f", payload: [1], coalesce: true)], from: "c")  // same time, other name
        #expect(h.userEvents.map { "\($0.name)\($0.payload)" } == ["e[1]", "e[2]", "f[1]"])
        // Clock is now 101; the window holds times >= 101 - 64 = 37.
        h.receive([.userEvent(ltime: 36, name: "old", payload: [], coalesce: true)], from: "b")
        #expect(h.node.stats.staleEventsIgnored == 1)
        h.receive([.userEvent(ltime: 37, name: "edge", payload: [], coalesce: true)], from: "b")
        #expect(h.userEvents.map(\.name) == ["e", "e", "f", "edge"])
        // A slot reused by a newer time forgets the old time's events, which are stale by then.
        h.receive([.userEvent(ltime: 100 + 64, name: "e", payload: [1], coalesce: true)], from: "b")
        h.receive([.userEvent(ltime: 100, name: "e", payload: [1], coalesce: true)], from: "b")
        #expect(h.userEvents.count == 5)
        #expect(h.node.stats.staleEventsIgnored == 2)
    }

    @Test func aForgedMaximalLamportTimePinsTheClockInsteadOfWrapping() throws {
        let h = Harness(others: ["b"])
        h.receive([.userEvent(ltime: .max, name: "x", payload: [], coalesce: true),
                   .query(ltime: .max, id: 1, from: "b", fromAddress: "b:7946", filterNodes: [], requestAck: false,
                          timeoutMs: .max, name: "q", payload: [])], from: "b")
        #expect(h.node.eventLamportTime == .max && h.node.queryLamportTime == .max)
        try h.node.fireUserEvent(name: "y", payload: [], nowMs: h.nowMs)
        try h.node.query(name: "q2", payload: [], timeoutMs: 100, nowMs: h.nowMs)
        #expect(h.node.eventLamportTime == .max && h.node.queryLamportTime == .max)
        h.advance(by: 1_000)
    }

    @Test func sizeLimitIsConfigurableAndTyped() throws {
        let h = Harness(others: ["b"])
        #expect(h.node.config.userEventSizeLimitBytes == 512)
        #expect(throws: GossipError.userEventTooLarge(size: 513, limit: 512)) {
            try h.node.fireUserEvent(name: "n", payload: [UInt8](repeating: 0, count: 512), nowMs: 0)
        }
        try h.node.fireUserEvent(name: "n", payload: [UInt8](repeating: 0, count: 511), nowMs: 0)
        let big = Harness(others: ["b"]) { $0.userEventSizeLimitBytes = 1_000 }
        try big.node.fireUserEvent(name: "n", payload: [UInt8](repeating: 0, count: 900), nowMs: 0)
        var c = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        c.userEventSizeLimitBytes = 1_400
        #expect(throws: GossipConfigError.self) { try c.validate() }
        c = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        c.eventBufferSize = 0
        #expect(throws: GossipConfigError.invalid(field: "eventBufferSize", reason: "must be in 1...\(1 << 20)")) { try c.validate() }
    }

    @Test func memberUpdatesGoFirstWhenEventsFillThePacket() throws {
        let h = Harness(others: ["b", "c"])
        for i in 0..<10 { try h.node.fireUserEvent(name: "e\(i)", payload: [UInt8](repeating: 7, count: 500), nowMs: 0) }
        h.receive([.alive(incarnation: 1, node: "z", address: "z:1", tags: [:])], from: "b")
        h.clear()
        h.advance(by: 400)
        let packets = h.effects.compactMap { e -> [GossipMessage]? in
            if case let .sendPacket(_, bytes) = e { try? GossipWire.decodePacket(bytes) } else { nil }
        }
        let first = try #require(packets.first)
        #expect(first.contains { if case let .alive(_, node, _, _) = $0 { node == "z" } else { false } })
        #expect(first.contains { if case .userEvent = $0 { true } else { false } })
        for bytes in h.effects.compactMap({ if case let .sendPacket(_, b) = $0 { b } else { nil } }) {
            #expect(bytes.count <= h.node.config.udpBufferSizeBytes)
        }
    }

    /// Fire one event on one of 200 members; every member delivers it exactly once.
    static func spread(seed: UInt64, network: NetworkModel) -> (allAtMs: Int64?, perMember: [Int: Int], stale: Int) {
        let n = 200
        let sim = Simulator(seed: seed, network: network)
        sim.startWarmCluster(count: n) { $0.pushPullIntervalMs = 0 }
        sim.run(untilMs: 2_000)
        var perMember: [Int: Int] = [:]
        sim.onEvent = { observer, event, _ in
            if case let .user(name, payload, _, _) = event, name == "deploy", payload == [42] { perMember[observer, default: 0] += 1 }
        }
        let start = sim.nowMs
        let origin = Int.random(in: 0..<n, using: &sim.rng)
        sim.perform(origin) { try! $0.fireUserEvent(name: "deploy", payload: [42], nowMs: sim.nowMs) }
        let done = sim.run(untilMs: start + 30_000, checkEveryMs: 20) { perMember.count == n }
        let at = done ? sim.nowMs - start : nil
        // Keep running while retransmissions (and duplicated packets) die out.
        sim.run(untilMs: sim.nowMs + 20_000)
        let stale = (0..<n).reduce(0) { $0 + sim.node($1).stats.staleEventsIgnored }
        return (at, perMember, stale)
    }

    @Test(arguments: [0.0, 0.05])
    func eventReachesEveryOneOf200MembersExactlyOnce(loss: Double) throws {
        let seed = simulationSeed(loss == 0 ? 1_200 : 1_205, "user event loss=\(loss)")
        let r = Self.spread(seed: seed, network: NetworkModel(lossRate: loss, duplicateRate: 0.05, delayMs: 1, jitterMs: 5))
        let at = try #require(r.allAtMs, "seed=\(seed): reached \(r.perMember.count) of 200")
        print("user event, 200 members, loss \(loss): everyone in \(at) ms")
        // Epidemic spread: a few gossip rounds of 200 ms; allow 5 s.
        #expect(at <= 5_000, "seed=\(seed)")
        #expect(r.perMember.count == 200)
        #expect(r.perMember.values.allSatisfy { $0 == 1 }, "seed=\(seed): delivered twice somewhere")
    }
}
