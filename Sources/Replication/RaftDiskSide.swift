// The disk thread's stores and how a disk job's log part becomes durable.
//
// The log part of a job is one journal record (Journal.swift: one small synced write) and is
// kept in `pending`; every `logCheckpointIntervalMilliseconds` the pending batches go into the
// LMDB log in one transaction without fsync, and a checkpoint of the log environment (beside
// the state's) is synced on the checkpoint thread. Once that checkpoint is durable, the journal
// may reuse the space of the records it covers. A crash replays the records the LMDB log lacks
// (`RaftLogWriter.replay`). Restores and batches too large for a journal file skip the journal:
// everything pending and the job go into LMDB, and the log is checkpointed at once. A compaction
// rides with the next pending write (a lost one only leaves old entries behind), and its prefix
// is deleted a step at a time after the jobs (`RaftLogWriter.trimCompacted`).
import RaftCore
import StateStore
import Storage

extension RaftReplicator {
    /// Disk-thread-owned stores (the checkpoint thread only runs `complete`).
    final class DiskSide {
        let writer: RaftLogWriter
        let state: StateStore
        /// The state's durable point (the state commits without fsync).
        let checkpoint: EnvironmentCheckpoint
        /// The LMDB log's durable point (it commits without fsync too; the journal covers the rest).
        let logCheckpoint: EnvironmentCheckpoint
        let journal: Journal
        let metrics: RaftMetrics
        let stateCheckpointIntervalNanoseconds: UInt64
        let logCheckpointIntervalNanoseconds: UInt64
        /// Where periodic checkpoints sync, so the disk thread's commits go on meanwhile.
        let checkpointThread: DiskThread
        /// Set and cleared on the disk thread: one periodic checkpoint (of either store) at a time.
        var checkpointInFlight = false

        /// Journaled batches not yet written into the LMDB log, oldest first.
        private var pending: [RaftJournalBatch] = []
        private var pendingEntries = 0
        /// The last journal record written.
        private var lastSequence: UInt64
        /// The last journal record whose batch the LMDB log holds.
        private var sequenceInLMDB: UInt64
        /// The LMDB log changed since the last log checkpoint began.
        private var logDirty = false
        /// A compaction point not yet written into the LMDB log.
        private var pendingCompaction: SnapshotMetadata?
        /// A compacted prefix may still hold entries to delete.
        private var trimDue = false
        private var lastLogWriteNanoseconds: UInt64 = 0
        /// The last entry journaled (the LMDB log's last entry once everything pending is in it).
        private var lastEntry: (index: UInt64, term: UInt64)?
        /// The LMDB log's last entry, when it changed since the last report (the loop then lets
        /// go of the entries in memory).
        private var writtenReport: (index: UInt64, term: UInt64)?

        /// What the applies in the state's held write changed (nil: nothing held).
        private var heldChanges: AppliedBatch?
        /// Command bytes in the held write: it keeps them until its commit (to run them again
        /// if the map must grow), so they are bounded.
        private(set) var heldCommandBytes = 0
        static let maxHeldCommandBytes = 8 << 20
        /// What commits of the held write made visible since the loop last heard.
        private var commitReport: AppliedBatch?

        /// How often the journal was full (its records then went into LMDB at once, synced), and
        /// how many jobs went straight into LMDB (restores, batches larger than a
        /// journal file). Read by tests once the disk thread has stopped.
        private(set) var journalFullCount = 0
        private(set) var directLogWrites = 0

        /// Pending batches past this many entries go into LMDB before their interval is up.
        static let maxPendingEntries = 8192

        init(writer: RaftLogWriter, state: StateStore, checkpoint: EnvironmentCheckpoint, logCheckpoint: EnvironmentCheckpoint,
             journal: Journal, metrics: RaftMetrics, config: RaftReplicatorConfig, checkpointThread: DiskThread) {
            self.writer = writer; self.state = state; self.checkpoint = checkpoint; self.logCheckpoint = logCheckpoint
            self.journal = journal; self.metrics = metrics; self.checkpointThread = checkpointThread
            stateCheckpointIntervalNanoseconds = config.stateCheckpointIntervalMilliseconds * 1_000_000
            logCheckpointIntervalNanoseconds = config.logCheckpointIntervalMilliseconds * 1_000_000
            lastSequence = journal.nextSequence - 1
            sequenceInLMDB = lastSequence
        }

        /// Makes the job's log part durable (see the file comment).
        func persistLog(_ job: DiskJob) throws {
            let batch = RaftJournalBatch(hardState: job.hardState, addressBook: job.addressBook, entries: job.entries)
            if job.restore == nil {
                if let compaction = job.compaction { pendingCompaction = compaction }
                if batch.hardState == nil, batch.addressBook == nil, batch.entries.isEmpty { return }
                let payload = batch.encoded()
                if journal.fits(payloadBytes: payload.count) {
                    var sequence = try journal.append(payload)
                    if sequence == nil {
                        // Both files hold records the LMDB log lacks on disk: put them there now.
                        journalFullCount += 1
                        try writePending()
                        try takeLogCheckpoint()
                        sequence = try journal.append(payload)
                    }
                    guard let sequence else { throw StorageError.corrupt("journal: no room right after a log checkpoint") }
                    lastSequence = sequence
                    pending.append(batch)
                    pendingEntries += batch.entries.count
                    if let last = batch.entries.last { lastEntry = (last.index, last.term) }
                    return
                }
            }
            directLogWrites += 1
            let compaction = job.restore == nil ? pendingCompaction : job.compaction
            try writer.write(pending: pending, restore: job.restore, job: batch, compaction: compaction,
                             journalSequence: lastSequence)
            pendingCompaction = nil
            if compaction != nil { trimDue = true }
            pending = []
            pendingEntries = 0
            sequenceInLMDB = lastSequence
            if job.restore != nil { lastEntry = nil }
            if let last = batch.entries.last { lastEntry = (last.index, last.term) }
            writtenReport = lastEntry
            try takeLogCheckpoint()
        }

