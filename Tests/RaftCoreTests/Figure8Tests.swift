// The scenario of the Raft paper's Figure 8, played message by message on five nodes: an
// entry of an earlier term that reaches a majority must not be committed by counting, because
// a later leader may still overwrite it (§5.4.2).

import RaftCore
import Testing

/// Five nodes with instant disks and a hand-operated network.
final class ManualCluster {
    var nodes: [NodeID: RaftNode] = [:]
    var connected: Set<NodeID>
    var queue: [Message] = []

    init(size: Int, config: RaftConfig) {
        let ids = (1 ... UInt64(size)).map { $0 }
        for id in ids { nodes[id] = makeNode(id: id, voters: ids, config: config, seed: id) }
        connected = Set(ids)
    }

    func collect() {
        for id in nodes.keys.sorted() { queue += messages(drain(nodes[id]!)) }
    }

    /// Delivers until quiet; messages touching a disconnected node or rejected by `allow` are lost.
    func deliver(allow: (Message) -> Bool = { _ in true }) {
        collect()
        var rounds = 0
        while !queue.isEmpty && rounds < 100 {
            let batch = queue
            queue = []
            for m in batch where connected.contains(m.from) && connected.contains(m.to) && allow(m) {
                nodes[m.to]!.step(m)
            }
            collect()
            rounds += 1
        }
    }

    /// Crash and restart with everything persisted (the disks here are instant).
    func restart(_ id: NodeID) {
        let old = nodes[id]!
        let entries = (old.firstIndex ..< old.lastIndex + 1).map { old.entry(at: $0)! }
        nodes[id] = RaftNode(id: id, config: old.config, log: MemoryRaftLog(snapshot: old.snapshotMetadata, entries: entries),
                             hardState: old.hardState, seed: id &+ 100)
    }

    func heartbeat(_ id: NodeID) {
        for _ in 0 ..< nodes[id]!.config.heartbeatTicks { nodes[id]!.tick() }
        deliver()
    }

    /// Lets `id` time out and campaign (repeatedly, if a term was already taken) until it leads.
    func elect(_ id: NodeID, allow: (Message) -> Bool = { _ in true }) {
        for _ in 0 ..< 5 where nodes[id]!.role != .leader {
            let node = nodes[id]!
            let startTerm = node.term
            for _ in 0 ..< 2 * node.config.electionTicks where node.term == startTerm && node.role != .leader { node.tick() }
            deliver(allow: allow)
        }
    }
}

func carries(_ m: Message, index: UInt64) -> Bool {
    if case let .appendEntries(a) = m.body { return a.entries.contains { $0.index == index } }
    return false
}

@Suite struct Figure8Tests {
    @Test func leaderDoesNotCommitAnEarlierTermEntryReplicatedToAMajority_5_4_2() {
        var config = RaftConfig()
        config.preVote = false
        config.checkQuorum = false
        config.maxAppendEntries = 1
        let c = ManualCluster(size: 5, config: config)

        // (a) S1 leads term 1, commits its no-op everywhere, then gets index 2 only onto S2.
        c.elect(1)
        c.heartbeat(1)
        #expect(c.nodes[1]!.role == .leader)
        #expect(c.nodes.values.allSatisfy { $0.commitIndex == 1 })
        c.connected = [1, 2]
        _ = c.nodes[1]!.propose([42])
        c.deliver()
        #expect(c.nodes[2]!.term(at: 2) == 1)

        // (b) S1 and S2 go away; S5 wins term 2 with S3 and S4, appends its no-op at index 2
        // and is cut off before sending it.
        c.connected = [3, 4, 5]
        c.elect(5, allow: { !carries($0, index: 2) })
        #expect(c.nodes[5]!.role == .leader)
        #expect(c.nodes[5]!.term(at: 2) == c.nodes[5]!.term)

        // (c) S1 returns and leads a later term with S2 and S3; it copies index 2 (term 1) to S3,
        // so a majority holds it, but its own no-op (index 3) never reaches S3.
        c.connected = [1, 2, 3]
        c.restart(1)
        c.elect(1, allow: { m in !(m.to == 3 && carries(m, index: 3) && c.nodes[3]!.lastIndex >= 2) })
        let s1 = c.nodes[1]!
        #expect(s1.role == .leader && s1.term >= 3)
        #expect(c.nodes[3]!.term(at: 2) == 1)
        #expect(s1.commitIndex == 1, "index 2 is on S1, S2, S3 but of term 1: not committed by counting")

        // (d) Indeed S5 can still win (its last term is higher) and overwrite index 2.
        c.connected = [3, 4, 5]
        c.restart(5)
        c.elect(5)
        #expect(c.nodes[5]!.role == .leader)
        #expect(c.nodes[3]!.term(at: 2) == 2, "the uncommitted entry was legitimately replaced")
    }
}
