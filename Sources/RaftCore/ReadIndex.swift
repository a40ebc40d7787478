// Linearizable reads without writing to the log (thesis §6.4, ReadIndex): the leader records
// its commit index, confirms it is still leader with a heartbeat round acknowledged by a
// quorum, and the read may be served once the state machine has applied that index.

struct PendingRead {
    var index: UInt64
    var round: UInt64
    var context: UInt64
}

struct ReadTracker {
    /// Reads that arrived before this leader committed an entry of its term (thesis §6.4 step 1).
    var waitingForFirstCommit: [UInt64] = []
    /// Reads waiting for their heartbeat round to be acknowledged by a quorum.
    var pending: [PendingRead] = []
    /// Confirmed reads waiting for the state machine to reach their index.
    var confirmed: [ReadState] = []
    var latestRound: UInt64 = 0

    var count: Int { waitingForFirstCommit.count + pending.count + confirmed.count }

    /// A deposed leader can no longer confirm anything; already confirmed reads stay valid.
    mutating func stepDown() {
        waitingForFirstCommit = []
        pending = []
        latestRound = 0
    }
}

extension RaftNode {
    /// Asks for a linearizable read; `context` identifies it in the resulting ReadState.
    public func readIndex(context: UInt64) -> ReadIndexResult {
        guard role == .leader else { return .notLeader(leader: leader) }
        if reads.count >= config.maxPendingReads { return .tooManyPendingReads(limit: config.maxPendingReads) }
        if log.term(at: commitIndex) != term {
            reads.waitingForFirstCommit.append(context)
        } else {
            startReadRound(contexts: [context])
        }
        return .pending
    }

    func startReadsWaitingForFirstCommit() {
        guard !reads.waitingForFirstCommit.isEmpty, log.term(at: commitIndex) == term else { return }
        let contexts = reads.waitingForFirstCommit
        reads.waitingForFirstCommit = []
        startReadRound(contexts: contexts)
    }

    private func startReadRound(contexts: [UInt64]) {
        reads.latestRound += 1
        let round = reads.latestRound
        for context in contexts { reads.pending.append(PendingRead(index: commitIndex, round: round, context: context)) }
        if progress[id] != nil { progress[id]!.readRoundAcked = round }
        releaseConfirmedReads()
        if !reads.pending.isEmpty {
            for peer in sortedPeers() {
                let commit = min(commitIndex, progress[peer]!.match)
                send(.heartbeat(Heartbeat(commit: commit, readRound: round)), to: peer, early: true)
            }
        }
    }

    /// An acknowledgement of round r vouches for every earlier round of this term too.
    func acknowledgeReadRound(from peer: NodeID, round: UInt64) {
        guard round <= reads.latestRound, progress[peer] != nil else { return }
        progress[peer]!.readRoundAcked = max(progress[peer]!.readRoundAcked, round)
        releaseConfirmedReads()
    }

    private func releaseConfirmedReads() {
        guard !reads.pending.isEmpty, !configuration.voters.isEmpty else { return }
        let acks = configuration.voters.map { progress[$0]?.readRoundAcked ?? 0 }.sorted(by: >)
        let confirmedRound = acks[configuration.quorum - 1]
        while let first = reads.pending.first, first.round <= confirmedRound {
            reads.pending.removeFirst()
            reads.confirmed.append(ReadState(index: first.index, context: first.context))
        }
    }
}
