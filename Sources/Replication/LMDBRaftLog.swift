// The Raft log on LMDB. `LMDBRaftLog` is the core's `RaftLogStorage` on the loop thread: the
// entries in LMDB are read from there, newer ones sit in memory in front of them (etcd's
// "unstable", kept until the LMDB log has them). `RaftLogWriter` is the disk thread's side: it
// writes journaled batches into LMDB several at a time (truncate a conflicting suffix, append,
// store the hard state), and replays the journal after a crash.
// Stable keys follow hashicorp/raft's names where it has one.
import RaftCore
import Storage

enum RaftStableKey {
    static let currentTerm = "CurrentTerm"
    static let lastVoteCandidate = "LastVoteCand"
    static let commitIndex = "CommitIndex"
    static let snapshotIndex = "SnapshotIndex"
    static let snapshotTerm = "SnapshotTerm"
    static let snapshotConfiguration = "SnapshotConfiguration"
    static let addressBook = "AddressBook"
    /// The last journal record whose batch the LMDB log holds (RaftJournalBatch.swift).
    static let journalSequence = "JournalSequence"
}

extension EntryKind {
    /// The kind byte in the LMDB log. Fixed values, independent of the core's raw values:
    /// existing data dirs hold them.
    var storedKind: UInt8 {
        switch self {
        case .normal: return 1
        case .noop: return 2
        case .configuration: return 3
        }
    }

    init?(storedKind: UInt8) {
        switch storedKind {
        case 1: self = .normal
        case 2: self = .noop
        case 3: self = .configuration
        default: return nil
        }
    }
}

extension Entry {
    init(_ stored: LogEntry) throws(StorageError) {
        guard let kind = EntryKind(storedKind: stored.kind) else {
            throw .corrupt("log entry \(stored.index): unknown kind \(stored.kind)")
        }
        self.init(index: stored.index, term: stored.term, kind: kind, data: stored.data)
    }
    var stored: LogEntry { LogEntry(index: index, term: term, kind: kind.storedKind, data: data) }
}

/// NodeID → "host:port", stored as count u64, then per server: id u64, length u64, UTF-8.
enum AddressBookCodec {
    static func encode(_ book: [NodeID: String]) -> [UInt8] {
        var bytes = UInt64(book.count).bigEndianBytes
        for (id, address) in book.sorted(by: { $0.key < $1.key }) {
            bytes += id.bigEndianBytes
            let utf8 = Array(address.utf8)
            bytes += UInt64(utf8.count).bigEndianBytes
            bytes += utf8
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) throws(StorageError) -> [NodeID: String] {
        var offset = 0
        func u64() throws(StorageError) -> UInt64 {
            guard offset + 8 <= bytes.count, let v = UInt64(bigEndianBytes: bytes[offset ..< offset + 8]) else {
                throw .corrupt("address book truncated at byte \(offset)")
            }
            offset += 8
            return v
        }
        let count = try u64()
        var book: [NodeID: String] = [:]
        for _ in 0 ..< min(count, UInt64(bytes.count)) {
            let id = try u64()
            let length = try u64()
            guard length <= UInt64(bytes.count - offset) else { throw .corrupt("address book entry overruns the value") }
            book[id] = String(decoding: bytes[offset ..< offset + Int(length)], as: UTF8.self)
            offset += Int(length)
        }
        guard book.count == count, offset == bytes.count else { throw .corrupt("address book has trailing bytes") }
        return book
    }
}

/// What a restarting server finds in its log environment.
struct RecoveredRaftState {
    var hardState: HardState
    var snapshot: SnapshotMetadata
    var addressBook: [NodeID: String]
    var lastIndex: UInt64
}

/// The disk thread's writer. Created before the loop starts, then owned by the disk thread.
final class RaftLogWriter {
    let environment: Environment
    let logStore: LogStore
    private let logDatabase: Database
    private let stableDatabase: Database

    init(environment: Environment) throws {
        self.environment = environment
        logStore = try LogStore(environment: environment)
        logDatabase = try environment.openDatabase("log")
        stableDatabase = try environment.openDatabase("stable")
    }

