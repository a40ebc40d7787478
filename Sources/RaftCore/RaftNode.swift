// One Raft server as a deterministic state machine: `step` for messages, `tick` for time,
// client calls (propose, readIndex, transferLeadership, proposeConfigurationChange), and the
// Ready/advance/persisted hand-off through which the caller performs all I/O.
// Not thread-safe: one owner (the loop thread, or the simulator) drives it.

public enum Role: Sendable, Equatable {
    case follower
    case preCandidate
    case candidate
    case leader
}

public final class RaftNode {
    public let id: NodeID
    public let config: RaftConfig
    var random: SplitMix64

    public internal(set) var role: Role = .follower
    public internal(set) var term: UInt64
    public internal(set) var votedFor: NodeID?
    /// The leader of the current term, if known.
    public internal(set) var leader: NodeID?
    public internal(set) var commitIndex: UInt64
    /// Highest index the application has applied (acknowledged through `advance`).
    public internal(set) var appliedIndex: UInt64
    /// Highest index known durable in this node's own storage.
    public internal(set) var persistedIndex: UInt64
    /// The latest configuration in the log, in force from the moment it was appended.
    public internal(set) var configuration: Configuration
    /// Index of the entry (or snapshot) that carried `configuration`.
    public internal(set) var configurationIndex: UInt64

    var log: any RaftLogStorage

    // Hand-off bookkeeping for Ready.
    var unsentFrom: UInt64
    var appliedHandedOut: UInt64
    var lastHardState: HardState
    var outbox: [OutgoingMessage] = []
    /// Proposals appended since the last Ready; their AppendEntries go out when the Ready is
    /// taken, so every proposal between two Readies shares one message per follower.
    var proposalsAwaitingBroadcast = false
    var snapshotToInstall: Snapshot?

    // Timers.
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0

    // Candidate state.
    var votes: [NodeID: Bool] = [:]

    // Leader state.
    var progress: [NodeID: Progress] = [:]
    /// A configuration change is uncommitted while this is above the commit index.
    var pendingConfigurationIndex: UInt64 = 0
    var transferTarget: NodeID?
    var transferElapsed = 0
    var reads = ReadTracker()

    /// A node starting from persisted state: `log` holds its snapshot point and durable
    /// entries; a new cluster's log is a snapshot at index 0 carrying the bootstrap voters.
    public init(id: NodeID, config: RaftConfig, log: any RaftLogStorage, hardState: HardState, seed: UInt64) {
        do { try config.validate() } catch { preconditionFailure("\(error)") }
        self.id = id
        self.config = config
        self.random = SplitMix64(state: seed ^ (id &* 0x9E37_79B9_7F4A_7C15))
        self.log = log
        self.term = hardState.term
        self.votedFor = hardState.votedFor
        precondition(hardState.commitIndex <= log.lastIndex, "persisted commit index beyond the persisted log")
        self.commitIndex = max(hardState.commitIndex, log.snapshot.index)
        self.appliedIndex = log.snapshot.index
        self.appliedHandedOut = log.snapshot.index
        self.persistedIndex = log.lastIndex
        self.unsentFrom = log.lastIndex + 1
        self.lastHardState = HardState(term: hardState.term, votedFor: hardState.votedFor, commitIndex: max(hardState.commitIndex, log.snapshot.index))
        self.configuration = log.snapshot.configuration
        self.configurationIndex = log.snapshot.index
        (configuration, configurationIndex) = latestConfiguration(atOrBelow: log.lastIndex)
        resetElectionTimeout()
    }

    public var lastIndex: UInt64 { log.lastIndex }
    public var firstIndex: UInt64 { log.firstIndex }
    public var snapshotMetadata: SnapshotMetadata { log.snapshot }
    public var hardState: HardState { HardState(term: term, votedFor: votedFor, commitIndex: commitIndex) }
    public var isVoter: Bool { configuration.isVoter(id) }
    public var leadershipTransferTarget: NodeID? { transferTarget }
    public func term(at index: UInt64) -> UInt64? { log.term(at: index) }
    public func entry(at index: UInt64) -> Entry? { log.entry(at: index) }

