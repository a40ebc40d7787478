// User restore of a snapshot archive (PUT /v1/snapshot), on the leader; hashicorp/raft's
// Raft.Restore adapted to a state that lives in LMDB:
// 1. the archive is verified (checksum, version, the whole dump) on the snapshot thread before
//    anything is touched; a bad archive fails with `.invalidArchive` and changes nothing;
// 2. new proposals are refused while the restore waits (at most `quiesceTimeoutMilliseconds`)
//    until everything in the log is committed and applied;
// 3. the core's `restoreSnapshot(at: I)` turns the log into the snapshot point I = max(last
//    log index, the archive's index) + 1 (a hole, so every follower is sent the snapshot) and
//    appends a no-op; in the same loop turn the load of the dump is queued on the disk thread
//    ahead of the disk job persisting the point, with every "…Index" of the state's meta set
//    to I (so X-Consul-Index never goes backwards), then synced;
// 4. snapshots to followers wait for that load (a dump taken earlier would carry the old
//    state under the new point); followers load the leader's state, whose applied index I is
//    newer than theirs;
// 5. the restore completes once the no-op after I commits: a quorum then holds the restored
//    state. Until then a leader crash can lose the restore (the danger hashicorp/raft's
//    Restore documents); a failure to load a verified dump stops the process, as a failed
//    apply does.
import EventLoop
import RaftCore
import StateStore

public enum SnapshotRestoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The archive failed verification; nothing was changed.
    case invalidArchive(String)
    case failed(RaftCommitError)

    public var description: String {
        switch self {
        case let .invalidArchive(reason): return reason
        case let .failed(error): return error.description
        }
    }
}

final class RestoreOperation {
    enum Stage {
        case verifying
        case waiting(deadlineMilliseconds: UInt64)
        /// The core holds the point `index`; the dump is loading on the disk thread.
        case loading(index: UInt64)
        /// Loaded; waiting for the no-op after the point to commit.
        case replicating(index: UInt64)
    }
    var stage: Stage = .verifying
    var dump: [UInt8] = []
    var archiveIndex: UInt64 = 0
    /// Snapshot sends the core asked for while the restored state was not loaded yet.
    var deferredSends: [NodeID: UInt64] = [:]
    /// The no-op after the point committed before the load's event arrived (they come back
    /// through different mailboxes; a one-server cluster commits it at once).
    var noopOutcome: Result<CommitOutcome, RaftCommitError>?
    let completion: (Result<UInt64, SnapshotRestoreError>) -> Void

    init(completion: @escaping (Result<UInt64, SnapshotRestoreError>) -> Void) { self.completion = completion }

    var refusesProposals: Bool {
        switch stage {
        case .verifying, .replicating: return false
        case .waiting, .loading: return true
        }
    }
}

extension RaftReplicator {
    static let restoreQuiesceTimeoutMilliseconds: UInt64 = 10_000