    /// Reads the hard state, snapshot point and address book; on an empty log with
    /// `bootstrap`, first writes the initial configuration (voters = the bootstrap servers).
    func recover(bootstrap: [NodeID: String]?) throws -> RecoveredRaftState {
        let stable = try StableStore(environment: environment)
        if try stable.bytes(RaftStableKey.snapshotConfiguration) == nil, logStore.lastIndex == 0,
           let bootstrap, !bootstrap.isEmpty {
            let configuration = Configuration(voters: Array(bootstrap.keys))
            let stableDatabase = self.stableDatabase
            try environment.write { txn in
                try txn.put(stableDatabase, key: Array(RaftStableKey.snapshotIndex.utf8), value: UInt64(0).bigEndianBytes)
                try txn.put(stableDatabase, key: Array(RaftStableKey.snapshotTerm.utf8), value: UInt64(0).bigEndianBytes)
                try txn.put(stableDatabase, key: Array(RaftStableKey.snapshotConfiguration.utf8), value: configuration.encoded())
                try txn.put(stableDatabase, key: Array(RaftStableKey.addressBook.utf8), value: AddressBookCodec.encode(bootstrap))
            }
        }
        let term = try stable.uint64(RaftStableKey.currentTerm) ?? 0
        let vote = try stable.uint64(RaftStableKey.lastVoteCandidate) ?? 0
        // The commit index need not be durable (Figure 2 keeps it volatile); never trust it past
        // the log (clamped below, once the snapshot point is known).
        var commit = try stable.uint64(RaftStableKey.commitIndex) ?? 0
        var configuration = Configuration(voters: [])
        if let bytes = try stable.bytes(RaftStableKey.snapshotConfiguration) {
            do throws(MessageDecodingError) {
                configuration = try Configuration.decode(bytes)
            } catch {
                throw StorageError.corrupt("stored configuration: \(error)")
            }
        }
        let snapshot = SnapshotMetadata(index: try stable.uint64(RaftStableKey.snapshotIndex) ?? 0,
                                        term: try stable.uint64(RaftStableKey.snapshotTerm) ?? 0,
                                        configuration: configuration)
        // An installed snapshot drops every entry with it; a compaction moves the snapshot point
        // and deletes the prefix in steps (`trimCompacted`), so entries at or below the snapshot
        // may remain, and are never read. What must hold: no gap right after the snapshot.
        if logStore.lastIndex > 0 && logStore.firstIndex > snapshot.index + 1 {
            throw StorageError.corrupt("log starts at \(logStore.firstIndex) but the snapshot ends at \(snapshot.index)")
        }
        let lastIndex = max(logStore.lastIndex, snapshot.index)
        commit = max(min(commit, lastIndex), snapshot.index)
        let book = try stable.bytes(RaftStableKey.addressBook).map(AddressBookCodec.decode) ?? [:]
        return RecoveredRaftState(hardState: HardState(term: term, votedFor: vote == 0 ? nil : vote, commitIndex: commit),
                                  snapshot: snapshot, addressBook: book, lastIndex: lastIndex)
    }

    /// One batch in its own transaction (tests; the replicator batches with `write`).
    func persist(hardState: HardState?, entries: [Entry], addressBook: [NodeID: String]?,
                 restore: SnapshotMetadata? = nil, compaction: SnapshotMetadata? = nil) throws {
        try write(restore: restore, job: RaftJournalBatch(hardState: hardState, addressBook: addressBook, entries: entries),
                  compaction: compaction)
    }

    /// The highest journal record whose batch is in this log (0: none).
    func journalSequence() throws -> UInt64 {
        try StableStore(environment: environment).uint64(RaftStableKey.journalSequence) ?? 0
    }

    /// Writes, in ONE transaction and in this order: `pending` (journaled batches of earlier
    /// jobs), `restore` (an installed snapshot, §7: every entry is dropped and the snapshot point
    /// stored), `job`, then `compaction` (it becomes the snapshot point, and up to
    /// `trimStep` entries of the prefix through its index are deleted; `trimCompacted` deletes
    /// the rest). Each batch drops the suffix from its first entry's index
    /// (entries that conflict with a new leader's, §5.3), appends, and stores the hard state and
    /// address book. `journalSequence`, when given, records the last journal record written.
    /// Durable only as far as the environment's durability says (the replicator's log is
    /// `.noSync`: the journal or a checkpoint makes it durable).
    func write(pending: [RaftJournalBatch] = [], restore: SnapshotMetadata? = nil, job: RaftJournalBatch? = nil,
               compaction: SnapshotMetadata? = nil, journalSequence: UInt64? = nil) throws {
        let batches = pending + (job.map { [$0] } ?? [])
        if batches.allSatisfy({ $0.hardState == nil && $0.entries.isEmpty && $0.addressBook == nil }),
           restore == nil, compaction == nil, journalSequence == nil { return }
        let logDatabase = self.logDatabase
        let stableDatabase = self.stableDatabase
        let logStore = self.logStore
        try environment.write { txn in
            func put(_ batch: RaftJournalBatch) throws {
                if let first = batch.entries.first {
                    let cursor = try txn.cursor(logDatabase)
                    while let (key, _) = try cursor.last(), let index = UInt64(bigEndianBytes: key), index >= first.index {
                        try txn.delete(logDatabase, key: key)
                    }
                    try logStore.append(batch.entries.map(\.stored), in: txn)
                }
                if let hardState = batch.hardState {
                    try txn.put(stableDatabase, key: Array(RaftStableKey.currentTerm.utf8), value: hardState.term.bigEndianBytes)
                    try txn.put(stableDatabase, key: Array(RaftStableKey.lastVoteCandidate.utf8),
                                value: (hardState.votedFor ?? 0).bigEndianBytes)
                    try txn.put(stableDatabase, key: Array(RaftStableKey.commitIndex.utf8), value: hardState.commitIndex.bigEndianBytes)
                }
                if let addressBook = batch.addressBook {
                    try txn.put(stableDatabase, key: Array(RaftStableKey.addressBook.utf8), value: AddressBookCodec.encode(addressBook))
                }
            }
            for batch in pending { try put(batch) }
            if let restore {
                try txn.clear(logDatabase)
                try Self.putSnapshot(restore, stableDatabase, txn)
            }
            if let job { try put(job) }
            if let compaction {
                try Self.deletePrefix(through: compaction.index, limit: Self.trimStep, logDatabase, txn)
                try Self.putSnapshot(compaction, stableDatabase, txn)
            }
            if let journalSequence {
                try txn.put(stableDatabase, key: Array(RaftStableKey.journalSequence.utf8), value: journalSequence.bigEndianBytes)
            }
        }
    }

