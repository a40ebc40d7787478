// What the agent needs from a replicated command log: the surface of `RaftReplicator` the HTTP
// endpoints use, so they depend on these few calls rather than on the whole replicator.
// Loop-confined, like the replicator.
import RaftCore
import StateStore

public protocol ReplicatedLog: AnyObject {
    /// Read-only view of the state store for the loop thread.
    var reader: StateStore { get }
    /// Called on the loop thread when applied commands become visible to `reader` (wakes
    /// blocking queries).
    var onApplied: ((AppliedBatch) -> Void)? { get set }
    var lastAppliedIndex: UInt64 { get }
    /// Whether this server knows a current leader (Consul's `X-Consul-KnownLeader`).
    var knownLeader: Bool { get }
    /// The leader's server address "host:port", when known.
    var leaderAddress: String? { get }
    /// Addresses of the voting servers (Consul's `/v1/status/peers`).
    var voterAddresses: [String] { get }
    /// Milliseconds since this server last heard from a leader: 0 on the leader, nil if it
    /// never has (Consul's `X-Consul-LastContact` for `?stale` reads).
    var millisecondsSinceLeaderContact: UInt64? { get }
    func start()
    func close()
    /// Appends a command; completes on the loop thread once it is committed and applied here.
    /// A follower forwards it to the leader.
    func append(_ command: [UInt8], completion: @escaping (Result<CommitOutcome, RaftCommitError>) -> Void)
    /// Completes once this server has applied everything committed before the call and the
    /// leadership was confirmed: reads of `reader` after it are linearizable (`?consistent`).
    func readBarrier(completion: @escaping (Result<UInt64, RaftCommitError>) -> Void)
    /// Consul's default consistency: completes once this server has applied the leader's
    /// commit index as the leader reported it, without confirming the leadership.
    func leaderReadBarrier(completion: @escaping (Result<UInt64, RaftCommitError>) -> Void)
    /// `stale` reads: completes once `reader` shows every write this server has applied (so a
    /// read never misses a write this server already answered); asks no other server.
    func localReadBarrier(completion: @escaping (Result<UInt64, RaftCommitError>) -> Void)
}

extension ReplicatedLog {
    /// A log that is its own leader (one node) is always in contact.
    public var millisecondsSinceLeaderContact: UInt64? { 0 }
}

extension RaftReplicator: ReplicatedLog {
    public var millisecondsSinceLeaderContact: UInt64? {
        if isLeader { return 0 }
        guard let last = lastLeaderContactMilliseconds else { return nil }
        return loop.nowMilliseconds - min(last, loop.nowMilliseconds)
    }

    public var knownLeader: Bool { leaderID != nil }
    public var voterAddresses: [String] { configuration.voters.map { addressBook[$0] ?? "" } }

    public func append(_ command: [UInt8], completion: @escaping (Result<CommitOutcome, RaftCommitError>) -> Void) {
        submit(command, completion: completion)
    }

    public func readBarrier(completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        readIndex(completion: completion)
    }

    public func leaderReadBarrier(completion: @escaping (Result<UInt64, RaftCommitError>) -> Void) {
        leaderReadIndex(completion: completion)
    }
}
