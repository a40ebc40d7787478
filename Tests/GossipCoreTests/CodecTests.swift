// The wire codec: every valid message round-trips, and the decoder is total over any bytes.

import GossipCore
import Testing
import TestSupport

enum RandomMessages {
    static func string(_ g: inout SeededGenerator, max: Int = 24) -> String {
        let alphabet = Array("abcxyz0189-_.:é日")
        return String((0..<Int.random(in: 0...max, using: &g)).map { _ in alphabet.randomElement(using: &g)! })
    }
    static func tags(_ g: inout SeededGenerator) -> [String: String] {
        var t: [String: String] = [:]
        for _ in 0..<Int.random(in: 0...4, using: &g) { t[string(&g, max: 8)] = string(&g, max: 16) }
        return t
    }
    static func payload(_ g: inout SeededGenerator, max: Int = 40) -> [UInt8] {
        (0..<Int.random(in: 0...max, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
    }
    static func ltime(_ g: inout SeededGenerator) -> UInt64 {
        Bool.random(using: &g) ? UInt64.random(in: 0...300, using: &g) : UInt64.random(in: 0...UInt64.max, using: &g)
    }
    static func message(_ g: inout SeededGenerator) -> GossipMessage {
        let u = { (g: inout SeededGenerator) in UInt32.random(in: 0...UInt32.max, using: &g) }
        switch Int.random(in: 0..<11, using: &g) {
        case 8: return .userEvent(ltime: ltime(&g), name: string(&g), payload: payload(&g), coalesce: Bool.random(using: &g))
        case 9: return .query(ltime: ltime(&g), id: u(&g), from: string(&g), fromAddress: string(&g),
                              filterNodes: (0..<Int.random(in: 0...3, using: &g)).map { _ in string(&g, max: 6) },
                              requestAck: Bool.random(using: &g), timeoutMs: ltime(&g), name: string(&g), payload: payload(&g))
        case 10: return .queryResponse(ltime: ltime(&g), id: u(&g), from: string(&g), ack: Bool.random(using: &g), payload: payload(&g))
        case 0: return .ping(seq: u(&g), target: string(&g), source: string(&g), sourceAddress: string(&g))
        case 1: return .indirectPing(seq: u(&g), target: string(&g), targetAddress: string(&g), source: string(&g),
                                     sourceAddress: string(&g), wantNack: Bool.random(using: &g))
        case 2: return .ack(seq: u(&g))
        case 3: return .nack(seq: u(&g))
        case 4: return .suspect(incarnation: u(&g), node: string(&g), from: string(&g))
        case 5: return .alive(incarnation: u(&g), node: string(&g), address: string(&g), tags: tags(&g))
        case 6: return .dead(incarnation: u(&g), node: string(&g), from: string(&g))
        default:
            let members = (0..<Int.random(in: 0...5, using: &g)).map { _ in
                MemberSnapshot(name: string(&g), address: string(&g), incarnation: u(&g),
                               state: MemberState(rawValue: UInt8.random(in: 0...3, using: &g))!, tags: tags(&g))
            }
            return .pushPull(join: Bool.random(using: &g), members: members)
        }
    }
}

@Suite("Wire codec") struct CodecTests {
    @Test func everyValidMessageRoundTripsAloneAndInCompoundPackets() throws {
        let seed = simulationSeed(2026, "codec round trip")
        var g = SeededGenerator(seed: seed)
        for i in 0..<3_000 {
            let m = RandomMessages.message(&g)
            #expect(try GossipWire.decodeMessage(GossipWire.encode(m)) == m, "seed=\(seed) case \(i)")
            #expect(try GossipWire.decodePacket(GossipWire.encode(m)) == [m], "seed=\(seed) case \(i)")
            let parts = (0..<Int.random(in: 1...6, using: &g)).map { _ in RandomMessages.message(&g) }
            #expect(try GossipWire.decodePacket(GossipWire.encodeCompound(parts.map(GossipWire.encode))) == parts, "seed=\(seed) case \(i)")
        }
    }

    @Test func decoderIsTotalOverRandomMutatedAndTruncatedBytes() {
        let seed = simulationSeed(4242, "codec totality")
        var g = SeededGenerator(seed: seed)
        var decoded = 0, rejected = 0
        func attempt(_ bytes: [UInt8]) {
            // Must return or throw; never trap or hang.
            if (try? GossipWire.decodePacket(bytes)) != nil { decoded += 1 } else { rejected += 1 }
            _ = try? GossipWire.decodeMessage(bytes)
        }
        for _ in 0..<5_000 {
            // Random bytes, biased toward valid type bytes so the decoder goes deep.
            var random = (0..<Int.random(in: 0...64, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            if !random.isEmpty { random[0] = UInt8.random(in: 0...10, using: &g) }
            attempt(random)
            // A valid packet, mutated and truncated.
            let parts = (0..<Int.random(in: 1...4, using: &g)).map { _ in RandomMessages.message(&g) }
            var valid = parts.count == 1 ? GossipWire.encode(parts[0]) : GossipWire.encodeCompound(parts.map(GossipWire.encode))
            attempt(Array(valid.prefix(Int.random(in: 0...valid.count, using: &g))))
            for _ in 0..<Int.random(in: 1...3, using: &g) where !valid.isEmpty {
                valid[Int.random(in: 0..<valid.count, using: &g)] = UInt8.random(in: 0...255, using: &g)
            }
            attempt(valid)
        }
        print("codec totality seed=\(seed): \(decoded) decoded, \(rejected) rejected")
        #expect(decoded + rejected == 10_000 + 5_000)
    }

    @Test func forgedLengthsAreRejectedBeforeAllocating() {
        // push-pull claiming 16,000 members with no bytes behind the claim.
        var forged: [UInt8] = [8, 0]
        var v: UInt64 = 16_000
        while v >= 0x80 { forged.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        forged.append(UInt8(v))
        #expect(throws: GossipWireError.truncated(needed: 128_000, remaining: 0)) { try GossipWire.decodeMessage(forged) }
        // A string length of 2^62, and an over-long varint.
        #expect(throws: GossipWireError.self) { try GossipWire.decodeMessage([6, 0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]) }
        #expect(throws: GossipWireError.varintOverflow) {
            try GossipWire.decodeMessage([6, 0, 0, 0, 1] + [UInt8](repeating: 0xFF, count: 11))
        }
        // More members than the wire limit.
        #expect(throws: GossipWireError.tooLarge(field: "push-pull members", size: 20_000, limit: WireLimits.maxPushPullMembers)) {
            try GossipWire.decodeMessage([8, 0, 0xA0, 0x9C, 0x01])
        }
    }

    @Test(arguments: [
        ([UInt8](), GossipWireError.empty),
        ([42], GossipWireError.unknownMessageType(42)),
        ([3, 0, 0], GossipWireError.truncated(needed: 4, remaining: 2)),
        ([3, 0, 0, 0, 1, 7], GossipWireError.trailingBytes(1)),
        ([2, 0, 0, 0, 1, 0, 0, 0, 0, 2], GossipWireError.invalidBool(2)),
        ([9, 1, 2, 9, 0], GossipWireError.nestedCompound),
        // user event: ltime 1, name "e", payload length 2 but 1 byte left before the flag.
        ([10, 1, 1, 0x65, 2, 0], GossipWireError.truncated(needed: 2, remaining: 1)),
        ([10, 1, 1, 0x65, 0, 2], GossipWireError.invalidBool(2)),
        ([10, 1, 1, 0xFF, 0, 0], GossipWireError.invalidUTF8(field: "event name")),
        // user event payload over the wire limit (65,001 as a varint).
        ([10, 1, 0, 0xE9, 0xFB, 0x03], GossipWireError.tooLarge(field: "event payload", size: 65_001, limit: WireLimits.maxPayloadBytes)),
        // query with 2,000 filter nodes.
        ([11, 0, 0, 0, 0, 1, 0, 0, 0xD0, 0x0F], GossipWireError.tooLarge(field: "query filter nodes", size: 2_000, limit: WireLimits.maxQueryFilterNodes)),
        ([12, 0, 0, 0, 0, 1, 0, 3, 0], GossipWireError.invalidBool(3)),
    ])
    func malformedPacketsGiveTypedErrors(bytes: [UInt8], error: GossipWireError) {
        #expect(throws: error) { try GossipWire.decodePacket(bytes) }
    }
}

@Suite("Core under random input") struct CoreFuzzTests {
    @Test func randomMessagesAndBytesNeverBreakTheCoreInvariants() {
        let seed = simulationSeed(31_337, "core fuzz")
        var g = SeededGenerator(seed: seed)
        let names = ["a", "b", "c", "d", "e"]
        let h = Harness(others: ["b", "c", "d"], seed: seed)
        var lastIncarnation = h.node.incarnation
        var lastEventTime: UInt64 = 0, lastQueryTime: UInt64 = 0
        for step in 0..<4_000 {
            var m = RandomMessages.message(&g)
            // Aim most messages at members we know, so they reach the state rules.
            switch m {
            case let .suspect(inc, _, from): m = .suspect(incarnation: inc % 4, node: names.randomElement(using: &g)!, from: from)
            case let .alive(inc, _, addr, tags): m = .alive(incarnation: inc % 4, node: names.randomElement(using: &g)!, address: addr, tags: tags)
            case let .dead(inc, _, from): m = .dead(incarnation: inc % 4, node: names.randomElement(using: &g)!, from: from)
            case let .ack(seq): m = .ack(seq: seq % 64)
            case let .nack(seq): m = .nack(seq: seq % 64)
            case let .userEvent(l, name, p, c): m = .userEvent(ltime: l % 200, name: String(name.prefix(2)), payload: Array(p.prefix(2)), coalesce: c)
            case let .query(l, id, _, addr, filter, ack, t, name, p):
                m = .query(ltime: l % 200, id: id % 8, from: names.randomElement(using: &g)!, fromAddress: addr,
                           filterNodes: Bool.random(using: &g) ? [] : filter + ["a"], requestAck: ack, timeoutMs: t, name: name, payload: p)
            case let .queryResponse(l, id, _, ack, p):
                m = .queryResponse(ltime: l % 4, id: id % 8, from: names.randomElement(using: &g)!, ack: ack, payload: p)
            default: break
            }
            if Bool.random(using: &g) {
                h.receive([m], from: names.randomElement(using: &g)!)
            } else {
                let bytes = (0..<Int.random(in: 0...40, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
                h.node.receive(bytes, from: "z:1", nowMs: h.nowMs)
                _ = h.node.receiveStream(bytes, from: "z:1", nowMs: h.nowMs)
            }
            h.advance(by: Int64.random(in: 0...300, using: &g))
            h.collect()
            #expect(h.node.incarnation >= lastIncarnation, "seed=\(seed) step \(step): our incarnation went down")
            lastIncarnation = h.node.incarnation
            #expect(h.node.member(named: "a") != nil, "seed=\(seed) step \(step): we forgot ourselves")
            #expect(h.node.pendingBroadcasts <= h.node.config.maxBroadcastQueueLength)
            #expect(h.node.healthScore < h.node.config.awarenessMaxMultiplier)
            #expect(h.node.pendingSerfBroadcasts <= 2 * h.node.config.maxBroadcastQueueLength)
            #expect(h.node.openQueries <= h.node.config.maxPendingQueries)
            #expect(h.node.eventLamportTime >= lastEventTime && h.node.queryLamportTime >= lastQueryTime,
                    "seed=\(seed) step \(step): a Lamport clock went back")
            lastEventTime = h.node.eventLamportTime
            lastQueryTime = h.node.queryLamportTime
            // Our own queries and answers interleave with the random input.
            if step % 50 == 0 { _ = try? h.node.query(name: "q", payload: [1], timeoutMs: 2_000, nowMs: h.nowMs) }
            for e in h.events { if case let .query(id, _, _, _, _) = e { _ = try? h.node.respond(to: id, payload: [2], nowMs: h.nowMs) } }
            if step % 37 == 0 { _ = try? h.node.fireUserEvent(name: "u", payload: [UInt8(step % 256)], nowMs: h.nowMs) }
            h.clear()
        }
    }
}
