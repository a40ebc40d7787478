// Log replication and commitment: §5.3 (consistency check, conflicting suffixes, fast
// back-off), §5.4.2 (commit only current-term entries by counting), the persistence contract
// (thesis §10.2.1) and the pipelined window.

import RaftCore
import Testing

@Suite struct ReplicationTests {
    @Test func leaderCommitsOnlyCurrentTermEntriesByCounting_5_4_2() {
        let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 2)], hardState: HardState(term: 2))
        elect(n)
        #expect(n.term == 3)
        #expect(n.entry(at: 3)?.kind == .noop)
        ack(n, from: 2, index: 2)
        #expect(n.commitIndex == 0, "index 2 is on a majority but of an earlier term")
        ack(n, from: 2, index: 3)
        #expect(n.commitIndex == 3, "committing the current-term no-op commits everything before it")
    }

    @Test func leaderCountsItsOwnEntryOnlyOncePersisted_10_2_1() {
        let n = makeNode()
        elect(n)
        ack(n, from: 2, index: 1)
        #expect(n.commitIndex == 1)
        guard case let .accepted(index, _) = n.propose([7]) else { Issue.record("propose refused"); return }
        let out = drain(n, persist: false)
        #expect(appends(out, to: 2).contains { $0.entries.contains { $0.index == index } })
        #expect(out.allSatisfy { $0.mayPrecedePersistence }, "a leader's appends may go out with its own write")
        ack(n, from: 3, index: index)
        // Quorum is {3, leader}: the leader's copy is not durable yet.
        #expect(n.commitIndex == 1)
        n.persisted(upTo: index, term: n.term)
        #expect(n.commitIndex == index)
    }

    @Test func followerAcknowledgementsWaitForPersistence() {
        let n = makeNode(hardState: HardState(term: 1))
        n.step(msg(2, 1, term: 1, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: [Entry(index: 1, term: 1)], leaderCommit: 0))))
        guard let ready = n.ready() else { Issue.record("no ready"); return }
        #expect(ready.entries == [Entry(index: 1, term: 1)])
        #expect(ready.messages.count == 1)
        #expect(ready.messages.allSatisfy { !$0.mayPrecedePersistence })
    }

    @Test func followerAppliesOnlyCommittedEntriesItHasPersisted() {
        let n = makeNode(hardState: HardState(term: 1))
        n.step(msg(2, 1, term: 1, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0,
                                                              entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 1)], leaderCommit: 2))))
        let first = n.ready()!
        #expect(first.committedEntries.isEmpty)
        #expect(first.hardState?.commitIndex == 2)
        n.advance(first)
        n.persisted(upTo: 2, term: 1)
        let second = n.ready()!
        #expect(second.committedEntries.map(\.index) == [1, 2])
        n.advance(second)
        #expect(n.appliedIndex == 2)
    }

    @Test func followerTruncatesConflictingSuffix_5_3() {
        let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 1), Entry(index: 3, term: 2)],
                         hardState: HardState(term: 2))
        n.step(msg(2, 1, term: 3, .appendEntries(AppendEntries(prevLogIndex: 2, prevLogTerm: 1,
                                                              entries: [Entry(index: 3, term: 3), Entry(index: 4, term: 3)], leaderCommit: 0))))
        let ready = n.ready()!
        #expect(ready.entries.map(\.index) == [3, 4], "storage truncates from index 3")
        #expect(n.term(at: 3) == 3)
        #expect(n.lastIndex == 4)
    }

    @Test func followerKeepsEntriesOnDuplicateOrStaleAppend_5_3() {
        let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 1)], hardState: HardState(term: 1))
        n.step(msg(2, 1, term: 1, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: [Entry(index: 1, term: 1)], leaderCommit: 0))))
        #expect(n.lastIndex == 2, "an old, shorter append must not truncate matching entries")
    }

    @Test func rejectionHintSkipsAWholeConflictingTerm() {
        // Follower side: its entries 2...4 are of a deposed term 2.
        let f = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 2), Entry(index: 3, term: 2), Entry(index: 4, term: 2)],
                         hardState: HardState(term: 2))
        f.step(msg(2, 1, term: 3, .appendEntries(AppendEntries(prevLogIndex: 4, prevLogTerm: 3, entries: [], leaderCommit: 0))))
        guard case let .appendEntriesResponse(r)? = drain(f).first?.message.body else { Issue.record("no response"); return }
        #expect(!r.success)
        #expect(r.hintTerm == 2 && r.hintIndex == 2)

        // Leader side: it holds no term-2 entry, so it goes straight to index 2.
        let l = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 3), Entry(index: 3, term: 3), Entry(index: 4, term: 3)],
                         hardState: HardState(term: 3))
        elect(l)
        l.step(msg(2, 1, term: l.term, .appendEntriesResponse(AppendEntriesResponse(success: false, index: 4, hintTerm: 2, hintIndex: 2))))
        let next = appends(drain(l), to: 2)
        #expect(next.first?.prevLogIndex == 1)
    }

    @Test func rejectionHintFromShorterLogJumpsToItsEnd() {
        let f = makeNode(entries: [Entry(index: 1, term: 1)], hardState: HardState(term: 1))
        f.step(msg(2, 1, term: 2, .appendEntries(AppendEntries(prevLogIndex: 9, prevLogTerm: 2, entries: [], leaderCommit: 0))))
        guard case let .appendEntriesResponse(r)? = drain(f).first?.message.body else { Issue.record("no response"); return }
        #expect(r.hintTerm == 0 && r.hintIndex == 2)
    }

    @Test func inflightWindowBoundsUnackedAppends() {
        var c = RaftConfig()
        c.maxInflightMessages = 2
        c.maxAppendEntries = 1
        let n = makeNode(config: c)
        elect(n)
        ack(n, from: 2, index: 1) // probe -> replicate
        var sent: [AppendEntries] = []
        for i in 0 ..< 5 {
            _ = n.propose([UInt8(i)])
            sent += appends(drain(n), to: 2).filter { !$0.entries.isEmpty }
        }
        #expect(sent.count == 2, "only maxInflightMessages appends are unacknowledged")
        ack(n, from: 2, index: sent[0].entries.last!.index)
        let more = appends(drain(n), to: 2).filter { !$0.entries.isEmpty }
        #expect(more.count == 1, "each acknowledgement frees one slot")
    }

    @Test func appendBatchesRespectMaxEntriesAndMaxBytes() {
        let table: [(maxEntries: Int, maxBytes: Int, dataSize: Int, expected: [Int])] = [
            (3, 1 << 20, 1, [3, 3, 3, 1]),
            (64, 100, 40, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
            (64, 200, 40, [3, 3, 3, 1]),
        ]
        for row in table {
            var c = RaftConfig()
            c.maxAppendEntries = row.maxEntries
            c.maxAppendBytes = row.maxBytes
            let n = makeNode(config: c)
            elect(n)
            for _ in 0 ..< 10 { _ = n.propose([UInt8](repeating: 1, count: row.dataSize)) }
            drain(n)
            ack(n, from: 2, index: 1)
            let batches = appends(drain(n), to: 2).map(\.entries.count).filter { $0 > 0 }
            #expect(batches == row.expected, "maxEntries=\(row.maxEntries) maxBytes=\(row.maxBytes)")
        }
    }

    @Test func heartbeatCarriesMinOfCommitAndFollowerMatch() {
        let n = makeNode()
        elect(n)
        ack(n, from: 2, index: 1)
        #expect(n.commitIndex == 1)
        n.tick()
        let beats = drain(n).compactMap { o -> (NodeID, UInt64)? in
            if case let .heartbeat(h) = o.message.body { return (o.message.to, h.commit) }
            return nil
        }
        #expect(beats.contains { $0 == (2, 1) })
        #expect(beats.contains { $0 == (3, 0) })
    }

    @Test func proposalsOnFollowerNameTheKnownLeader() {
        let n = makeNode(hardState: HardState(term: 1))
        n.step(msg(3, 1, term: 1, .heartbeat(Heartbeat(commit: 0, readRound: 0))))
        #expect(n.propose([1]) == .notLeader(leader: 3))
    }

    @Test func oversizedProposalIsRefused() {
        var c = RaftConfig()
        c.maxAppendBytes = 10
        let n = makeNode(config: c)
        elect(n)
        #expect(n.propose([UInt8](repeating: 0, count: 11)) == .tooLarge(bytes: 11, limit: 10))
    }
}