    // MARK: Time

    /// Advances logical time by one tick.
    public func tick() {
        defer { checkInvariants() }
        if role == .leader {
            tickLeader()
        } else {
            electionElapsed += 1
            if isVoter && electionElapsed >= randomizedElectionTimeout {
                electionElapsed = 0
                campaign(preVote: config.preVote, transfer: false)
            }
        }
    }

    private func tickLeader() {
        electionElapsed += 1
        heartbeatElapsed += 1
        if transferTarget != nil {
            transferElapsed += 1
            if transferElapsed >= config.electionTicks { abortLeadershipTransfer() }
        }
        if electionElapsed >= config.electionTicks {
            electionElapsed = 0
            if config.checkQuorum {
                if !quorumRecentlyActive() {
                    becomeFollower(term: term, leader: nil)
                    return
                }
                for peer in progress.keys where peer != id { progress[peer]!.recentActive = false }
            }
        }
        for peer in sortedPeers() {
            if case .snapshot = progress[peer]!.state {
                progress[peer]!.snapshotElapsed += 1
                if progress[peer]!.snapshotElapsed >= config.electionTicks {
                    // The snapshot or its answer was lost: probe again, which resends it.
                    progress[peer]!.state = .probe
                    progress[peer]!.becomeProbe()
                    sendAppend(to: peer, sendIfEmpty: true)
                }
            }
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
    }

    /// Check-quorum (thesis §6.2): a quorum of voters, counting this node if it votes, was
    /// heard from during the last election timeout.
    func quorumRecentlyActive() -> Bool {
        let active = configuration.voters.filter { $0 == id || progress[$0]?.recentActive == true }.count
        return active >= configuration.quorum
    }

    /// Invariants that must hold between any two calls; a failure stops the process rather
    /// than continue on corrupted state.
    func checkInvariants() {
        precondition(commitIndex <= log.lastIndex, "commit index \(commitIndex) beyond the last index \(log.lastIndex)")
        precondition(appliedIndex <= commitIndex, "applied index \(appliedIndex) passed the commit index \(commitIndex)")
        precondition(persistedIndex <= log.lastIndex, "persisted index beyond the last index")
        precondition(term >= lastHardState.term, "term decreased")
        if role == .leader, let own = progress[id] {
            precondition(own.match <= persistedIndex, "leader counts an unpersisted entry of its own")
        }
    }

    func resetElectionTimeout() {
        randomizedElectionTimeout = config.electionTicks + random.next(below: config.electionTicks)
    }

    // MARK: Messages

    func send(_ body: MessageBody, to peer: NodeID, term messageTerm: UInt64? = nil, early: Bool) {
        let m = Message(from: id, to: peer, term: messageTerm ?? term, body: body)
        outbox.append(OutgoingMessage(message: m, mayPrecedePersistence: early))
    }

    /// Voters and non-voters other than this node, in a fixed order (determinism).
    func sortedPeers() -> [NodeID] {
        progress.keys.filter { $0 != id }.sorted()
    }

    /// Handles a message from a peer (§5.1: a newer term always wins; a stale one is dropped).
    public func step(_ m: Message) {
        guard m.to == id, m.from != id else { return }
        defer { checkInvariants() }
        if m.term > term {
            switch m.body {
            case let .requestVote(request):
                // Vote lease (thesis §4.2.3): while a leader is known to be alive, ignore
                // campaigns, unless the leader itself asked for this election.
                let inLease = leader != nil && electionElapsed < config.electionTicks
                if inLease && !request.leadershipTransfer && (config.checkQuorum || request.preVote) { return }
                if !request.preVote { becomeFollower(term: m.term, leader: nil) }
            case let .requestVoteResponse(response) where response.preVote && response.granted:
                break // the granted pre-vote carries the term we would campaign in
            case .appendEntries, .heartbeat, .installSnapshot:
                becomeFollower(term: m.term, leader: m.from)
            default:
                becomeFollower(term: m.term, leader: nil)
            }
        } else if m.term < term {
            switch m.body {
            case .appendEntries, .heartbeat:
                // A deposed leader (e.g. across a partition) learns the newer term from this
                // answer; without it, pre-vote and check-quorum could leave it stranded.
                if config.checkQuorum || config.preVote {
                    send(.appendEntriesResponse(AppendEntriesResponse(success: false, index: 0)), to: m.from, early: false)
                }
            case let .requestVote(request) where request.preVote:
                send(.requestVoteResponse(VoteResponse(granted: false, preVote: true)), to: m.from, early: true)
            default:
                break
            }
            return
        }

        switch m.body {
        case let .requestVote(request):
            handleVoteRequest(m, request)
        case let .requestVoteResponse(response):
            handleVoteResponse(m, response)
        case let .appendEntries(append):
            guard acceptLeaderMessage(from: m.from) else { return }
            handleAppendEntries(from: m.from, append)
        case let .heartbeat(heartbeat):
            guard acceptLeaderMessage(from: m.from) else { return }
            handleHeartbeat(from: m.from, heartbeat)
        case let .installSnapshot(install):
            guard acceptLeaderMessage(from: m.from) else { return }
            handleInstallSnapshot(from: m.from, install.snapshot)
        case let .appendEntriesResponse(response):
            guard role == .leader else { return }
            handleAppendResponse(from: m.from, response)
        case let .heartbeatResponse(response):
            guard role == .leader else { return }
            handleHeartbeatResponse(from: m.from, response)
        case let .installSnapshotResponse(response):
            guard role == .leader else { return }
            handleSnapshotResponse(from: m.from, response)
        case .timeoutNow:
            guard role != .leader else { return }
            // Leadership transfer (thesis §3.10): campaign at once, no pre-vote.
            campaign(preVote: false, transfer: true)
        }
    }

    /// A message only the current term's leader sends: candidates step down (§5.2) and the
    /// election timer restarts.
    private func acceptLeaderMessage(from peer: NodeID) -> Bool {
        if role == .leader { return false } // impossible by election safety; never act on it
        if role != .follower || leader != peer { becomeFollower(term: term, leader: peer) }
        electionElapsed = 0
        return true
    }

    // MARK: Client operations

    /// Appends a command to the log (leader only).
    public func propose(_ data: [UInt8]) -> ProposeResult {
        guard role == .leader else { return .notLeader(leader: leader) }
        if transferTarget != nil { return .leadershipTransferInProgress }
        if data.count > config.maxAppendBytes { return .tooLarge(bytes: data.count, limit: config.maxAppendBytes) }
        if log.lastIndex - commitIndex >= UInt64(config.maxUncommittedEntries) {
            return .tooManyUncommitted(limit: config.maxUncommittedEntries)
        }
        let index = appendAsLeader(kind: .normal, data: data)
        proposalsAwaitingBroadcast = true
        return .accepted(index: index, term: term)
    }

    /// Starts handing leadership to `target` (thesis §3.10); proposals are refused until it
    /// completes or an election timeout passes.
    public func transferLeadership(to target: NodeID) -> TransferResult {
        guard role == .leader else { return .notLeader(leader: leader) }
        if target == id { return .alreadyLeader }
        guard configuration.isVoter(target), progress[target] != nil else { return .targetNotAVoter(target) }
        transferTarget = target
        transferElapsed = 0
        if progress[target]!.match == log.lastIndex {
            send(.timeoutNow, to: target, early: true)
        } else {
            sendAppend(to: target, sendIfEmpty: true)
        }
        return .started
    }

    func abortLeadershipTransfer() {
        transferTarget = nil
        transferElapsed = 0
    }
}