    /// Restores the cluster's state from a snapshot archive (SnapshotArchive format). Leader
    /// only; the completion runs on the loop thread with the restore's index once a quorum
    /// holds the restored state.
    public func restoreSnapshot(archive: [UInt8], completion: @escaping (Result<UInt64, SnapshotRestoreError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed, let mailbox = snapshotMailbox else { completion(.failure(.failed(.closed))); return }
        guard node.role == .leader else {
            completion(.failure(.failed(.notLeader(leaderAddress: leaderAddress))))
            return
        }
        guard snapshots.restore == nil else {
            completion(.failure(.failed(.overloaded(pending: 1, limit: 1))))
            return
        }
        guard archive.count <= config.maxSnapshotBytes + SnapshotArchive.headerBytes + 32 else {
            completion(.failure(.invalidArchive("the archive of \(archive.count) bytes exceeds maxSnapshotBytes \(config.maxSnapshotBytes)")))
            return
        }
        snapshots.restore = RestoreOperation(completion: completion)
        snapshotThread.submit {
            let result: Result<(UInt64, [UInt8]), SnapshotFailure>
            do throws(SnapshotArchive.DecodingError) {
                let info = try SnapshotArchive.inspect(archive)
                result = .success((info.index, Array(archive[SnapshotArchive.headerBytes ..< archive.count - 32])))
            } catch {
                result = .failure(SnapshotFailure(reason: error.description))
            }
            _ = mailbox.send(.restoreVerified(result))
        }
    }

    func restoreVerified(_ result: Result<(UInt64, [UInt8]), SnapshotFailure>) {
        guard let restore = snapshots.restore, case .verifying = restore.stage else { return }
        switch result {
        case let .failure(failure):
            finishRestore(.failure(.invalidArchive(failure.reason)))
        case let .success((index, dump)):
            restore.archiveIndex = index
            restore.dump = dump
            restore.stage = .waiting(deadlineMilliseconds: loop.nowMilliseconds + Self.restoreQuiesceTimeoutMilliseconds)
            logger.info("raft: starting restore of a user snapshot", metadata: ["snapshot_index": "\(index)"])
            restoreTick()
        }
    }

    /// Tries the core's restore once the log is quiet; called from the tick and after each
    /// disk job.
    func restoreTick() {
        guard let restore = snapshots.restore, case let .waiting(deadline) = restore.stage else { return }
        let index = max(node.lastIndex, restore.archiveIndex, lastAppliedIndex) + 1
        switch node.restoreSnapshot(at: index) {
        case let .restored(index, noopIndex):
            restore.stage = .loading(index: index)
            let dump = restore.dump
            restore.dump = []
            let side = diskSide
            let mailbox = snapshotMailbox
            // Queued before `drain` hands the point to a disk job: the disk thread runs jobs in
            // order, so the state is restored before the point is durable and before any apply.
            disk.submit {
                let outcome: Result<StateSnapshot.LoadOutcome, SnapshotFailure>
                do {
                    try side.value.commitState()
                    let environment = side.value.state.environment
                    let loaded = try StateSnapshot.restore(dump, into: environment, restoreIndex: index)
                    try side.value.checkpoint.take(nowNanoseconds: monotonicNanoseconds())
                    outcome = .success(loaded)
                } catch {
                    outcome = .failure(SnapshotFailure(reason: "\(error)"))
                }
                _ = mailbox?.send(.restoreLoaded(outcome))
            }
            // Streams of the old state are superseded.
            for outgoing in Array(snapshots.outgoing.values) { cancelOutgoingForRestore(outgoing) }
            proposals[noopIndex] = PendingProposal(term: node.term, completion: { [weak self] result in
                guard let self, let restore = self.snapshots.restore, restore === self.snapshots.restore else { return }
                switch restore.stage {
                case .loading: restore.noopOutcome = result
                case .replicating: self.noopFinished(result, index: index)
                case .verifying, .waiting: break
                }
            })
            logger.info("raft: restoring user snapshot", metadata: ["index": "\(index)", "term": "\(node.term)"])
            drain()
        case let .notLeader(leader):
            finishRestore(.failure(.failed(.notLeader(leaderAddress: leader.flatMap { addressBook[$0] }))))
        case .leadershipTransferInProgress:
            finishRestore(.failure(.failed(.leadershipTransferInProgress)))
        case .busy, .indexTooLow:
            if loop.nowMilliseconds >= deadline {
                finishRestore(.failure(.failed(.timeout("the log did not settle (uncommitted or unapplied entries) in \(Self.restoreQuiesceTimeoutMilliseconds) ms; try again"))))
            }
        }
    }

    func restoreLoaded(_ result: Result<StateSnapshot.LoadOutcome, SnapshotFailure>) {
        guard let restore = snapshots.restore, case let .loading(index) = restore.stage else { return }
        switch result {
        case let .failure(failure):
            // The core's log already says the state is at `index`: going on would serve and
            // replicate state that disagrees with the log.
            fatalError("raft: loading a verified user snapshot failed: \(failure.reason)")
        case .success:
            restore.stage = .replicating(index: index)
            stateReplaced(through: index)
            onApplied?(AppliedBatch(everythingChangedThrough: index))
            let deferred = restore.deferredSends
            restore.deferredSends = [:]
            for (peer, term) in deferred.sorted(by: { $0.key < $1.key }) where node.role == .leader && node.term == term {
                sendSnapshot(to: peer, term: term, node.snapshotMetadata)
            }
            if let outcome = restore.noopOutcome { noopFinished(outcome, index: index) }
            drain()
        }
    }

    private func noopFinished(_ result: Result<CommitOutcome, RaftCommitError>, index: UInt64) {
        switch result {
        case .success: finishRestore(.success(index))
        case let .failure(error): finishRestore(.failure(.failed(error)))
        }
    }

    /// Whether a snapshot send must wait for the restored state's load (recorded to resend).
    func deferSnapshotForRestore(to peer: NodeID, term: UInt64) -> Bool {
        guard let restore = snapshots.restore, case .loading = restore.stage else { return false }
        restore.deferredSends[peer] = term
        return true
    }

    private func cancelOutgoingForRestore(_ outgoing: OutgoingSnapshot) {
        snapshots.outgoing[outgoing.peer] = nil
        snapshots.recentlySent[outgoing.peer] = nil
        outgoing.dump = nil
        let file = outgoing.file
        snapshotThread.submit { file.remove() }
        if let connection = outgoing.connection {
            connection.onRead = nil
            connection.onClose = nil
            connection.closeNow()
        }
    }

    func finishRestore(_ result: Result<UInt64, SnapshotRestoreError>) {
        guard let restore = snapshots.restore else { return }
        snapshots.restore = nil
        switch result {
        case let .success(index):
            logger.info("raft: user snapshot restored", metadata: ["index": "\(index)"])
        case let .failure(error):
            logger.warning("raft: user snapshot restore failed", metadata: ["error": "\(error)"])
        }
        restore.completion(result)
    }

    /// Whether new proposals must wait (the restore needs a quiet log).
    var restoreRefusesProposals: Bool { snapshots.restore?.refusesProposals ?? false }
}
