// The leader's user restore (RaftNode.restoreSnapshot): log becomes a snapshot point past the
// last index, followers get the snapshot, and the following no-op commits only when a quorum
// holds the point.
import RaftCore
import Testing

@Suite struct RestoreTests {
    /// Delivers messages between in-memory nodes until none are left (instant disk).
    private func deliver(_ nodes: [NodeID: RaftNode], _ initial: [OutgoingMessage], installed: inout [NodeID: UInt64]) {
        var queue = initial.map(\.message)
        var rounds = 0
        while !queue.isEmpty, rounds < 10_000 {
            rounds += 1
            let m = queue.removeFirst()
            guard let target = nodes[m.to] else { continue }
            target.step(m)
            while let ready = target.ready() {
                if let s = ready.snapshot { installed[target.id] = s.metadata.index }
                queue += ready.messages.map(\.message)
                target.advance(ready)
                if let s = ready.snapshot { target.persisted(upTo: s.metadata.index, term: s.metadata.term) }
                if let last = ready.entries.last { target.persisted(upTo: last.index, term: last.term) }
            }
        }
    }

    private func cluster() -> (RaftNode, [NodeID: RaftNode]) {
        let nodes: [NodeID: RaftNode] = [1: makeNode(id: 1), 2: makeNode(id: 2), 3: makeNode(id: 3)]
        let leader = nodes[1]!
        elect(leader)
        var installed: [NodeID: UInt64] = [:]
        deliver(nodes, drain(leader), installed: &installed)
        for i in 0 ..< 5 { _ = leader.propose([UInt8(i)]) }
        deliver(nodes, drain(leader), installed: &installed)
        // A heartbeat round carries the final commit index to the followers.
        for _ in 0 ..< leader.config.heartbeatTicks { leader.tick() }
        deliver(nodes, drain(leader), installed: &installed)
        return (leader, nodes)
    }

    @Test func restoreReplacesTheLogAndEveryFollowerInstallsTheSnapshot() {
        let (leader, nodes) = cluster()
        let last = leader.lastIndex
        #expect(leader.commitIndex == last)
        #expect(nodes[2]!.commitIndex == last)
        let term = leader.term

        let result = leader.restoreSnapshot(at: last + 10)
        #expect(result == .restored(index: last + 10, noopIndex: last + 11))
        #expect(leader.snapshotMetadata == SnapshotMetadata(index: last + 10, term: term, configuration: leader.configuration))
        #expect(leader.commitIndex == last + 10)
        #expect(leader.appliedIndex == last + 10)
        #expect(leader.lastIndex == last + 11)

        // The Ready hands out the snapshot point to persist, and the no-op; the leader applies nothing.
        let ready = leader.ready()!
        #expect(ready.snapshot?.metadata.index == last + 10)
        #expect(ready.committedEntries.isEmpty)
        #expect(ready.entries.map(\.index) == [last + 11])
        // Every follower is sent the snapshot (its prev entry is gone).
        let snapshotsTo = Set(ready.messages.compactMap { m -> NodeID? in
            if case .installSnapshot = m.message.body { return m.message.to } else { return nil }
        })
        #expect(snapshotsTo == [2, 3])
        leader.advance(ready)
        leader.persisted(upTo: last + 10, term: term)
        leader.persisted(upTo: last + 11, term: term)
        // The no-op is not committed by the leader alone.
        #expect(leader.commitIndex == last + 10)

        var installed: [NodeID: UInt64] = [:]
        deliver(nodes, ready.messages, installed: &installed)
        #expect(installed == [2: last + 10, 3: last + 10])
        #expect(leader.commitIndex == last + 11)
        for _ in 0 ..< leader.config.heartbeatTicks { leader.tick() }
        deliver(nodes, drain(leader), installed: &installed)
        for id: NodeID in [2, 3] {
            #expect(nodes[id]!.snapshotMetadata.index == last + 10)
            #expect(nodes[id]!.commitIndex == last + 11)
            #expect(nodes[id]!.term(at: last + 11) == term)
        }
        // Writes go on after the hole.
        #expect(leader.propose([42]) == .accepted(index: last + 12, term: term))
        deliver(nodes, drain(leader), installed: &installed)
        #expect(leader.commitIndex == last + 12)
    }

    @Test func restoreIsRefusedUnlessEverythingIsCommittedAndApplied() {
        let (leader, nodes) = cluster()
        #expect(nodes[2]!.restoreSnapshot(at: 100) == .notLeader(leader: 1))
        #expect(leader.restoreSnapshot(at: leader.lastIndex) == .indexTooLow(lastIndex: leader.lastIndex))
        // An uncommitted proposal blocks the restore, and nothing changes.
        _ = leader.propose([9])
        let before = (leader.lastIndex, leader.commitIndex, leader.snapshotMetadata)
        #expect(leader.restoreSnapshot(at: 100) == .busy(lastIndex: before.0, commitIndex: before.1, appliedIndex: leader.appliedIndex))
        #expect((leader.lastIndex, leader.commitIndex, leader.snapshotMetadata) == before)
    }

    @Test func restoredLeaderRestartsFromItsPersistedPoint() {
        let (leader, _) = cluster()
        let last = leader.lastIndex
        _ = leader.restoreSnapshot(at: last + 3)
        let ready = leader.ready()!
        // What a durable log holds after the Ready: the point and the no-op; the node restarts from it.
        var log = MemoryRaftLog(snapshot: ready.snapshot!.metadata)
        log.append(ready.entries)
        let restarted = RaftNode(id: 1, config: leader.config, log: log, hardState: ready.hardState ?? leader.hardState, seed: 7)
        #expect(restarted.commitIndex == last + 3)
        #expect(restarted.appliedIndex == last + 3)
        #expect(restarted.lastIndex == last + 4)
    }
}
