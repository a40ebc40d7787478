// The one Config of the multi-server replicator (timing, the core's limits, the transport's,
// and the replicator's own queues), and the errors its callers see.
import RaftCore

public struct RaftReplicatorConfig: Sendable, Equatable {
    /// The core's tunables; its timing is in ticks of `tickIntervalMilliseconds`.
    public var raft = RaftConfig()
    /// Length of one Raft tick. 100 ms × electionTicks 10 gives a 1–2 s election timeout and
    /// 100 ms heartbeats, close to Consul's defaults (raft_multiplier 1: 1 s heartbeat timeout).
    public var tickIntervalMilliseconds: UInt64 = 100
    public var transport = RaftTransportConfig()
    /// Proposals accepted by the core and waiting to be applied; beyond this submit fails fast
    /// with `.overloaded`. At most the core's maxUncommittedEntries can be uncommitted anyway.
    public var maxPendingProposals: Int = 8192
    /// Committed entries gathered into one disk job; the rest wait for the next (bounds the
    /// memory of a restart's replay, which hands out the whole committed log again).
    public var maxApplyEntriesPerBatch: Int = 8192
    /// ReadIndex requests waiting; the core bounds its own share with raft.maxPendingReads.
    public var maxPendingReads: Int = 4096
    /// A read not confirmed within this fails with `.timeout` (a deposed leader drops its
    /// unconfirmed reads without answering).
    public var readTimeoutMilliseconds: UInt64 = 5_000
    /// A follower forwards writes, and read-index requests, to the leader (Consul's servers
    /// forward) instead of failing them with `.notLeader`.
    public var forwardWritesToLeader = true
    /// Writes and reads a follower has forwarded to the leader at once; more fail fast with
    /// `.overloaded`.
    public var maxOutstandingForwards: Int = 1024
    /// A forwarded write without an answer in this time fails with `.timeout` (its outcome is
    /// then unknown: it may still commit).
    public var forwardTimeoutMilliseconds: UInt64 = 5_000
    /// An addServer or removeServer that has not completed in this time fails with `.timeout`
    /// (the change may still complete later).
    public var membershipChangeTimeoutMilliseconds: UInt64 = 60_000
    /// Seed of the core's election-timeout randomness; nil draws one.
    public var seed: UInt64?

    // Snapshots and log compaction (Consul's raft_snapshot_* settings; the state lives in LMDB,
    // so a snapshot is a sync of the state environment plus a compaction of the log).
    /// Compact once this many entries were applied since the last snapshot point (Consul's
    /// raft_snapshot_threshold, default 16384).
    public var snapshotThreshold: UInt64 = 16_384
    /// Entries kept behind the snapshot point, so a briefly lagging follower still catches up
    /// from the log (Consul's raft_trailing_logs, default 10240).
    public var trailingLogs: UInt64 = 10_240
    /// How often the threshold is checked (Consul's raft_snapshot_interval, default 30 s).
    public var snapshotIntervalMilliseconds: UInt64 = 30_000
    /// Largest state dump sent or accepted in an InstallSnapshot stream (it streams through
    /// temporary files under the data dir on both sides, never held in memory whole).
    public var maxSnapshotBytes: Int = 1 << 30
    /// Dump bytes per chunk frame of the snapshot stream.
    public var snapshotChunkBytes: Int = 512 << 10
    /// The leader stops writing chunks while this many bytes wait in the socket's queue; the
    /// follower stops reading while this many received bytes wait for its temporary file.
    public var snapshotWindowBytes: Int = 4 << 20
    /// A snapshot stream without progress (bytes sent or received, or the follower's answer
    /// after the last byte) for this long is dropped; the core resends later.
    public var snapshotStallTimeoutMilliseconds: UInt64 = 60_000
    /// How often the state store, which commits without fsync, is synced and checkpointed
    /// (EnvironmentCheckpoint): after a crash the log replays at most about this much, and LMDB
    /// keeps the pages changed since the last checkpoint from reuse until the next one.
    public var stateCheckpointIntervalMilliseconds: UInt64 = 20
    /// How often the journaled log batches are written into the LMDB log (one transaction for
    /// all of them, not synced) and that log is checkpointed, after which the journal may reuse
    /// their space. Entries stay in memory until then. Longer: fewer LMDB pages written per entry.
    public var logCheckpointIntervalMilliseconds: UInt64 = 100
    /// How long applied commands may wait in the state store's held write before it commits
    /// (StateStore.applyHeld), on any server. Writes are answered at once; readers see them at
    /// that commit. A read that waits for its index (default and consistent reads) commits at
    /// once, so only `stale` reads and watchers' wake-ups lag, by up to this much (Consul's
    /// stale reads are documented as "typically within 50 milliseconds of the leader").
    /// One commit for many apply batches writes each B-tree leaf once instead of once per
    /// batch. 0: every apply commits. 50 ms: at 64 connections on 3 servers, 10,100 and 10,500
    /// puts/s with 10 ms, 13,000 and 10,700 with 50 ms, 13,300 and 10,000 with 100 ms
    /// (Benchmarks/README.md, "Write path, part 4").
    public var stateCommitDelayMilliseconds: UInt64 = 50
    /// Size of each of the log's two journal files (Journal.swift), zero-filled when a data dir
    /// is created. A job whose records do not fit is written straight into LMDB and synced.
    public var journalFileBytes: Int = 4 << 20

