// The one Config of the Raft core: timing in ticks, and every limit the core enforces.
// The caller decides how long a tick is; the core never reads a clock.

/// Tunables of one Raft node. Every queue or batch the core builds is bounded by a field here.
public struct RaftConfig: Sendable, Equatable {
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout is
    /// drawn uniformly from [electionTicks, 2 * electionTicks) (Raft §5.2). Also the window of
    /// check-quorum, of the vote lease, and of a leadership transfer.
    public var electionTicks: Int = 10
    /// Ticks between a leader's heartbeats; must be well below `electionTicks`.
    public var heartbeatTicks: Int = 1
    /// Unacknowledged AppendEntries per follower in the pipelined (replicate) state. Kept at 16
    /// after the sweep in Benchmarks/README.md ("Pipeline sweep"): no effect on loopback, and
    /// with a 10 ms round trip 8 or more in flight keep the rate that 1 loses.
    public var maxInflightMessages: Int = 16
    /// Entries per AppendEntries message.
    public var maxAppendEntries: Int = 64
    /// Payload bytes per AppendEntries message (at least one entry is always sent).
    public var maxAppendBytes: Int = 1 << 20
    /// A leader that has not heard from a quorum within an election timeout steps down.
    public var checkQuorum: Bool = true
    /// Campaign with a pre-vote round that does not bump the term (thesis §9.6).
    public var preVote: Bool = true
    /// Proposals appended but not yet committed; further proposals are refused.
    public var maxUncommittedEntries: Int = 8192
    /// ReadIndex requests waiting for leadership confirmation.
    public var maxPendingReads: Int = 4096
    /// Committed entries handed to the application in one Ready.
    public var maxApplyEntriesPerReady: Int = 1024

    public init() {}

    /// Checks the fields; the error names the first bad one.
    public func validate() throws(RaftConfigError) {
        if electionTicks < 2 { throw .invalid(field: "electionTicks", reason: "must be at least 2") }
        if heartbeatTicks < 1 { throw .invalid(field: "heartbeatTicks", reason: "must be at least 1") }
        if heartbeatTicks >= electionTicks {
            throw .invalid(field: "heartbeatTicks", reason: "must be less than electionTicks")
        }
        if maxInflightMessages < 1 { throw .invalid(field: "maxInflightMessages", reason: "must be at least 1") }
        if maxAppendEntries < 1 { throw .invalid(field: "maxAppendEntries", reason: "must be at least 1") }
        if maxAppendBytes < 1 { throw .invalid(field: "maxAppendBytes", reason: "must be at least 1") }
        if maxUncommittedEntries < 1 { throw .invalid(field: "maxUncommittedEntries", reason: "must be at least 1") }
        if maxPendingReads < 1 { throw .invalid(field: "maxPendingReads", reason: "must be at least 1") }
        if maxApplyEntriesPerReady < 1 {
            throw .invalid(field: "maxApplyEntriesPerReady", reason: "must be at least 1")
        }
    }
}

public enum RaftConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(field: String, reason: String)
    public var description: String {
        switch self {
        case let .invalid(field, reason): return "raft config: \(field) \(reason)"
        }
    }
}

/// SplitMix64, the core's only source of randomness (election timeouts). Seeded by the caller.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func next(below bound: Int) -> Int {
        precondition(bound > 0)
        return Int(next() % UInt64(bound))
    }
}