        /// Applies the commands in the state's held write (`StateStore.applyHeld`): the answers
        /// are final; readers see them after `commitState`.
        func applyHeld(_ commands: [(index: UInt64, command: [UInt8])]) throws -> AppliedBatch {
            let applied = try state.applyHeld(commands)
            heldCommandBytes += commands.reduce(0) { $0 + $1.command.count }
            if heldChanges == nil { heldChanges = applied } else { heldChanges?.absorb(applied) }
            return applied
        }

        /// Commits the held write, if any. Before anything else touches the state environment on
        /// this thread (checkpoints, restores, closing): they must see every apply.
        func commitState() throws {
            guard let changes = heldChanges else { return }
            try state.commitHeld()
            heldChanges = nil
            heldCommandBytes = 0
            if commitReport == nil { commitReport = changes } else { commitReport?.absorb(changes) }
        }

        /// What commits of the held write made visible since the last call.
        func takeCommitReport() -> AppliedBatch? {
            defer { commitReport = nil }
            return commitReport
        }

        /// The pending batches into the LMDB log, one transaction, no fsync.
        func writePending() throws {
            guard !pending.isEmpty || pendingCompaction != nil else { return }
            try writer.write(pending: pending, compaction: pendingCompaction, journalSequence: lastSequence)
            if pendingCompaction != nil { trimDue = true }
            pendingCompaction = nil
            pending = []
            pendingEntries = 0
            sequenceInLMDB = lastSequence
            logDirty = true
            writtenReport = lastEntry
        }

        /// A synchronous log checkpoint: every journal record so far is covered.
        func takeLogCheckpoint() throws {
            try logCheckpoint.take(nowNanoseconds: monotonicNanoseconds())
            journal.markCovered(through: sequenceInLMDB)
            logDirty = false
        }

        /// The LMDB log's last entry, if the LMDB log changed since the last report.
        func takeWrittenReport() -> (index: UInt64, term: UInt64)? {
            defer { writtenReport = nil }
            return writtenReport
        }

        /// After each job: writes the pending batches into LMDB when their interval is up, and
        /// begins the checkpoints that are due. The syncs run on the checkpoint thread while this
        /// thread goes on committing; the pins come back here.
        func maintain(disk: DiskThread, nowNanoseconds now: UInt64) {
            do {
                if !pending.isEmpty || pendingCompaction != nil,
                   now &- lastLogWriteNanoseconds >= logCheckpointIntervalNanoseconds || pendingEntries >= Self.maxPendingEntries {
                    try writePending()
                    lastLogWriteNanoseconds = now
                } else if trimDue {
                    trimDue = try writer.trimCompacted()
                    logDirty = true
                }
            } catch {
                // The batches are durable in the journal, but the log cannot take them: a restart replays them.
                fatalError("raft: writing journaled batches into the LMDB log failed: \(error)")
            }
            guard !checkpointInFlight else { return }
            // Nothing committed since the last checkpoint (a follower holding its applies, an idle
            // server): no sync to pay for. A held write is not waited for: the checkpoint covers
            // the last commit, and the log replays the rest after a crash.
            let stateDue = checkpoint.isDue(nowNanoseconds: now, intervalNanoseconds: stateCheckpointIntervalNanoseconds)
                && state.environment.lastTransactionID > checkpoint.transactionID
            guard stateDue || logDirty else { return }
            let log: EnvironmentCheckpoint.Pending?
            let stateCheckpoint: EnvironmentCheckpoint.Pending?
            let covered = sequenceInLMDB
            do {
                log = logDirty ? try logCheckpoint.begin(nowNanoseconds: now) : nil
                stateCheckpoint = stateDue ? try checkpoint.begin(nowNanoseconds: now) : nil
            } catch {
                fatalError("raft: beginning a checkpoint failed: \(error)")
            }
            logDirty = false
            checkpointInFlight = true
            let handoff = ThreadHandoff(value: self)
            checkpointThread.submit {
                do {
                    if let log { try handoff.value.logCheckpoint.complete(log) }
                    if let stateCheckpoint { try handoff.value.checkpoint.complete(stateCheckpoint) }
                } catch {
                    // A store cannot be synced: nothing written after this point could be trusted
                    // after an OS crash. Stop; a restart rolls back and replays.
                    fatalError("raft: checkpoint sync failed: \(error)")
                }
                disk.submit {
                    let side = handoff.value
                    if let log {
                        side.logCheckpoint.adopt(log)
                        side.journal.markCovered(through: covered)
                    }
                    if let stateCheckpoint { side.checkpoint.adopt(stateCheckpoint) }
                    side.checkpointInFlight = false
                }
            }
        }

        /// The last job before the environments close: everything into LMDB, both stores
        /// checkpointed (the next start need not roll back or replay), and no pins left.
        func closeStores() throws {
            defer {
                logCheckpoint.release()
                checkpoint.release()
            }
            try commitState()
            try writePending()
            try takeLogCheckpoint()
            try checkpoint.take()
        }
    }
}
