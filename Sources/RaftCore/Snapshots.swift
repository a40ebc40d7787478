// Log compaction and InstallSnapshot (§7): the application reports a snapshot it took, the
// core drops the covered prefix, and followers behind that prefix receive the snapshot.

extension RaftNode {
    /// The application has durably saved a snapshot of its state at `index` (≤ applied).
    public func snapshotTaken(at index: UInt64) {
        precondition(index <= appliedIndex, "snapshot beyond the applied index")
        guard index > log.snapshot.index else { return }
        let (configurationAtIndex, _) = latestConfiguration(atOrBelow: index)
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
