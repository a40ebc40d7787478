// The LMDB-backed Raft log: what one persisted batch leaves on disk, recovery after reopen,
// conflicting suffixes, and unpersisted entries shadowing the disk.
import Foundation
import RaftCore
@testable import Replication
import Storage
import Testing

/// Entries `range` of one term with distinct payloads (shared with RaftSnapshotLogTests).
func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [Entry] {
    range.map { Entry(index: $0, term: term, kind: .normal, data: Array("e\($0)t\(term)".utf8)) }
}

/// Opens the log environment under `dir`, recovers it, and hands both to `body`.
func withWriter(_ dir: String, bootstrap: [NodeID: String]? = nil,
                _ body: (Environment, RaftLogWriter, RecoveredRaftState) throws -> Void) throws {
    let env = try Environment(directory: DataLayout.logDirectory(dir), durability: .full)
    defer { env.close() }
    let writer = try RaftLogWriter(environment: env)
    try body(env, writer, try writer.recover(bootstrap: bootstrap))
}

@Suite("LMDB Raft log")
struct LMDBRaftLogTests {
    @Test func entryKindsAreStoredAsFixedBytesAndAnUnknownByteIsCorrupt() throws {
        // The bytes are the on-disk format of existing data dirs, not the core's raw values.
        let kinds: [(EntryKind, UInt8)] = [(.normal, 1), (.noop, 2), (.configuration, 3)]
        for (kind, byte) in kinds {
            let entry = Entry(index: 7, term: 2, kind: kind, data: [5])
            #expect(entry.stored == LogEntry(index: 7, term: 2, kind: byte, data: [5]))
            #expect(try Entry(entry.stored) == entry)
        }
        for byte: UInt8 in [0, 4, 255] {
            #expect(throws: StorageError.corrupt("log entry 7: unknown kind \(byte)")) {
                try Entry(LogEntry(index: 7, term: 2, kind: byte, data: []))
            }
        }
    }

    @Test func bootstrapHardStateEntriesAndAddressesSurviveReopen() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let book: [NodeID: String] = [1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"]
        try withWriter(dir, bootstrap: book) { _, writer, state in
            #expect(state.snapshot == SnapshotMetadata(index: 0, term: 0, configuration: Configuration(voters: [1, 2, 3])))
            #expect(state.hardState == HardState())
            try writer.persist(hardState: HardState(term: 4, votedFor: 2, commitIndex: 3),
                               entries: entries(1 ... 5, term: 4), addressBook: nil)
        }
        // A second bootstrap does not overwrite what is there.
        try withWriter(dir, bootstrap: [9: "127.0.0.1:9"]) { env, _, state in
            #expect(state.hardState == HardState(term: 4, votedFor: 2, commitIndex: 3))
            #expect(state.snapshot.configuration == Configuration(voters: [1, 2, 3]))
            #expect(state.addressBook == book)
            #expect(state.lastIndex == 5)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: state.lastIndex)
            #expect(log.entries(from: 1, through: 5, maxCount: 100, maxBytes: 1 << 20) == entries(1 ... 5, term: 4))
            #expect(log.term(at: 0) == 0)
            #expect(log.term(at: 6) == nil)
        }
    }

    @Test func persistingAConflictingSuffixTruncatesInTheSameWrite() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try withWriter(dir, bootstrap: [1: "a:1"]) { _, writer, _ in
            try writer.persist(hardState: HardState(term: 1), entries: entries(1 ... 5, term: 1), addressBook: nil)
            try writer.persist(hardState: HardState(term: 2), entries: entries(3 ... 4, term: 2), addressBook: nil)
            #expect(writer.logStore.lastIndex == 4)
        }
        try withWriter(dir) { env, _, state in
            #expect(state.lastIndex == 4)
            #expect(state.hardState.term == 2)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: state.lastIndex)
            #expect(log.entries(from: 1, through: 4, maxCount: 10, maxBytes: 1 << 20)
                == entries(1 ... 2, term: 1) + entries(3 ... 4, term: 2))
        }
    }

    @Test func entriesInMemoryShadowTheDiskUntilWrittenToLMDB() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try withWriter(dir, bootstrap: [1: "a:1"]) { env, writer, state in
            try writer.persist(hardState: nil, entries: entries(1 ... 4, term: 1), addressBook: nil)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: 4)
            // A new leader's entries replace 3...4 in memory; the disk still holds term 1.
            log.append(entries(3 ... 6, term: 2))
            #expect(log.lastIndex == 6)
            #expect(log.unstableCount == 4)
            #expect(log.entries(from: 2, through: 6, maxCount: 10, maxBytes: 1 << 20)
                == entries(2 ... 2, term: 1) + entries(3 ... 6, term: 2))
            // A stale report (index 4 of term 1) changes nothing.
            log.writtenTo(index: 4, term: 1)
            #expect(log.unstableCount == 4)
            try writer.persist(hardState: nil, entries: entries(3 ... 6, term: 2), addressBook: nil)
            log.writtenTo(index: 6, term: 2)
            #expect(log.unstableCount == 0)
            #expect(log.entries(from: 1, through: 6, maxCount: 3, maxBytes: 1 << 20) == entries(1 ... 2, term: 1) + entries(3 ... 3, term: 2))
            #expect(log.entries(from: 1, through: 6, maxCount: 10, maxBytes: 1) == entries(1 ... 1, term: 1))
        }
    }

    @Test func addressBookCodecRoundTripsAndRejectsGarbage() throws {
        let book: [NodeID: String] = [7: "10.0.0.7:8300", 1: "[::1]:8300"]
        #expect(try AddressBookCodec.decode(AddressBookCodec.encode(book)) == book)
        #expect(throws: StorageError.self) { try AddressBookCodec.decode([0, 0, 0, 0, 0, 0, 0, 9, 1]) }
        #expect(throws: StorageError.self) { try AddressBookCodec.decode(Array(AddressBookCodec.encode(book).dropLast())) }
    }
}
