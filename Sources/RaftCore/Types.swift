// The values the core and its caller exchange: log entries, hard state, configurations,
// snapshot metadata, and the results of the node's client-facing calls.

public typealias NodeID = UInt64

public enum EntryKind: UInt8, Sendable, Equatable {
    /// An application command.
    case normal = 0
    /// The empty entry a new leader appends so it can commit entries of its term (§5.4.2, §8).
    case noop = 1
    /// `data` is an encoded `Configuration`; it takes effect when appended (thesis §4.1).
    case configuration = 2
}

public struct Entry: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    public var kind: EntryKind
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.index = index
        self.term = term
        self.kind = kind
        self.data = data
    }

    /// What the entry counts for against `maxAppendBytes`.
    var byteCount: Int { data.count + 24 }
}

/// What must be durable before the node answers votes or acknowledges appends (Figure 2).
public struct HardState: Sendable, Equatable {
    public var term: UInt64
    public var votedFor: NodeID?
    public var commitIndex: UInt64

    public init(term: UInt64 = 0, votedFor: NodeID? = nil, commitIndex: UInt64 = 0) {
        self.term = term
        self.votedFor = votedFor
        self.commitIndex = commitIndex
    }
}

/// The cluster membership: voters decide elections and commitment; non-voters (learners)
/// only receive the log (thesis §4.2.1). Both lists are kept sorted and disjoint.
public struct Configuration: Sendable, Equatable {
    public private(set) var voters: [NodeID]
    public private(set) var nonVoters: [NodeID]

    public init(voters: [NodeID], nonVoters: [NodeID] = []) {
        self.voters = Array(Set(voters)).sorted()
        self.nonVoters = Array(Set(nonVoters).subtracting(voters)).sorted()
    }

    public var members: [NodeID] { (voters + nonVoters).sorted() }
    public func isVoter(_ id: NodeID) -> Bool { voters.contains(id) }
    public func isMember(_ id: NodeID) -> Bool { voters.contains(id) || nonVoters.contains(id) }
    public var quorum: Int { voters.count / 2 + 1 }

    /// The configuration after one single-server change, or why it is not allowed.
    public func applying(_ change: ConfigurationChange) -> Result<Configuration, ConfigurationChangeError> {
        switch change {
        case let .addNonVoter(id):
            if isMember(id) { return .failure(.alreadyMember(id)) }
            return .success(Configuration(voters: voters, nonVoters: nonVoters + [id]))
        case let .promoteToVoter(id):
            guard nonVoters.contains(id) else { return .failure(.notANonVoter(id)) }
            return .success(Configuration(voters: voters + [id], nonVoters: nonVoters.filter { $0 != id }))
        case let .remove(id):
            guard isMember(id) else { return .failure(.notAMember(id)) }
            if voters == [id] { return .failure(.wouldRemoveLastVoter(id)) }
            return .success(Configuration(voters: voters.filter { $0 != id }, nonVoters: nonVoters.filter { $0 != id }))
        }
    }
}

/// One server at a time (thesis §4.1).
public enum ConfigurationChange: Sendable, Equatable {
    case addNonVoter(NodeID)
    case promoteToVoter(NodeID)
    case remove(NodeID)
}

public enum ConfigurationChangeError: Error, Sendable, Equatable {
    case alreadyMember(NodeID)
    case notANonVoter(NodeID)
    case notAMember(NodeID)
    case wouldRemoveLastVoter(NodeID)
}

/// Where a snapshot sits in the log and the configuration in force at that point.
public struct SnapshotMetadata: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    public var configuration: Configuration

    public init(index: UInt64, term: UInt64, configuration: Configuration) {
        self.index = index
        self.term = term
        self.configuration = configuration
    }
}

/// A snapshot to install: the metadata, plus the state machine's bytes, which the core never
/// looks at (the transport or the simulator fills them in).
public struct Snapshot: Sendable, Equatable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata, data: [UInt8] = []) {
        self.metadata = metadata
        self.data = data
    }
}

/// A linearizable read may be served once the state machine has applied `index`.
public struct ReadState: Sendable, Equatable {
    public var index: UInt64
    public var context: UInt64
    public init(index: UInt64, context: UInt64) {
        self.index = index
        self.context = context
    }
}

public enum ProposeResult: Sendable, Equatable {
    case accepted(index: UInt64, term: UInt64)
    case notLeader(leader: NodeID?)
    case leadershipTransferInProgress
    case tooLarge(bytes: Int, limit: Int)
    case tooManyUncommitted(limit: Int)
    case configurationChangeInProgress
    case invalidConfigurationChange(ConfigurationChangeError)
}

public enum ReadIndexResult: Sendable, Equatable {
    /// The read state will appear in a later `Ready` with the same context.
    case pending
    case notLeader(leader: NodeID?)
    case tooManyPendingReads(limit: Int)
}

public enum TransferResult: Sendable, Equatable {
    case started
    case notLeader(leader: NodeID?)
    case alreadyLeader
    case targetNotAVoter(NodeID)
}
