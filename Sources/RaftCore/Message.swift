// The messages Raft nodes exchange (Figure 2 plus pre-vote, heartbeats, TimeoutNow and
// InstallSnapshot). Every message carries the sender's term; the body says what it is.

public struct Message: Sendable, Equatable {
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    public var body: MessageBody

    public init(from: NodeID, to: NodeID, term: UInt64, body: MessageBody) {
        self.from = from
        self.to = to
        self.term = term
        self.body = body
    }
}

public enum MessageBody: Sendable, Equatable {
    case appendEntries(AppendEntries)
    case appendEntriesResponse(AppendEntriesResponse)
    case requestVote(VoteRequest)
    case requestVoteResponse(VoteResponse)
    case heartbeat(Heartbeat)
    case heartbeatResponse(HeartbeatResponse)
    case installSnapshot(InstallSnapshot)
    case installSnapshotResponse(InstallSnapshotResponse)
    /// Sent by a leader handing over leadership: start an election now, skipping pre-vote (§3.10).
    case timeoutNow
}

public struct AppendEntries: Sendable, Equatable {
    public var prevLogIndex: UInt64
    public var prevLogTerm: UInt64
    public var entries: [Entry]
    public var leaderCommit: UInt64
    public init(prevLogIndex: UInt64, prevLogTerm: UInt64, entries: [Entry], leaderCommit: UInt64) {
        self.prevLogIndex = prevLogIndex
        self.prevLogTerm = prevLogTerm
        self.entries = entries
        self.leaderCommit = leaderCommit
    }
}

public struct AppendEntriesResponse: Sendable, Equatable {
    public var success: Bool
    /// On success the last index known to match the leader; on rejection the rejected
    /// `prevLogIndex`.
    public var index: UInt64
    /// Rejection hint for a fast back-off: the follower's term at `prevLogIndex` and the first
    /// index it holds of that term, or term 0 and its last index + 1 when its log is shorter.
    public var hintTerm: UInt64
    public var hintIndex: UInt64
    public init(success: Bool, index: UInt64, hintTerm: UInt64 = 0, hintIndex: UInt64 = 0) {
        self.success = success
        self.index = index
        self.hintTerm = hintTerm
        self.hintIndex = hintIndex
    }
}

public struct VoteRequest: Sendable, Equatable {
    public var lastLogIndex: UInt64
    public var lastLogTerm: UInt64
    /// A pre-vote: the term in the message is the term the sender would campaign in.
    public var preVote: Bool
    /// Part of a leadership transfer: ignore the leader lease.
    public var leadershipTransfer: Bool
    public init(lastLogIndex: UInt64, lastLogTerm: UInt64, preVote: Bool, leadershipTransfer: Bool) {
        self.lastLogIndex = lastLogIndex
        self.lastLogTerm = lastLogTerm
        self.preVote = preVote
        self.leadershipTransfer = leadershipTransfer
    }
}

public struct VoteResponse: Sendable, Equatable {
    public var granted: Bool
    public var preVote: Bool
    public init(granted: Bool, preVote: Bool) {
        self.granted = granted
        self.preVote = preVote
    }
}

public struct Heartbeat: Sendable, Equatable {
    /// min(leader commit, follower's match): never ahead of what the follower is known to hold.
    public var commit: UInt64
    /// The newest ReadIndex round this heartbeat confirms (0: none).
    public var readRound: UInt64
    public init(commit: UInt64, readRound: UInt64) {
        self.commit = commit
        self.readRound = readRound
    }
}

public struct HeartbeatResponse: Sendable, Equatable {
    public var readRound: UInt64
    public init(readRound: UInt64) { self.readRound = readRound }
}

public struct InstallSnapshot: Sendable, Equatable {
    public var snapshot: Snapshot
    public init(snapshot: Snapshot) { self.snapshot = snapshot }
}

public struct InstallSnapshotResponse: Sendable, Equatable {
    /// The follower's log now matches the leader's up to here.
    public var lastIndex: UInt64
    public init(lastIndex: UInt64) { self.lastIndex = lastIndex }
}

/// A message to send, and whether it may leave before the Ready's writes are durable.
/// Leaders' messages may (thesis §10.2.1); anything that vouches for persisted state
/// (votes, append acknowledgements) must wait for the write to complete.
public struct OutgoingMessage: Sendable, Equatable {
    public var message: Message
    public var mayPrecedePersistence: Bool
}
