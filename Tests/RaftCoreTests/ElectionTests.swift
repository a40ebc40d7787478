// Elections: §5.1 terms, §5.2 leader election, §5.4.1 the election restriction, pre-vote and
// check-quorum (thesis §9.6, §6.2).

import RaftCore
import Testing

@Suite struct ElectionTests {
    @Test func followerRejectsAppendWithStaleTerm_5_1() {
        let n = makeNode(hardState: HardState(term: 5))
        n.step(msg(2, 1, term: 3, .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: [Entry(index: 1, term: 3)], leaderCommit: 0))))
        let out = messages(drain(n))
        #expect(n.lastIndex == 0)
        #expect(out.count == 1)
        #expect(out.first?.term == 5)
        if case let .appendEntriesResponse(r)? = out.first?.body { #expect(!r.success) } else { Issue.record("no response") }
    }

    @Test func nodeAdoptsHigherTermAndForgetsItsVote_5_1() {
        let n = makeNode(hardState: HardState(term: 2, votedFor: 3))
        n.step(msg(2, 1, term: 4, .heartbeat(Heartbeat(commit: 0, readRound: 0))))
        #expect(n.term == 4)
        #expect(n.votedFor == nil)
        #expect(n.leader == 2)
    }

    @Test func followerGrantsAtMostOneVotePerTerm_5_2() {
        // (already voted for, candidate) -> granted
        let table: [(NodeID?, NodeID, Bool)] = [(nil, 2, true), (2, 2, true), (3, 2, false)]
        for (voted, candidate, granted) in table {
            let n = makeNode(hardState: HardState(term: 1, votedFor: voted))
            n.step(msg(candidate, 1, term: 1, .requestVote(VoteRequest(lastLogIndex: 0, lastLogTerm: 0, preVote: false, leadershipTransfer: false))))
            let out = drain(n)
            guard case let .requestVoteResponse(r)? = out.first?.message.body else { Issue.record("no response"); continue }
            #expect(r.granted == granted, "votedFor=\(String(describing: voted)) candidate=\(candidate)")
        }
    }

    @Test func voteRequiresCandidateLogAtLeastAsUpToDate_5_4_1() {
        // Voter's log: terms [1, 2] (last index 2, last term 2).
        let table: [(lastIndex: UInt64, lastTerm: UInt64, granted: Bool)] = [
            (1, 1, false), (3, 1, false), (1, 2, false), (2, 2, true), (3, 2, true), (1, 3, true),
        ]
        for row in table {
            let n = makeNode(entries: [Entry(index: 1, term: 1), Entry(index: 2, term: 2)], hardState: HardState(term: 2))
            n.step(msg(2, 1, term: 3, .requestVote(VoteRequest(lastLogIndex: row.lastIndex, lastLogTerm: row.lastTerm, preVote: false, leadershipTransfer: false))))
            guard case let .requestVoteResponse(r)? = drain(n).first?.message.body else { Issue.record("no response"); continue }
            #expect(r.granted == row.granted, "candidate last (\(row.lastIndex), \(row.lastTerm))")
        }
    }

    @Test func electionTimeoutIsRandomizedWithinTAnd2T_5_2() {
        var seen = Set<Int>()
        for seed in 0 ..< 200 as Range<UInt64> {
            let n = makeNode(seed: seed)
            let ticks = tickUntilCampaign(n)
            #expect(ticks >= 10 && ticks < 20)
            seen.insert(ticks)
        }
        #expect(seen.count > 5, "timeouts should spread over [T, 2T)")
    }

    @Test func preVoteDoesNotIncreaseTerm() {
        let n = makeNode(hardState: HardState(term: 3))
        _ = tickUntilCampaign(n)
        #expect(n.role == .preCandidate)
        #expect(n.term == 3)
        #expect(n.votedFor == nil)
        let requests = messages(drain(n))
        #expect(requests.count == 2)
        for m in requests {
            guard case let .requestVote(v) = m.body else { Issue.record("expected a pre-vote"); continue }
            #expect(v.preVote)
            #expect(m.term == 4)
        }
    }

    @Test func preVoteRequestsMayLeaveBeforePersistenceButVotesMayNot() {
        let n = makeNode(hardState: HardState(term: 3))
        _ = tickUntilCampaign(n)
        #expect(drain(n).allSatisfy { $0.mayPrecedePersistence })
        n.step(msg(2, 1, term: 4, .requestVoteResponse(VoteResponse(granted: true, preVote: true))))
        #expect(n.role == .candidate && n.term == 4 && n.votedFor == 1)
        let votes = drain(n)
        #expect(votes.count == 2)
        #expect(votes.allSatisfy { !$0.mayPrecedePersistence })
    }

    @Test func preVoteIsRejectedWhileALeaderIsHeardFrom() {
        let n = makeNode(hardState: HardState(term: 2))
        n.step(msg(3, 1, term: 2, .heartbeat(Heartbeat(commit: 0, readRound: 0))))
        drain(n)
        n.step(msg(2, 1, term: 3, .requestVote(VoteRequest(lastLogIndex: 5, lastLogTerm: 2, preVote: true, leadershipTransfer: false))))
        #expect(drain(n).isEmpty, "within the lease the pre-vote is ignored")
        for _ in 0 ..< 10 { n.tick() }
        // Lease expired (the node may now be campaigning itself, its term still 2).
        n.step(msg(2, 1, term: 3, .requestVote(VoteRequest(lastLogIndex: 5, lastLogTerm: 2, preVote: true, leadershipTransfer: false))))
        let granted = drain(n).contains {
            if case let .requestVoteResponse(r) = $0.message.body { return r.granted && $0.message.to == 2 }
            return false
        }
        #expect(granted)
        #expect(n.term == 2)
    }

    @Test func candidateWithMajorityBecomesLeaderAndAppendsNoop_5_2_8() {
        let n = makeNode()
        elect(n)
        #expect(n.role == .leader)
        #expect(n.lastIndex == 1)
        #expect(n.entry(at: 1)?.kind == .noop)
        #expect(n.entry(at: 1)?.term == n.term)
    }

    @Test func candidateRejectedByMajorityStepsDown_5_2() {
        let n = makeNode(config: { var c = RaftConfig(); c.preVote = false; return c }())
        _ = tickUntilCampaign(n)
        #expect(n.role == .candidate)
        n.step(msg(2, 1, term: n.term, .requestVoteResponse(VoteResponse(granted: false, preVote: false))))
        n.step(msg(3, 1, term: n.term, .requestVoteResponse(VoteResponse(granted: false, preVote: false))))
        #expect(n.role == .follower)
    }

    @Test func candidateStepsDownOnAppendFromLeaderOfSameTerm_5_2() {
        let n = makeNode(config: { var c = RaftConfig(); c.preVote = false; return c }())
        _ = tickUntilCampaign(n)
        n.step(msg(2, 1, term: n.term, .heartbeat(Heartbeat(commit: 0, readRound: 0))))
        #expect(n.role == .follower)
        #expect(n.leader == 2)
    }

    @Test func checkQuorumStepsDownIsolatedLeader() {
        let n = makeNode()
        elect(n)
        for _ in 0 ..< 2 * n.config.electionTicks { n.tick(); drain(n) }
        #expect(n.role == .follower)
    }

    @Test func checkQuorumKeepsLeaderThatHearsFromAMajority() {
        let n = makeNode()
        elect(n)
        for _ in 0 ..< 3 * n.config.electionTicks {
            n.tick()
            drain(n)
            n.step(msg(2, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: 0))))
        }
        #expect(n.role == .leader)
    }

    @Test func nonVoterNeverCampaigns_4_2_1() {
        let n = makeNode(id: 4, voters: [1, 2, 3], nonVoters: [4])
        for _ in 0 ..< 100 { n.tick() }
        #expect(n.role == .follower)
        #expect(drain(n).isEmpty)
    }

    @Test func configValidateNamesTheBadField() {
        let table: [(WritableKeyPath<RaftConfig, Int>, Int, String)] = [
            (\.electionTicks, 1, "electionTicks"), (\.heartbeatTicks, 0, "heartbeatTicks"),
            (\.heartbeatTicks, 10, "heartbeatTicks"), (\.maxInflightMessages, 0, "maxInflightMessages"),
            (\.maxAppendEntries, 0, "maxAppendEntries"), (\.maxAppendBytes, 0, "maxAppendBytes"),
        ]
        for (path, value, field) in table {
            var c = RaftConfig()
            c[keyPath: path] = value
            #expect(throws: RaftConfigError.self) { try c.validate() }
            do { try c.validate() } catch { if case let .invalid(f, _) = error { #expect(f == field) } }
        }
        #expect(throws: Never.self) { try RaftConfig().validate() }
    }
}
