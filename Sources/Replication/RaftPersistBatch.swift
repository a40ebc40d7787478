// One disk job of the replicator: what the core handed out since the last job started
// (group commit), and the job itself, which runs on the disk thread: the log part made durable
// (one journal record, RaftDiskSide.swift), then one state store transaction (apply; not
// synced, see EnvironmentCheckpoint).
import RaftCore
import StateStore
import Storage

/// What the core handed out since the last disk job started.
struct PersistBatch {
    var hardState: HardState?
    var entries: [Entry] = []
    /// Committed entries to apply, in order (commands, no-ops and configuration entries).
    var committed: [Entry] = []
    /// Messages that vouch for this batch's writes: sent once they are durable.
    var heldMessages: [Message] = []
    /// Readies to acknowledge (`advance`) once their committed entries are applied.
    var readies: [Ready] = []
    var addressBook: [NodeID: String]?
    /// An installed snapshot's point: the log is replaced by it before `entries` are appended.
    var restore: SnapshotMetadata?
    /// A new compaction point: the log prefix through it is deleted after the appends.
    var compaction: SnapshotMetadata?
    /// `LMDBRaftLog.restoreGeneration` when the job was formed: a job formed before a restore
    /// wrote entries the restore deletes, so its completion must not mark them durable.
    var restoreGeneration = 0
    /// The job's log transaction was reported durable ahead of its apply (`DiskJobDone.logOnly`):
    /// held messages are sent and the core told, so the final completion skips that part.
    var persistReported = false

    var hasDiskWork: Bool {
        hardState != nil || !entries.isEmpty || !committed.isEmpty || addressBook != nil || restore != nil || compaction != nil
    }
    var isEmpty: Bool { !hasDiskWork && heldMessages.isEmpty && readies.isEmpty }

    mutating func add(_ ready: Ready) {
        if let hardState = ready.hardState { self.hardState = hardState }
        if let snapshot = ready.snapshot {
            // Everything appended before the snapshot belongs to the replaced log.
            restore = snapshot.metadata
            entries = []
            if let compaction, compaction.index <= snapshot.metadata.index { self.compaction = nil }
        }
        if let first = ready.entries.first {
            // A later Ready replacing a suffix of an earlier one (a conflict, §5.3).
            if let base = entries.first?.index, first.index <= (entries.last?.index ?? 0) {
                if first.index <= base { entries = [] } else { entries.removeSubrange(Int(first.index - base)...) }
            }
            entries.append(contentsOf: ready.entries)
        }
        committed.append(contentsOf: ready.committedEntries)
        var kept = ready
        kept.entries = []
        kept.messages = []
        readies.append(kept)
    }
}

struct DiskJob: Sendable {
    var hardState: HardState?
    var entries: [Entry]
    var commands: [Entry]
    var addressBook: [NodeID: String]?
    var restore: SnapshotMetadata?
    var compaction: SnapshotMetadata?
    /// Commit the state's held write right after this job's apply (a read waits for it).
    var commitApply = false

    var writesLog: Bool {
        hardState != nil || !entries.isEmpty || addressBook != nil || restore != nil || compaction != nil
    }
}

struct DiskJobDone: Sendable {
    /// The indexes of the applied commands, with the state store's answer. Readers see them
    /// once a `committed` report covers them.
    var applied: ([UInt64], AppliedBatch)?
    /// The state's held write committed through `lastIndex` since the last report, with what
    /// those commits changed (to wake watchers).
    var committed: AppliedBatch?
    /// The answer to a commit the loop asked for (`requestStateCommit`), not a job's.
    var commitRequestAnswered = false
    /// Only the job's log transaction is done (its apply still runs): sent between the two so
    /// that acknowledgements and the leader's own match go out one state commit earlier.
    var logOnly = false
    /// The LMDB log now holds entries through this one (the loop lets go of them in memory).
    var writtenThrough: (index: UInt64, term: UInt64)?
}

extension RaftReplicator {
    /// Runs on the disk thread: the log part made durable (a synced journal record), then one
    /// state transaction (no fsync). The caller sends the answer, then runs `DiskSide.maintain`
    /// (the periodic LMDB log write and checkpoints), so that is not in the way of an
    /// acknowledgement.
    /// `logDurable` runs between the log and the apply when the job has both (see
    /// `DiskJobDone.logOnly`).
    static func run(_ job: DiskJob, on side: DiskSide, logDurable: () -> Void) -> DiskJobDone {
        let persistStarted = monotonicNanoseconds()
        do {
            if job.writesLog {
                try side.persistLog(job)
                side.metrics.fsyncTime.recordNanoseconds(monotonicNanoseconds() - persistStarted)
            }
            if !job.entries.isEmpty { side.metrics.diskBatchEntries.record(job.entries.count) }
        } catch {
            // The core believes these entries are in its log; without them it cannot go on.
            fatalError("raft: failed to persist the log: \(error)")
        }
        var done = DiskJobDone(applied: nil)
        if !job.commands.isEmpty {
            if job.writesLog { logDurable() }
            do {
                let applyStarted = monotonicNanoseconds()
                let applied = try side.applyHeld(job.commands.map { (index: $0.index, command: $0.data) })
                if job.commitApply || side.heldCommandBytes >= DiskSide.maxHeldCommandBytes { try side.commitState() }
                side.metrics.fsmApply.recordNanoseconds(monotonicNanoseconds() - applyStarted)
                done.applied = (job.commands.map(\.index), applied)
            } catch {
                // The entries are committed; a state store that refuses them would serve state that
                // disagrees with the log. Stop loudly; a restart re-applies from the log.
                fatalError("raft: state store apply failed at index \(job.commands[0].index): \(error)")
            }
        }
        // What the last `maintain` (after the previous job) wrote into LMDB, and what commits of
        // the held state write since the last report made visible.
        done.writtenThrough = side.takeWrittenReport()
        done.committed = side.takeCommitReport()
        return done
    }
}
