// Membership changes one server at a time (thesis §4) and snapshots / InstallSnapshot (§7).

import RaftCore
import Testing

@Suite struct MembershipTests {
    @Test func configurationTakesEffectWhenAppendedNotWhenCommitted_4_1() {
        let n = makeNode()
        elect(n)
        ack(n, from: 2, index: 1)
        guard case let .accepted(index, _) = n.proposeConfigurationChange(.addNonVoter(4)) else { Issue.record("refused"); return }
        #expect(n.commitIndex < index)
        #expect(n.configuration == Configuration(voters: [1, 2, 3], nonVoters: [4]))
        #expect(drain(n).contains { $0.message.to == 4 }, "the new non-voter receives the log at once")
    }

    @Test func onlyOneUncommittedConfigurationChangeAtATime_4_1() {
        let n = makeNode()
        elect(n)
        #expect(n.proposeConfigurationChange(.addNonVoter(4)) == .configurationChangeInProgress, "not before the no-op commits")
        ack(n, from: 2, index: 1)
        guard case let .accepted(index, _) = n.proposeConfigurationChange(.addNonVoter(4)) else { Issue.record("refused"); return }
        #expect(n.proposeConfigurationChange(.addNonVoter(5)) == .configurationChangeInProgress)
        drain(n)
        ack(n, from: 2, index: index)
        if case .accepted = n.proposeConfigurationChange(.promoteToVoter(4)) {} else { Issue.record("refused after commit") }
    }

    @Test func invalidChangesAreRefused() {
        let table: [(ConfigurationChange, ConfigurationChangeError)] = [
            (.addNonVoter(2), .alreadyMember(2)), (.promoteToVoter(2), .notANonVoter(2)), (.remove(9), .notAMember(9)),
        ]
        for (change, error) in table {
            let n = makeNode()
            elect(n)
            ack(n, from: 2, index: 1)
            #expect(n.proposeConfigurationChange(change) == .invalidConfigurationChange(error))
        }
    }

    @Test func nonVoterDoesNotCountForQuorum_4_2_1() {
        let n = makeNode(voters: [1, 2, 3], nonVoters: [4])
        elect(n)
        ack(n, from: 4, index: 1)
        #expect(n.commitIndex == 0)
        ack(n, from: 2, index: 1)
        #expect(n.commitIndex == 1)
    }

    @Test func removedLeaderStepsDownAfterCommittingItsRemoval_4_2_2() {
        let n = makeNode()
        elect(n)
        ack(n, from: 2, index: 1)
        guard case let .accepted(index, _) = n.proposeConfigurationChange(.remove(1)) else { Issue.record("refused"); return }
        drain(n)
        #expect(n.role == .leader, "it keeps leading until the change commits")
        #expect(!n.configuration.isVoter(1))
        ack(n, from: 2, index: index)
        #expect(n.commitIndex == index - 1, "its own vote no longer counts: needs both 2 and 3")
        ack(n, from: 3, index: index)
        #expect(n.commitIndex == index)
        #expect(n.role == .follower)
        for _ in 0 ..< 100 { n.tick() }
        #expect(n.role == .follower, "a removed server does not campaign")
    }

    @Test func followerRevertsConfigurationWhenItsEntryIsTruncated_4_1() {
        let n = makeNode(hardState: HardState(term: 1))
        let added = Configuration(voters: [1, 2, 3], nonVoters: [4])
        n.step(msg(2, 1, term: 1, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0,
                                                              entries: [Entry(index: 1, term: 1, kind: .configuration, data: added.encoded())], leaderCommit: 0))))
        #expect(n.configuration == added)
        n.step(msg(3, 1, term: 2, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0,
                                                              entries: [Entry(index: 1, term: 2, kind: .noop)], leaderCommit: 0))))
        #expect(n.configuration == Configuration(voters: [1, 2, 3]))
    }
}