    /// Deleting a compacted prefix of 200,000 entries at once held the disk thread (and every
    /// write of the cluster, which compacts at about the same index everywhere) for 0.8 s.
    static let trimStep = 1_024

    /// Deletes up to `trimStep` entries at or below the snapshot point left by a compaction, in
    /// a transaction of their own. Returns whether any remain.
    func trimCompacted() throws -> Bool {
        let logDatabase = self.logDatabase
        let stableDatabase = self.stableDatabase
        return try environment.write { txn in
            guard let snapshotIndex = try txn.get(stableDatabase, Array(RaftStableKey.snapshotIndex.utf8))
                .flatMap({ UInt64(bigEndianBytes: $0) }) else { return false }
            return try Self.deletePrefix(through: snapshotIndex, limit: Self.trimStep, logDatabase, txn)
        }
    }

    /// Deletes up to `limit` of the first entries with index <= `index`. Returns whether more remain.
    @discardableResult
    private static func deletePrefix(through index: UInt64, limit: Int, _ logDatabase: Database,
                                     _ txn: WriteTransaction) throws -> Bool {
        let cursor = try txn.cursor(logDatabase)
        var deleted = 0
        while let (key, _) = try cursor.first(), let first = UInt64(bigEndianBytes: key), first <= index {
            guard deleted < limit else { return true }
            _ = try txn.delete(logDatabase, key: key)
            deleted += 1
        }
        return false
    }

    /// After a crash: writes the journal's records past this log's `journalSequence` into the
    /// log (one transaction). Returns how many it replayed and the sequence the journal goes on
    /// from (above every whole record in its files).
    func replay(_ journal: Journal) throws -> (records: Int, nextSequence: UInt64) {
        let inLog = try journalSequence()
        let (records, highest) = try journal.records(after: inLog)
        let next = max(inLog, highest, records.last?.sequence ?? 0) + 1
        guard let last = records.last else { return (0, next) }
        let batches = try records.map { record throws(StorageError) in try RaftJournalBatch.decode(record.payload) }
        try write(pending: batches, journalSequence: last.sequence)
        return (records.count, next)
    }

    private static func putSnapshot(_ snapshot: SnapshotMetadata, _ stable: Database, _ txn: WriteTransaction) throws {
        try txn.put(stable, key: Array(RaftStableKey.snapshotIndex.utf8), value: snapshot.index.bigEndianBytes)
        try txn.put(stable, key: Array(RaftStableKey.snapshotTerm.utf8), value: snapshot.term.bigEndianBytes)
        try txn.put(stable, key: Array(RaftStableKey.snapshotConfiguration.utf8), value: snapshot.configuration.encoded())
    }
}

/// The core's log on the loop thread. Loop-confined: created before the loop starts, then
/// used only by the RaftNode that owns it and by the replicator's `writtenTo`.
final class LMDBRaftLog: RaftLogStorage {
    private let reader: LogStore
    private(set) var snapshot: SnapshotMetadata
    /// Entries not yet in the LMDB log: not yet durable, or durable in the journal and waiting
    /// for the disk thread's next batched LMDB write. They shadow any LMDB entries at or after
    /// `unstableOffset` (those may be truncated by a write still to come).
    private var unstable: [Entry] = []
    private var unstableOffset: UInt64
    private var pendingCompaction: SnapshotMetadata?
    /// Counts restores: a disk job formed before a restore must not mark entries durable
    /// (the restore's job deletes whatever it wrote).
    private(set) var restoreGeneration = 0

