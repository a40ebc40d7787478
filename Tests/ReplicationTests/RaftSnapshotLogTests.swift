// Compaction and snapshot restore in the LMDB Raft log: what one persisted batch leaves on
// disk, and recovery from a snapshot point after reopening.
import Foundation
import RaftCore
@testable import Replication
import Storage
import Testing

@Suite("LMDB Raft log snapshots")
struct RaftSnapshotLogTests {
    @Test func compactionDropsThePrefixAndRecoveryStartsAfterTheSnapshotPoint() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let voters = Configuration(voters: [1, 2, 3])
        try withWriter(dir, bootstrap: [1: "a:1", 2: "a:2", 3: "a:3"]) { env, writer, state in
            try writer.persist(hardState: HardState(term: 2, votedFor: 1, commitIndex: 10),
                               entries: entries(1 ... 10, term: 2), addressBook: nil)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: 10)
            log.compact(through: 6, configuration: voters)
            // The core stops seeing the prefix at once; the disk drops it with the next job.
            #expect(log.snapshot == SnapshotMetadata(index: 6, term: 2, configuration: voters))
            #expect(log.firstIndex == 7)
            #expect(log.entry(at: 6) == nil)
            #expect(log.term(at: 6) == 2)
            #expect(log.entries(from: 7, through: 10, maxCount: 10, maxBytes: 1 << 20) == entries(7 ... 10, term: 2))
            let compaction = try #require(log.takePendingCompaction())
            #expect(log.takePendingCompaction() == nil)
            try writer.persist(hardState: nil, entries: entries(11 ... 12, term: 2), addressBook: nil, compaction: compaction)
        }
        try withWriter(dir) { env, _, state in
            #expect(state.snapshot == SnapshotMetadata(index: 6, term: 2, configuration: voters))
            #expect(state.lastIndex == 12)
            #expect(state.hardState.commitIndex == 10)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: state.lastIndex)
            #expect(log.firstIndex == 7)
            #expect(log.entries(from: 7, through: 12, maxCount: 10, maxBytes: 1 << 20) == entries(7 ... 12, term: 2))
            #expect(try LogStore(environment: env).firstIndex == 7)
        }
    }

    @Test func restoreReplacesTheWholeLogBeforeTheJobsAppends() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let configuration = Configuration(voters: [1, 2, 3, 4])
        let snapshot = SnapshotMetadata(index: 50, term: 5, configuration: configuration)
        try withWriter(dir, bootstrap: [1: "a:1", 2: "a:2", 3: "a:3"]) { env, writer, state in
            // An old, partly conflicting log.
            try writer.persist(hardState: HardState(term: 3, votedFor: 2, commitIndex: 4),
                               entries: entries(1 ... 8, term: 3), addressBook: nil)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: 8)
            let generation = log.restoreGeneration
            log.restore(snapshot)
            #expect(log.restoreGeneration == generation + 1)
            #expect(log.lastIndex == 50)
            #expect(log.entry(at: 8) == nil)
            log.append(entries(51 ... 52, term: 5))
            try writer.persist(hardState: HardState(term: 5, votedFor: nil, commitIndex: 50),
                               entries: entries(51 ... 52, term: 5), addressBook: nil, restore: snapshot)
            log.writtenTo(index: 52, term: 5)
            #expect(log.unstableCount == 0)
            #expect(log.entries(from: 51, through: 52, maxCount: 10, maxBytes: 1 << 20) == entries(51 ... 52, term: 5))
        }
        try withWriter(dir) { env, _, state in
            #expect(state.snapshot == snapshot)
            #expect(state.lastIndex == 52)
            #expect(state.hardState.commitIndex == 50)
            let store = try LogStore(environment: env)
            #expect(store.firstIndex == 51)
            #expect(try store.entry(at: 8) == nil)
        }
    }

    @Test func aRestoredLogWithNoEntriesRecoversAtTheSnapshotPoint() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let snapshot = SnapshotMetadata(index: 9, term: 2, configuration: Configuration(voters: [1, 2]))
        try withWriter(dir, bootstrap: [1: "a:1", 2: "a:2"]) { _, writer, _ in
            try writer.persist(hardState: HardState(term: 2, votedFor: nil, commitIndex: 0),
                               entries: entries(1 ... 3, term: 1), addressBook: nil)
            try writer.persist(hardState: nil, entries: [], addressBook: nil, restore: snapshot)
        }
        try withWriter(dir) { env, _, state in
            #expect(state.snapshot == snapshot)
            #expect(state.lastIndex == 9)
            // The stored commit index (0) is raised to the snapshot point: it is committed.
            #expect(state.hardState.commitIndex == 9)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: state.lastIndex)
            #expect(log.lastIndex == 9)
            #expect(log.firstIndex == 10)
            // A node can start from it.
            let node = RaftNode(id: 1, config: RaftConfig(), log: log, hardState: state.hardState, seed: 1)
            #expect(node.commitIndex == 9)
            #expect(node.snapshotMetadata == snapshot)
        }
    }

    @Test func aLogWithAGapAfterTheSnapshotIsCorrupt() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try withWriter(dir, bootstrap: [1: "a:1"]) { env, writer, _ in
            try writer.persist(hardState: nil, entries: entries(5 ... 8, term: 1), addressBook: nil)
            // Entries 3 and 4 are neither in the log nor in the snapshot (no code path does this).
            try StableStore(environment: env).set(RaftStableKey.snapshotIndex, 2)
        }
        #expect(throws: StorageError.self) {
            try withWriter(dir) { _, _, _ in }
        }
    }

    @Test func aCompactedPrefixIsDeletedInStepsAndAStartBeforeTheLastStepIsFine() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let count = UInt64(RaftLogWriter.trimStep) * 2 + 100
        let compaction = SnapshotMetadata(index: count - 10, term: 1, configuration: Configuration(voters: [1]))
        try withWriter(dir, bootstrap: [1: "a:1"]) { env, writer, _ in
            try writer.persist(hardState: nil, entries: entries(1 ... count, term: 1), addressBook: nil)
            try writer.write(compaction: compaction)
            // One step went with the compaction; the rest is still there.
            #expect(try LogStore(environment: env).firstIndex == UInt64(RaftLogWriter.trimStep) + 1)
        }
        // A start between the steps: the snapshot point is what counts.
        try withWriter(dir) { env, writer, state in
            #expect(state.snapshot.index == compaction.index)
            #expect(state.lastIndex == count)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: state.lastIndex)
            #expect(log.firstIndex == compaction.index + 1)
            #expect(log.term(at: count) == 1)
            var steps = 0
            while try writer.trimCompacted() { steps += 1 }
            #expect(steps == 1)
            #expect(try LogStore(environment: env).firstIndex == compaction.index + 1)
            #expect(try LogStore(environment: env).lastIndex == count)
            #expect(try writer.trimCompacted() == false)
        }
    }
}
