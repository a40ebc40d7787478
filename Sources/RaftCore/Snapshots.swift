// Log compaction and InstallSnapshot (§7): the application reports a snapshot it took, the
// core drops the covered prefix, and followers behind that prefix receive the snapshot.

extension RaftNode {
    /// The application has durably saved a snapshot of its state at `index` (≤ applied).
    public func snapshotTaken(at index: UInt64) {
        precondition(index <= appliedIndex, "snapshot beyond the applied index")
        guard index > log.snapshot.index else { return }
        // `configuration` is the newest configuration in the log: at or below `index` it is the
        // answer. Scanning down instead read every entry since the last change from LMDB, on the
        // loop thread: 0.4 to 0.6 s for 230,000 entries, every server at once, writes stalled.
        let configurationAtIndex = configurationIndex <= index ? configuration : latestConfiguration(atOrBelow: index).0
        log.compact(through: index, configuration: configurationAtIndex)
    }

    func handleInstallSnapshot(from leaderID: NodeID, _ snapshot: Snapshot) {
        let meta = snapshot.metadata
        if meta.index <= commitIndex {
            send(.installSnapshotResponse(InstallSnapshotResponse(lastIndex: commitIndex)), to: leaderID, early: false)
            return
        }
        if log.term(at: meta.index) == meta.term {
            // We already hold the snapshot's last entry: it is committed, keep our log.
            commitIndex = meta.index
        } else {
            log.restore(meta)
            commitIndex = meta.index
            appliedHandedOut = meta.index
            unsentFrom = meta.index + 1
            persistedIndex = min(persistedIndex, meta.index - 1) // durable once the write is acknowledged
            configuration = meta.configuration
            configurationIndex = meta.index
            snapshotToInstall = snapshot
        }
        send(.installSnapshotResponse(InstallSnapshotResponse(lastIndex: meta.index)), to: leaderID, early: false)
    }
}

/// The outcome of `restoreSnapshot(at:)`.
public enum RestoreResult: Sendable, Equatable {
    /// The log is now the snapshot point `index`, followed by a no-op at `noopIndex` that
    /// commits once a quorum holds the restored state.
    case restored(index: UInt64, noopIndex: UInt64)
    case notLeader(leader: NodeID?)
    case leadershipTransferInProgress
    /// Entries are uncommitted or committed but not yet applied: the restore must not drop them.
    case busy(lastIndex: UInt64, commitIndex: UInt64, appliedIndex: UInt64)
    /// `index` is not past the last log index.
    case indexTooLow(lastIndex: UInt64)
}

extension RaftNode {
    /// A user restore on the leader (hashicorp/raft's Raft.Restore, adapted): the application
    /// has already replaced its state by a restored one whose applied index is `index`; the log
    /// becomes the snapshot point (`index`, current term, current configuration), with commit
    /// and applied at `index`. `index` must be past the last index, leaving a hole in the log,
    /// so every follower's next AppendEntries finds its prev entry compacted and receives the
    /// leader's state through InstallSnapshot. A no-op follows the point: it commits only when
    /// a quorum holds `index`, which tells the caller the restore is replicated (before that, a
    /// leader crash can lose the restore, the danger hashicorp/raft documents).
    /// Only when everything in the log is committed and applied (the restore must not replace
    /// entries a client is waiting for). Ready.snapshot hands the point to the caller to
    /// persist, as for an installed snapshot.
    public func restoreSnapshot(at index: UInt64) -> RestoreResult {
        guard role == .leader else { return .notLeader(leader: leader) }
        if transferTarget != nil { return .leadershipTransferInProgress }
        guard commitIndex == log.lastIndex, appliedIndex == commitIndex else {
            return .busy(lastIndex: log.lastIndex, commitIndex: commitIndex, appliedIndex: appliedIndex)
        }
        guard index > log.lastIndex else { return .indexTooLow(lastIndex: log.lastIndex) }
        defer { checkInvariants() }
        let meta = SnapshotMetadata(index: index, term: term, configuration: configuration)
        log.restore(meta)
        commitIndex = index
        appliedIndex = index
        appliedHandedOut = index
        unsentFrom = index + 1
        // persistedIndex stays below `index` until the caller's write of the point is durable
        // (`persisted(upTo: index, term:)`); this node's own match follows it.
        configurationIndex = index
        snapshotToInstall = Snapshot(metadata: meta)
        for peer in sortedPeers() {
            // Every follower restarts from a probe: its prev entry is compacted, so the next
            // send is the snapshot (a snapshot of the old state in flight is superseded).
            progress[peer]!.becomeProbe()
            progress[peer]!.next = min(progress[peer]!.next, index)
        }
        let noop = appendAsLeader(kind: .noop, data: [])
        broadcastAppend()
        return .restored(index: index, noopIndex: noop)
    }
}
