// Drives one Memberlist by hand for the unit tests: virtual time, effects decoded into messages.

import GossipCore

final class Harness {
    let node: Memberlist
    private(set) var nowMs: Int64 = 0
    /// Everything the node emitted, in order, since the last `clear()`.
    private(set) var effects: [GossipEffect] = []

    static func address(_ name: String) -> String { "\(name):7946" }

    init(name: String = "a", others: [String], seed: UInt64 = 1, configure: (inout GossipConfig) -> Void = { _ in }) {
        var c = GossipConfig.lan(name: name, address: Harness.address(name), randomSeed: seed)
        c.pushPullIntervalMs = 0
        configure(&c)
        node = try! Memberlist(config: c, knownMembers: others.map { Member(name: $0, address: Harness.address($0)) })
    }

    func collect() { effects += node.takeEffects() }
    func clear() { collect(); effects.removeAll() }

    /// Advance virtual time, firing every timer due on the way.
    func advance(to t: Int64) {
        while node.nextTimerMs <= t {
            nowMs = Swift.max(nowMs, node.nextTimerMs)
            node.tick(nowMs: nowMs)
            collect()
        }
        nowMs = Swift.max(nowMs, t)
        node.tick(nowMs: nowMs)
        collect()
    }
    func advance(by ms: Int64) { advance(to: nowMs + ms) }

    func receive(_ messages: [GossipMessage], from name: String) {
        let bytes = messages.count == 1 ? GossipWire.encode(messages[0]) : GossipWire.encodeCompound(messages.map(GossipWire.encode))
        node.receive(bytes, from: Harness.address(name), nowMs: nowMs)
        collect()
    }

    /// Decoded UDP messages sent, with their destination.
    var sent: [(to: String, message: GossipMessage)] {
        effects.flatMap { e -> [(to: String, message: GossipMessage)] in
            guard case let .sendPacket(to, bytes) = e else { return [] }
            return (try! GossipWire.decodePacket(bytes)).map { (to: to, message: $0) }
        }
    }
    var events: [MembershipEvent] {
        effects.compactMap { if case let .event(e) = $0 { e } else { nil } }
    }
    var streams: [(id: UInt64, kind: StreamKind, to: String, bytes: [UInt8])] {
        effects.compactMap { if case let .openStream(id, kind, to, bytes) = $0 { (id, kind, to, bytes) } else { nil } }
    }

    /// Advance until the node sends its next probe ping; returns its target name and sequence.
    func advanceToNextPing() -> (target: String, seq: UInt32, atMs: Int64) {
        clear()
        for _ in 0..<10_000 {
            advance(by: 1)
            for s in sent {
                if case let .ping(seq, target, _, _) = s.message { return (target, seq, nowMs) }
            }
        }
        fatalError("no ping sent")
    }
}
