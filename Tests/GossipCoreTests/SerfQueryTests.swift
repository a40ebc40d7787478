// The Serf layer's queries: gossip out, direct responses and acks back, the deadline,
// de-duplication, node filters, limits, and a 50-member simulation.

import GossipCore
import Testing
import TestSupport

@Suite("Serf queries") struct SerfQueryTests {
    @Test func defaultTimeoutIsSerfs() {
        // gossipInterval × queryTimeoutMult × ceil(log10(n + 1)).
        #expect(GossipMath.defaultQueryTimeoutMs(gossipIntervalMs: 200, mult: 16, members: 3) == 3_200)
        #expect(GossipMath.defaultQueryTimeoutMs(gossipIntervalMs: 200, mult: 16, members: 50) == 6_400)
        #expect(GossipMath.defaultQueryTimeoutMs(gossipIntervalMs: 200, mult: 16, members: 100) == 9_600)
        let h = Harness(others: ["b", "c"])
        #expect(h.node.defaultQueryTimeoutMs == 3_200)
    }

    @Test func askerSeesItsOwnQueryGossipsItAndCollectsResponsesUntilTheDeadline() throws {
        let h = Harness(others: ["b", "c", "d"])
        let id = try h.node.query(name: "ping", payload: [9], timeoutMs: 1_000, requestAck: true, nowMs: 0)
        #expect(id.ltime == 0 && h.node.queryLamportTime == 1)
        h.collect()
        // Local delivery, with our own ack.
        #expect(h.events == [.queryAck(id: id, from: "a"), .query(id: id, from: "a", name: "ping", payload: [9], ltime: 0)])
        h.clear()
        h.advance(by: 300)
        #expect(h.sent.contains { if case let .query(l, i, from, addr, _, ack, t, name, _) = $0.message {
            l == 0 && i == id.id && from == "a" && addr == "a:7946" && ack && t == 1_000 && name == "ping" } else { false } })
        h.clear()
        let other = QueryID(ltime: 0, id: id.id &+ 1)
        h.receive([.queryResponse(ltime: 0, id: id.id, from: "b", ack: true, payload: []),
                   .queryResponse(ltime: 0, id: id.id, from: "b", ack: false, payload: [1]),
                   .queryResponse(ltime: 0, id: id.id, from: "b", ack: false, payload: [2]),  // duplicate responder
                   .queryResponse(ltime: 0, id: other.id, from: "c", ack: false, payload: [3]),  // unknown query
                   .queryResponse(ltime: 0, id: id.id, from: "c", ack: false, payload: [4])], from: "b")
        #expect(h.events == [.queryAck(id: id, from: "b"), .queryResponse(id: id, from: "b", payload: [1]),
                             .queryResponse(id: id, from: "c", payload: [4])])
        #expect(h.node.stats.duplicateQueryResponses == 1)
        #expect(h.node.stats.lateQueryResponses == 1)
        h.clear()
        h.advance(to: 999)
        #expect(h.events.isEmpty && h.node.openQueries == 1)
        h.advance(to: 1_000)
        #expect(h.events == [.queryDone(id: id)])
        #expect(h.node.openQueries == 0)
        h.clear()
        h.receive([.queryResponse(ltime: 0, id: id.id, from: "d", ack: false, payload: [5])], from: "d")
        #expect(h.events.isEmpty)
        #expect(h.node.stats.lateQueryResponses == 2)
    }

    @Test func responderAcksAnswersDirectlyOnceAndNotAfterTheDeadline() throws {
        let h = Harness(others: ["b", "c"])
        let q = GossipMessage.query(ltime: 7, id: 77, from: "b", fromAddress: "b:7946", filterNodes: [], requestAck: true,
                                    timeoutMs: 500, name: "who", payload: [1])
        h.receive([q], from: "c")
        let id = QueryID(ltime: 7, id: 77)
        #expect(h.events == [.query(id: id, from: "b", name: "who", payload: [1], ltime: 7)])
        #expect(h.node.queryLamportTime == 8)
        #expect(h.sent.contains { $0.to == "b:7946" && $0.message == .queryResponse(ltime: 7, id: 77, from: "a", ack: true, payload: []) })
        h.receive([q], from: "b")  // gossip duplicate: not surfaced again
        #expect(h.events.count == 1)
        h.clear()
        #expect(throws: GossipError.queryResponseTooLarge(size: 1_025, limit: 1_024)) {
            try h.node.respond(to: id, payload: [UInt8](repeating: 0, count: 1_025), nowMs: h.nowMs)
        }
        try h.node.respond(to: id, payload: [2, 3], nowMs: h.nowMs)
        h.collect()
        // Directly to the asker, and only there; not queued for gossip.
        let responses = h.sent.filter { if case .queryResponse = $0.message { true } else { false } }
        #expect(responses.count == 1)
        #expect(responses.first?.to == "b:7946")
        #expect(responses.first?.message == .queryResponse(ltime: 7, id: 77, from: "a", ack: false, payload: [2, 3]))
        #expect(throws: GossipError.alreadyResponded(id)) { try h.node.respond(to: id, payload: [], nowMs: h.nowMs) }
        #expect(throws: GossipError.unknownQuery(QueryID(ltime: 1, id: 1))) {
            try h.node.respond(to: QueryID(ltime: 1, id: 1), payload: [], nowMs: h.nowMs)
        }
        // A second query; answered too late.
        h.receive([.query(ltime: 8, id: 88, from: "b", fromAddress: "b:7946", filterNodes: [], requestAck: false,
                          timeoutMs: 500, name: "late", payload: [])], from: "b")
        h.advance(by: 500)
        #expect(throws: GossipError.self) { try h.node.respond(to: QueryID(ltime: 8, id: 88), payload: [], nowMs: h.nowMs) }
    }

    @Test func nodeFilterLimitsWhoSurfacesTheQueryButItStillSpreads() {
        let h = Harness(others: ["b", "c"])
        h.receive([.query(ltime: 1, id: 1, from: "b", fromAddress: "b:7946", filterNodes: ["c"], requestAck: true,
                          timeoutMs: 500, name: "x", payload: [])], from: "b")
        #expect(h.events.isEmpty)
        #expect(h.sent.isEmpty)  // no ack: we were filtered out
        #expect(h.node.pendingSerfBroadcasts == 1)  // but we relay it
    }

    @Test func queriesBeyondTheWindowAreIgnoredAndLimitsAreEnforced() throws {
        let h = Harness(others: ["b"]) { $0.maxPendingQueries = 2 }
        h.receive([.query(ltime: 200, id: 1, from: "b", fromAddress: "b:7946", filterNodes: [], requestAck: false,
                          timeoutMs: 500, name: "x", payload: [])], from: "b")
        h.receive([.query(ltime: 100, id: 2, from: "b", fromAddress: "b:7946", filterNodes: [], requestAck: false,
                          timeoutMs: 500, name: "old", payload: [])], from: "b")
        #expect(h.node.stats.staleQueriesIgnored == 1)
        #expect(h.events.count == 1)
        #expect(throws: GossipError.queryTooLarge(size: 1_025, limit: 1_024)) {
            try h.node.query(name: "big", payload: [UInt8](repeating: 0, count: 1_000), timeoutMs: 100, nowMs: h.nowMs)
        }
        try h.node.query(name: "q1", payload: [], timeoutMs: 100, nowMs: h.nowMs)
        try h.node.query(name: "q2", payload: [], timeoutMs: 100, nowMs: h.nowMs)
        #expect(throws: GossipError.tooManyPendingQueries(limit: 2)) { try h.node.query(name: "q3", payload: [], nowMs: h.nowMs) }
        #expect(throws: GossipError.invalidQueryTimeout(ms: 0)) { try h.node.query(name: "q", payload: [], timeoutMs: 0, nowMs: h.nowMs) }
        var c = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
        c.maxQueryResponseBytes = 1_400
        #expect(throws: GossipConfigError.self) { try c.validate() }
        for (field, change) in [("queryBufferSize", { (c: inout GossipConfig) in c.queryBufferSize = 0 }),
                                ("querySizeLimitBytes", { $0.querySizeLimitBytes = 2_000 }),
                                ("queryTimeoutMult", { $0.queryTimeoutMult = 0 }),
                                ("maxPendingQueries", { $0.maxPendingQueries = 0 }),
                                ("maxMessagesPerLamportTime", { $0.maxMessagesPerLamportTime = 0 }),
                                ("reconnectTimeoutMs", { $0.reconnectTimeoutMs = -1 }),
                                ("tombstoneTimeoutMs", { $0.tombstoneTimeoutMs = -1 })] {
            var bad = GossipConfig.lan(name: "a", address: "a:1", randomSeed: 0)
            change(&bad)
            #expect { try bad.validate() } throws: { error in
                if case let GossipConfigError.invalid(f, _) = error { f == field } else { false }
            }
        }
    }

    /// A query from one of 50 members; every member (or only the filtered ones) answers with its name.
    static func ask(seed: UInt64, filter: [String], loss: Double) -> (responders: [String: Int], acks: Set<String>, done: Bool,
                                                                       lateOrDuplicate: Int, timeoutMs: Int64) {
        let n = 50
        let sim = Simulator(seed: seed, network: NetworkModel(lossRate: loss, duplicateRate: 0.05, delayMs: 1, jitterMs: 5))
        sim.startWarmCluster(count: n) { $0.pushPullIntervalMs = 0 }
        sim.run(untilMs: 2_000)
        let asker = Int.random(in: 0..<n, using: &sim.rng)
        var responders: [String: Int] = [:]
        var acks = Set<String>()
        var done = false
        var qid: QueryID?
        sim.onEvent = { observer, event, _ in
            switch event {
            case let .query(id, _, name, _, _) where name == "whoami":
                sim.perform(observer) { try! $0.respond(to: id, payload: Array(Simulator.name(observer).utf8), nowMs: sim.nowMs) }
            case let .queryResponse(id, from, payload) where id == qid && observer == asker:
                #expect(Array(from.utf8) == payload)
                #expect(!done, "response after queryDone")
                responders[from, default: 0] += 1
            case let .queryAck(id, from) where id == qid && observer == asker:
                acks.insert(from)
            case let .queryDone(id) where id == qid && observer == asker:
                done = true
            default: break
            }
        }
        let timeout = sim.node(asker).defaultQueryTimeoutMs
        sim.perform(asker) { qid = try! $0.query(name: "whoami", payload: [], filterNodes: filter, requestAck: true, nowMs: sim.nowMs) }
        sim.run(untilMs: sim.nowMs + timeout + 1_000)
        let dropped = sim.node(asker).stats.lateQueryResponses + sim.node(asker).stats.duplicateQueryResponses
        return (responders, acks, done, dropped, timeout)
    }

    @Test func queryFrom1Of50GetsOneResponseFromEveryMemberBeforeTheDeadline() {
        let seed = simulationSeed(5_050, "query 50")
        let r = Self.ask(seed: seed, filter: [], loss: 0)
        print("query, 50 members: \(r.responders.count) responders, \(r.acks.count) acks, timeout \(r.timeoutMs) ms")
        #expect(r.timeoutMs == 6_400)
        #expect(r.responders.count == 50, "seed=\(seed)")  // the 49 others and the asker itself
        #expect(r.responders.values.allSatisfy { $0 == 1 })
        #expect(r.acks.count == 50)
        #expect(r.done)
    }

    @Test func queryWithLossStillCollectsResponsesAtMostOnceEach() {
        let seed = simulationSeed(5_055, "query 50 loss")
        let r = Self.ask(seed: seed, filter: [], loss: 0.05)
        print("query, 50 members, 5% loss: \(r.responders.count) responders, \(r.lateOrDuplicate) dropped late/duplicate")
        // A response is one direct packet: about 5% of them are lost (Serf has the same property).
        #expect(r.responders.count >= 40, "seed=\(seed)")
        #expect(r.responders.values.allSatisfy { $0 == 1 })
        #expect(r.done)
    }

    @Test func nodeFilterLimitsResponders() {
        let seed = simulationSeed(5_051, "query filter")
        let filter = ["n3", "n17", "n42"]
        let r = Self.ask(seed: seed, filter: filter, loss: 0)
        #expect(Set(r.responders.keys) == Set(filter), "seed=\(seed)")
        #expect(r.acks == Set(filter))
        #expect(r.done)
    }
}
