// Roles and elections: §5.2 (randomized timeouts, one vote per term), §5.4.1 (the voter's
// log must not be more up to date than the candidate's), pre-vote (thesis §9.6).

extension RaftNode {
    func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
        precondition(newTerm >= term, "term must never decrease")
        if newTerm > term {
            term = newTerm
            votedFor = nil
        }
        if role == .leader { reads.stepDown() }
        role = .follower
        leader = newLeader
        progress = [:]
        votes = [:]
        abortLeadershipTransfer()
        electionElapsed = 0
        heartbeatElapsed = 0
        resetElectionTimeout()
    }

    /// Starts an election: a pre-vote round at term+1 without changing state, or a real one.
    func campaign(preVote: Bool, transfer: Bool) {
        guard isVoter, role != .leader else { return }
        let electionTerm: UInt64
        if preVote {
            role = .preCandidate
            leader = nil
            electionTerm = term + 1
        } else {
            role = .candidate
            term += 1
            votedFor = id
            leader = nil
            electionTerm = term
        }
        votes = [id: true]
        electionElapsed = 0
        resetElectionTimeout()
        if tallyVotes() == .won {
            electionWon(preVote: preVote)
            return
        }
        let request = VoteRequest(lastLogIndex: log.lastIndex, lastLogTerm: log.term(at: log.lastIndex)!,
                                  preVote: preVote, leadershipTransfer: transfer)
        for voter in configuration.voters where voter != id {
            // A real candidate's request waits for its term and self-vote to be durable.
            send(.requestVote(request), to: voter, term: electionTerm, early: preVote)
        }
    }

    private func electionWon(preVote: Bool) {
        if preVote { campaign(preVote: false, transfer: false) } else { becomeLeader() }
    }

    enum VoteTally { case pending, won, lost }

    func tallyVotes() -> VoteTally {
        var granted = 0
        var rejected = 0
        for voter in configuration.voters {
            switch votes[voter] {
            case true?: granted += 1
            case false?: rejected += 1
            case nil: break
            }
        }
        if granted >= configuration.quorum { return .won }
        if rejected >= configuration.quorum { return .lost }
        return .pending
    }

    /// §5.4.1: grant only to a candidate whose log is at least as up to date as ours.
    func isUpToDate(lastIndex candidateIndex: UInt64, lastTerm candidateTerm: UInt64) -> Bool {
        let ourTerm = log.term(at: log.lastIndex)!
        return candidateTerm > ourTerm || (candidateTerm == ourTerm && candidateIndex >= log.lastIndex)
    }

    func handleVoteRequest(_ m: Message, _ request: VoteRequest) {
        let canVote = votedFor == m.from
            || (votedFor == nil && leader == nil)
            || (request.preVote && m.term > term)
        if canVote && isUpToDate(lastIndex: request.lastLogIndex, lastTerm: request.lastLogTerm) {
            send(.requestVoteResponse(VoteResponse(granted: true, preVote: request.preVote)),
                 to: m.from, term: m.term, early: request.preVote)
            if !request.preVote {
                votedFor = m.from
                electionElapsed = 0
            }
        } else {
            send(.requestVoteResponse(VoteResponse(granted: false, preVote: request.preVote)),
                 to: m.from, early: request.preVote)
        }
    }

    func handleVoteResponse(_ m: Message, _ response: VoteResponse) {
        switch (role, response.preVote) {
        case (.preCandidate, true):
            // A rejection at our own term also arrives here; grants carry term + 1.
            guard m.term == term + 1 || (!response.granted && m.term == term) else { return }
        case (.candidate, false):
            guard m.term == term else { return }
        default:
            return
        }
        if votes[m.from] == nil { votes[m.from] = response.granted }
        switch tallyVotes() {
        case .won: electionWon(preVote: response.preVote)
        case .lost: becomeFollower(term: term, leader: nil)
        case .pending: break
        }
    }

    func becomeLeader() {
        precondition(role == .candidate, "only a candidate becomes leader")
        role = .leader
        leader = id
        votes = [:]
        electionElapsed = 0
        heartbeatElapsed = 0
        abortLeadershipTransfer()
        reads = ReadTracker()
        progress = [:]
        for member in configuration.members { addProgress(for: member) }
        if progress[id] == nil { addProgress(for: id) }
        progress[id]!.match = persistedIndex
        progress[id]!.recentActive = true
        // §8 / §5.4.2: a no-op of the new term, so that earlier entries can commit; no
        // configuration change until it has (thesis §4.1, the single-server change fix).
        pendingConfigurationIndex = appendAsLeader(kind: .noop, data: [])
        broadcastAppend()
    }

    func addProgress(for member: NodeID) {
        var p = Progress(next: log.lastIndex + 1, maxInflight: config.maxInflightMessages)
        p.recentActive = true
        progress[member] = p
    }
}
