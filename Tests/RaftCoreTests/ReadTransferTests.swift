// ReadIndex (thesis §6.4) and leadership transfer (thesis §3.10).

import RaftCore
import Testing

func heartbeatRounds(_ out: [OutgoingMessage]) -> [(NodeID, UInt64)] {
    out.compactMap {
        if case let .heartbeat(h) = $0.message.body, h.readRound > 0 { return ($0.message.to, h.readRound) }
        return nil
    }
}

@Suite struct ReadIndexTests {
    @Test func readIndexWaitsForLeaderToCommitAnEntryOfItsTerm_6_4() {
        let n = makeNode()
        elect(n)
        #expect(n.readIndex(context: 7) == .pending)
        #expect(heartbeatRounds(drain(n)).isEmpty, "no confirmation round before the no-op commits")
        ack(n, from: 2, index: 1)
        let rounds = heartbeatRounds(drain(n))
        #expect(rounds.map(\.0).sorted() == [2, 3])
        n.step(msg(2, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: rounds[0].1))))
        var served: [ReadState] = []
        while let r = n.ready() { served += r.readStates; n.advance(r) }
        #expect(served == [ReadState(index: 1, context: 7)])
    }

    @Test func readIndexNeedsAQuorumOfHeartbeatAcknowledgements_6_4() {
        let n = makeNode(voters: [1, 2, 3, 4, 5])
        elect(n)
        ack(n, from: 2, index: 1)
        ack(n, from: 3, index: 1)
        drain(n)
        _ = n.readIndex(context: 1)
        let round = heartbeatRounds(drain(n)).first!.1
        n.step(msg(2, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: round))))
        #expect(n.ready()?.readStates.isEmpty ?? true, "leader + 1 of 5 is not a quorum")
        n.step(msg(4, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: round))))
        #expect(n.ready()?.readStates == [ReadState(index: 1, context: 1)])
    }

    @Test func readIndexOnFollowerNamesTheLeader() {
        let n = makeNode(hardState: HardState(term: 1))
        n.step(msg(2, 1, term: 1, .heartbeat(Heartbeat(commit: 0, readRound: 0))))
        #expect(n.readIndex(context: 1) == .notLeader(leader: 2))
    }

    @Test func singleVoterServesReadsWithoutPeers() {
        let n = makeNode(voters: [1])
        elect(n)
        _ = n.readIndex(context: 3)
        var served: [ReadState] = []
        while let r = n.ready() { served += r.readStates; n.advance(r) }
        #expect(served == [ReadState(index: 1, context: 3)])
    }
}

@Suite struct LeadershipTransferTests {
    @Test func transferBringsTargetUpToDateThenSendsTimeoutNow_3_10() {
        let n = makeNode()
        elect(n)
        #expect(n.transferLeadership(to: 2) == .started)
        #expect(!drain(n).contains { $0.message.body == .timeoutNow }, "target not caught up yet")
        #expect(n.propose([1]) == .leadershipTransferInProgress)
        ack(n, from: 2, index: 1)
        #expect(drain(n).contains { $0.message.body == .timeoutNow && $0.message.to == 2 })
    }

    @Test func timeoutNowStartsAnElectionWithoutPreVote() {
        let n = makeNode(hardState: HardState(term: 2))
        n.step(msg(2, 1, term: 2, .timeoutNow))
        #expect(n.role == .candidate)
        #expect(n.term == 3)
        let requests = drain(n).compactMap { o -> VoteRequest? in
            if case let .requestVote(v) = o.message.body { return v }
            return nil
        }
        #expect(requests.count == 2)
        #expect(requests.allSatisfy { !$0.preVote && $0.leadershipTransfer })
    }

    @Test func transferVoteIsGrantedDespiteTheLeaderLease() {
        let n = makeNode(hardState: HardState(term: 2))
        n.step(msg(3, 1, term: 2, .heartbeat(Heartbeat(commit: 0, readRound: 0))))
        drain(n)
        n.step(msg(2, 1, term: 3, .requestVote(VoteRequest(lastLogIndex: 0, lastLogTerm: 0, preVote: false, leadershipTransfer: true))))
        #expect(n.term == 3)
        #expect(n.votedFor == 2)
    }

    @Test func transferAbortsAfterAnElectionTimeout() {
        let n = makeNode()
        elect(n)
        _ = n.transferLeadership(to: 2)
        for _ in 0 ..< n.config.electionTicks {
            n.tick()
            drain(n)
            n.step(msg(3, 1, term: n.term, .heartbeatResponse(HeartbeatResponse(readRound: 0))))
        }
        #expect(n.role == .leader)
        #expect(n.leadershipTransferTarget == nil)
        if case .accepted = n.propose([1]) {} else { Issue.record("proposals resume after the transfer aborts") }
    }

    @Test func transferToNonVoterIsRefused() {
        let n = makeNode(voters: [1, 2, 3], nonVoters: [4])
        elect(n)
        #expect(n.transferLeadership(to: 4) == .targetNotAVoter(4))
        #expect(n.transferLeadership(to: 1) == .alreadyLeader)
    }
}