    public init() {}

    /// For in-process tests: 10 ms ticks (100–200 ms election timeouts).
    public static func fastForTests() -> RaftReplicatorConfig {
        var config = RaftReplicatorConfig()
        config.tickIntervalMilliseconds = 10
        config.transport.reconnectInitialDelayMilliseconds = 5
        config.transport.reconnectMaxDelayMilliseconds = 100
        config.forwardTimeoutMilliseconds = 2_000
        config.readTimeoutMilliseconds = 2_000
        config.membershipChangeTimeoutMilliseconds = 10_000
        config.snapshotIntervalMilliseconds = 100
        config.snapshotStallTimeoutMilliseconds = 10_000
        return config
    }

    public func validate() throws(ReplicationConfigError) {
        do throws(RaftConfigError) {
            try raft.validate()
        } catch {
            throw .invalid("raft.\(error.description)")
        }
        try transport.validate()
        guard tickIntervalMilliseconds > 0 else { throw .invalid("tickIntervalMilliseconds must be > 0") }
        guard maxPendingProposals > 0 else { throw .invalid("maxPendingProposals must be > 0") }
        guard maxApplyEntriesPerBatch >= raft.maxApplyEntriesPerReady else {
            throw .invalid("maxApplyEntriesPerBatch must be >= raft.maxApplyEntriesPerReady")
        }
        guard maxPendingReads > 0 else { throw .invalid("maxPendingReads must be > 0") }
        guard readTimeoutMilliseconds > 0 else { throw .invalid("readTimeoutMilliseconds must be > 0") }
        guard maxOutstandingForwards >= 0 else { throw .invalid("maxOutstandingForwards must be >= 0") }
        guard forwardTimeoutMilliseconds > 0 else { throw .invalid("forwardTimeoutMilliseconds must be > 0") }
        guard membershipChangeTimeoutMilliseconds > 0 else {
            throw .invalid("membershipChangeTimeoutMilliseconds must be > 0")
        }
        guard snapshotThreshold > 0 else { throw .invalid("snapshotThreshold must be > 0") }
        guard snapshotIntervalMilliseconds > 0 else { throw .invalid("snapshotIntervalMilliseconds must be > 0") }
        guard maxSnapshotBytes > 0 else { throw .invalid("maxSnapshotBytes must be > 0") }
        guard snapshotChunkBytes > 0, snapshotChunkBytes < transport.maxFrameBytes else {
            throw .invalid("snapshotChunkBytes must be > 0 and < transport.maxFrameBytes")
        }
        guard stateCheckpointIntervalMilliseconds > 0 else { throw .invalid("stateCheckpointIntervalMilliseconds must be > 0") }
        guard logCheckpointIntervalMilliseconds > 0 else { throw .invalid("logCheckpointIntervalMilliseconds must be > 0") }
        guard journalFileBytes >= 64 << 10 else { throw .invalid("journalFileBytes must be at least 64 KiB") }
        guard snapshotWindowBytes >= snapshotChunkBytes else { throw .invalid("snapshotWindowBytes must be >= snapshotChunkBytes") }
        guard snapshotStallTimeoutMilliseconds > 0 else { throw .invalid("snapshotStallTimeoutMilliseconds must be > 0") }
    }
}

/// Why a write or a consistent read did not complete.
public enum RaftCommitError: Error, Equatable, Sendable, CustomStringConvertible {
    /// This server is not the leader; the leader's address when one is known.
    case notLeader(leaderAddress: String?)
    /// The entry proposed at `index` in `term` was replaced by another leader's entry.
    case leadershipLost(index: UInt64, term: UInt64)
    case leadershipTransferInProgress
    case overloaded(pending: Int, limit: Int)
    case tooLarge(bytes: Int, limit: Int)
    /// No answer in time; a write's outcome is unknown.
    case timeout(String)
    case storage(String)
    case closed
    /// The request cannot be carried out as asked (an invalid membership change, a command
    /// using the replicator's reserved first byte).
    case rejected(String)

    public var description: String {
        switch self {
        case let .notLeader(address):
            return address.map { "not the leader; the leader is \($0)" } ?? "not the leader and no leader is known"
        case let .leadershipLost(index, term):
            return "leadership lost while committing the write (index \(index), term \(term)); it was not applied"
        case .leadershipTransferInProgress: return "leadership transfer in progress; retry shortly"
        case let .overloaded(pending, limit): return "too many requests in flight (\(pending), limit \(limit)); retry later"
        case let .tooLarge(bytes, limit): return "command of \(bytes) bytes exceeds the limit of \(limit)"
        case let .timeout(what): return "timed out: \(what)"
        case let .storage(message): return "storage error: \(message)"
        case .closed: return "the replicator is shutting down"
        case let .rejected(reason): return "rejected: \(reason)"
        }
    }
}