@Suite struct PersistenceAndLimitTests {
    @Test func grantedVoteWaitsForItsPersistence_10_2_1() {
        let n = makeNode(hardState: HardState(term: 1))
        n.step(msg(2, 1, term: 2, .requestVote(VoteRequest(lastLogIndex: 0, lastLogTerm: 0, preVote: false, leadershipTransfer: false))))
        guard let ready = n.ready() else { Issue.record("no ready"); return }
        #expect(ready.hardState == HardState(term: 2, votedFor: 2, commitIndex: 0))
        #expect(ready.messages.count == 1)
        #expect(ready.messages.allSatisfy { !$0.mayPrecedePersistence })
    }

    @Test func uncommittedProposalsAreBounded() {
        var c = RaftConfig()
        c.maxUncommittedEntries = 3
        let n = makeNode(config: c)
        elect(n) // the no-op is the first uncommitted entry
        #expect(n.propose([1]) != .tooManyUncommitted(limit: 3))
        #expect(n.propose([2]) != .tooManyUncommitted(limit: 3))
        #expect(n.propose([3]) == .tooManyUncommitted(limit: 3))
    }

    @Test func pendingReadsAreBounded() {
        var c = RaftConfig()
        c.maxPendingReads = 2
        let n = makeNode(config: c)
        elect(n)
        #expect(n.readIndex(context: 1) == .pending)
        #expect(n.readIndex(context: 2) == .pending)
        #expect(n.readIndex(context: 3) == .tooManyPendingReads(limit: 2))
    }

    @Test func lostProbeIsResentAfterAHeartbeatAnswer() {
        let n = makeNode()
        elect(n)
        #expect(appends(drain(n), to: 2).isEmpty, "the probe is out; nothing more until it is answered")
        _ = n.propose([1])
        #expect(appends(drain(n), to: 2).isEmpty)
        n.step(msg(2, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: 0))))
        #expect(appends(drain(n), to: 2).count == 1)
    }

    @Test func unansweredSnapshotIsResentAfterAnElectionTimeout_7() {
        let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 1)], hardState: HardState(term: 1))
        elect(n)
        ack(n, from: 2, index: 3)
        drain(n)
        n.snapshotTaken(at: 3)
        n.step(msg(3, 1, term: n.term, .appendEntriesResponse(AppendEntriesResponse(success: false, index: 2, hintTerm: 0, hintIndex: 1))))
        func snapshotsTo3(_ out: [OutgoingMessage]) -> Int {
            out.filter { if case .installSnapshot = $0.message.body { return $0.message.to == 3 }; return false }.count
        }
        #expect(snapshotsTo3(drain(n)) == 1)
        var resent = 0
        for _ in 0 ..< n.config.electionTicks {
            n.tick()
            resent += snapshotsTo3(drain(n))
            n.step(msg(2, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: 0))))
        }
        #expect(resent == 1)
    }
}