    init(environment: Environment, snapshot: SnapshotMetadata, lastIndexInLMDB: UInt64) throws {
        reader = try LogStore(environment: environment)
        self.snapshot = snapshot
        unstableOffset = max(lastIndexInLMDB, snapshot.index) + 1
    }

    var firstIndex: UInt64 { snapshot.index + 1 }
    var lastIndex: UInt64 { unstable.last?.index ?? unstableOffset - 1 }
    /// Entries held in memory (bounded by the core's maxUncommittedEntries plus the disk lag and
    /// the interval between batched LMDB writes).
    var unstableCount: Int { unstable.count }

    func term(at index: UInt64) -> UInt64? {
        if index == snapshot.index { return snapshot.term }
        return entry(at: index)?.term
    }

    func entry(at index: UInt64) -> Entry? {
        guard index > snapshot.index, index <= lastIndex else { return nil }
        if index >= unstableOffset { return unstable[Int(index - unstableOffset)] }
        do {
            guard let stored = try reader.entry(at: index) else {
                preconditionFailure("raft log: entry \(index) missing from LMDB")
            }
            return try Entry(stored)
        } catch {
            // The log is the source of truth; serving without it would be corruption.
            fatalError("raft log: reading entry \(index) failed: \(error)")
        }
    }

    func entries(from: UInt64, through: UInt64, maxCount: Int, maxBytes: Int) -> [Entry] {
        guard from <= through, from > snapshot.index, through <= lastIndex, maxCount > 0 else { return [] }
        let last = min(through, from + UInt64(maxCount) - 1)
        var result: [Entry] = []
        var bytes = 0
        if from < unstableOffset {
            let diskLast = min(last, unstableOffset - 1)
            let stored: [Entry]
            do {
                stored = try reader.entries(from: from, through: diskLast, maxBytes: maxBytes).map { s throws(StorageError) in try Entry(s) }
            } catch {
                fatalError("raft log: reading entries \(from)...\(diskLast) failed: \(error)")
            }
            for e in stored {
                if !result.isEmpty, bytes + e.data.count + 24 > maxBytes { return result }
                bytes += e.data.count + 24
                result.append(e)
            }
            guard result.last?.index == diskLast else { return result }
        }
        var index = max(from, unstableOffset)
        while index <= last {
            let e = unstable[Int(index - unstableOffset)]
            if !result.isEmpty, bytes + e.data.count + 24 > maxBytes { break }
            bytes += e.data.count + 24
            result.append(e)
            index += 1
        }
        return result
    }

    func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index > snapshot.index && first.index <= lastIndex + 1, "append leaves a gap")
        if first.index >= unstableOffset {
            unstable.removeSubrange(Int(first.index - unstableOffset)...)
        } else {
            unstable = []
            unstableOffset = first.index
        }
        for e in entries {
            precondition(e.index == lastIndex + 1, "log entries must be consecutive")
            unstable.append(e)
        }
    }

    /// The disk thread wrote entries through `index` (whose entry had `term`) into the LMDB log:
    /// memory lets go of them. Entries since replaced in memory (another term at that index)
    /// stay.
    func writtenTo(index: UInt64, term: UInt64) {
        guard index >= unstableOffset, index <= lastIndex, unstable[Int(index - unstableOffset)].term == term else { return }
        unstable.removeFirst(Int(index - unstableOffset + 1))
        unstableOffset = index + 1
    }

    /// Moves the snapshot point in memory at once (the core no longer reads the prefix); the
    /// deletion on disk is handed to the next disk job through `takePendingCompaction`.
    func compact(through index: UInt64, configuration: Configuration) {
        guard index > snapshot.index else { return }
        // Only applied entries are compacted, and those are durable (in the journal at least:
        // the compaction's disk job writes everything pending into LMDB before it deletes).
        precondition(index <= lastIndex, "raft log: compacting entry \(index), past the log")
        guard let term = term(at: index) else { preconditionFailure("raft log: compacting missing entry \(index)") }
        if index >= unstableOffset {
            unstable.removeFirst(Int(index - unstableOffset + 1))
            unstableOffset = index + 1
        }
        snapshot = SnapshotMetadata(index: index, term: term, configuration: configuration)
        pendingCompaction = snapshot
    }

    /// Replaces the whole log by an installed snapshot's point; the disk side drops every
    /// entry in the next disk job (before that job's appends).
    func restore(_ snapshot: SnapshotMetadata) {
        self.snapshot = snapshot
        unstable = []
        unstableOffset = snapshot.index + 1
        pendingCompaction = nil
        restoreGeneration += 1
    }

    /// The compaction point still to be written (last in the next disk job); the restore of
    /// an installed snapshot reaches the disk job through `Ready.snapshot` instead.
    func takePendingCompaction() -> SnapshotMetadata? {
        defer { pendingCompaction = nil }
        return pendingCompaction
    }
}