@Suite struct SnapshotTests {
    @Test func laggingFollowerIsSentTheSnapshotThenReplicationResumes_7() {
        let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 1)], hardState: HardState(term: 1))
        elect(n)
        ack(n, from: 2, index: 3)
        drain(n)
        #expect(n.appliedIndex == 3)
        n.snapshotTaken(at: 3)
        #expect(n.firstIndex == 4)
        #expect(n.snapshotMetadata.term == 2)
        n.step(msg(3, 1, term: n.term, .appendEntriesResponse(AppendEntriesResponse(success: false, index: 2, hintTerm: 0, hintIndex: 1))))
        let snapshots = drain(n).compactMap { o -> SnapshotMetadata? in
            if case let .installSnapshot(s) = o.message.body, o.message.to == 3 { return s.snapshot.metadata }
            return nil
        }
        #expect(snapshots == [SnapshotMetadata(index: 3, term: 2, configuration: Configuration(voters: [1, 2, 3]))])
        n.step(msg(3, 1, term: n.term, .installSnapshotResponse(InstallSnapshotResponse(lastIndex: 3))))
        _ = n.propose([9])
        #expect(appends(drain(n), to: 3).contains { $0.prevLogIndex == 3 && $0.entries.first?.index == 4 })
    }

    @Test func aSnapshotRecordsTheConfigurationInForceAtItsIndex() {
        let n = makeNode(hardState: HardState(term: 1))
        let added = Configuration(voters: [1, 2, 3], nonVoters: [4])
        let promoted = Configuration(voters: [1, 2, 3, 4])
        let entries = [Entry(index: 1, term: 1, kind: .configuration, data: added.encoded()),
                       Entry(index: 2, term: 1, kind: .noop),
                       Entry(index: 3, term: 1, kind: .configuration, data: promoted.encoded()),
                       Entry(index: 4, term: 1, kind: .normal, data: [7])]
        n.step(msg(2, 1, term: 1, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: entries, leaderCommit: 4))))
        drain(n)
        #expect(n.appliedIndex == 4)
        // Below the newest change: found in the log.
        n.snapshotTaken(at: 2)
        #expect(n.snapshotMetadata == SnapshotMetadata(index: 2, term: 1, configuration: added))
        // At or past it: the configuration in force.
        n.snapshotTaken(at: 4)
        #expect(n.snapshotMetadata == SnapshotMetadata(index: 4, term: 1, configuration: promoted))
    }

    @Test func followerInstallsSnapshotThroughReady_7() {
        let n = makeNode(entries: [Entry(index: 1, term: 1)], hardState: HardState(term: 1))
        let meta = SnapshotMetadata(index: 5, term: 2, configuration: Configuration(voters: [1, 2, 3], nonVoters: [4]))
        n.step(msg(2, 1, term: 2, .installSnapshot(InstallSnapshot(snapshot: Snapshot(metadata: meta, data: [1, 2, 3])))))
        guard let ready = n.ready() else { Issue.record("no ready"); return }
        #expect(ready.snapshot == Snapshot(metadata: meta, data: [1, 2, 3]))
        #expect(ready.hardState?.commitIndex == 5)
        #expect(ready.messages.allSatisfy { !$0.mayPrecedePersistence })
        #expect(n.lastIndex == 5 && n.commitIndex == 5)
        #expect(n.configuration == meta.configuration)
        n.advance(ready)
        #expect(n.appliedIndex == 5)
    }

    @Test func snapshotBelowCommitIsAnsweredWithoutInstalling() {
        let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 1)], hardState: HardState(term: 1, commitIndex: 2))
        n.step(msg(2, 1, term: 1, .installSnapshot(InstallSnapshot(snapshot: Snapshot(metadata: SnapshotMetadata(index: 1, term: 1, configuration: Configuration(voters: [1, 2, 3])))))))
        let ready = n.ready()
        #expect(ready?.snapshot == nil)
        #expect(n.lastIndex == 2)
    }
}
