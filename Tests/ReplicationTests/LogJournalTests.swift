// The Raft log's journal (RaftJournalBatch, RaftDiskSide): batches round-trip and garbage is
// refused, a compaction reaches entries still in memory, and a server whose data dir is a
// crash image replays acknowledged writes that only the journal held.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Storage
import Testing

@Suite("Raft log journal", .serialized)
struct LogJournalTests {
    private func randomBatch(_ generator: inout some RandomNumberGenerator) -> RaftJournalBatch {
        let first = UInt64.random(in: 1...1_000_000, using: &generator)
        let kinds: [EntryKind] = [.normal, .noop, .configuration]
        let entries = (0..<Int.random(in: 0...20, using: &generator)).map { i in
            Entry(index: first + UInt64(i), term: UInt64.random(in: 1...9, using: &generator),
                  kind: kinds.randomElement(using: &generator)!,
                  data: (0..<Int.random(in: 0...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
        return RaftJournalBatch(
            hardState: Bool.random(using: &generator)
                ? HardState(term: UInt64.random(in: 0...99, using: &generator),
                            votedFor: Bool.random(using: &generator) ? UInt64.random(in: 1...5, using: &generator) : nil,
                            commitIndex: UInt64.random(in: 0...99, using: &generator)) : nil,
            addressBook: Bool.random(using: &generator) ? [1: "127.0.0.1:8300", UInt64.random(in: 2...9, using: &generator): "[::1]:1"] : nil,
            entries: entries)
    }

    @Test func batchesRoundTripAndAnyOtherBytesAreCorruptNotATrap() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let batch = randomBatch(&generator)
            let bytes = batch.encoded()
            #expect(try RaftJournalBatch.decode(bytes) == batch)
            // Every strict prefix is refused (the record's length is exact).
            if !bytes.isEmpty {
                let cut = Int.random(in: 0..<bytes.count, using: &generator)
                #expect(throws: StorageError.self) { try RaftJournalBatch.decode(Array(bytes[..<cut])) }
            }
            // One flipped byte decodes to something or is refused; it never traps.
            var flipped = bytes
            flipped[Int.random(in: 0..<flipped.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
            _ = try? RaftJournalBatch.decode(flipped)
        }
        for _ in 0..<300 {
            let noise = (0..<Int.random(in: 0...400, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = try? RaftJournalBatch.decode(noise)
        }
    }

    @Test func aCompactionReachesEntriesNotYetWrittenToLMDB() throws {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try withWriter(dir, bootstrap: [1: "a:1"]) { env, writer, state in
            try writer.persist(hardState: nil, entries: entries(1 ... 3, term: 1), addressBook: nil)
            let log = try LMDBRaftLog(environment: env, snapshot: state.snapshot, lastIndexInLMDB: 3)
            log.append(entries(4 ... 8, term: 1))
            log.compact(through: 6, configuration: Configuration(voters: [1]))
            #expect(log.unstableCount == 2)
            #expect(log.term(at: 6) == 1)
            #expect(log.entry(at: 6) == nil)
            #expect(log.entries(from: 7, through: 8, maxCount: 10, maxBytes: 1 << 20) == entries(7 ... 8, term: 1))
            // The disk job writes what was pending, then deletes the prefix.
            try writer.write(pending: [RaftJournalBatch(hardState: nil, addressBook: nil, entries: entries(4 ... 8, term: 1))],
                             compaction: log.takePendingCompaction())
            log.writtenTo(index: 8, term: 1)
            #expect(log.unstableCount == 0)
            #expect(log.entries(from: 7, through: 8, maxCount: 10, maxBytes: 1 << 20) == entries(7 ... 8, term: 1))
        }
    }

    @Test func aCrashImageReplaysAcknowledgedWritesThatOnlyTheJournalHeld() throws {
        var config = RaftReplicatorConfig.fastForTests()
        // Journaled batches stay out of the LMDB log (and no periodic checkpoint runs): only the
        // journal holds the writes below, as after a crash right after they were acknowledged.
        config.logCheckpointIntervalMilliseconds = 3_600_000
        config.stateCheckpointIntervalMilliseconds = 3_600_000
        let cluster = try TestCluster(size: 1, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        // Whatever the first job wrote into LMDB, the rest stays pending.
        #expect(try cluster.write(on: leader, prefix: "a", count: 1).acknowledgedKeys.count == 1)
        let outcomes = try cluster.write(on: leader, prefix: "c", count: 200)
        #expect(outcomes.acknowledgedKeys.count == 200)
        let expected = try cluster.contents(leader)

        let directory = cluster.servers[leader]!.dataDirectory
        let image = directory + "-image"
        defer { try? FileManager.default.removeItem(atPath: image) }
        try FileManager.default.copyItem(atPath: directory, toPath: image)
        // The image's LMDB log lacks the writes: they are in the journal only.
        do {
            let probe = directory + "-probe"
            defer { try? FileManager.default.removeItem(atPath: probe) }
            try FileManager.default.copyItem(atPath: image, toPath: probe)
            _ = try EnvironmentCheckpoint.recover(directory: DataLayout.logDirectory(probe))
            let environment = try Environment(directory: DataLayout.logDirectory(probe), durability: .noSync)
            defer { environment.close() }
            let inLMDB = try LogStore(environment: environment).lastIndex
            let lastIndex = try cluster.servers[leader]!.run { $0.node.lastIndex }
            #expect(inLMDB + 200 <= lastIndex)
        }

        try cluster.stop(leader)
        try FileManager.default.removeItem(atPath: directory)
        try FileManager.default.moveItem(atPath: image, toPath: directory)
        try cluster.restart(leader)
        #expect(try cluster.waitForLeader() == leader)
        #expect(try eventually { try cluster.contents(leader) == expected }, "the journal replays every acknowledged write")
        // And it goes on: new writes, then a clean restart that needs no replay.
        #expect(try cluster.write(on: leader, prefix: "d", count: 50).acknowledgedKeys.count == 50)
        let after = try cluster.contents(leader)
        try cluster.stop(leader)
        try cluster.restart(leader)
        #expect(try cluster.waitForLeader() == leader)
        #expect(try eventually { try cluster.contents(leader) == after })
    }

    @Test func aFullJournalAndABatchLargerThanAFileFallBackToSyncedLMDBCommits() throws {
        var config = RaftReplicatorConfig.fastForTests()
        config.journalFileBytes = 64 << 10
        // No periodic LMDB log write: only a full journal or a batch too large for it puts the
        // log into LMDB (with a synchronous checkpoint).
        config.logCheckpointIntervalMilliseconds = 3_600_000
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        // 6,000 writes in batches of 100: about 300 KiB of records, more than twice what the two
        // 64 KiB files hold.
        for round in 0..<60 {
            #expect(try cluster.write(on: leader, prefix: "f\(round)-", count: 100).acknowledgedKeys.count == 100)
        }
        // One value larger than a journal file.
        let answer = Unsafe<Result<CommitOutcome, RaftCommitError>?>(nil)
        try cluster.servers[leader]!.run { r in
            r.submit(KVCommand.set(key: "big", value: [UInt8](repeating: 7, count: 100_000), flags: 0).encoded()) { answer.value = $0 }
        }
        #expect(eventually { answer.value != nil })
        #expect(try answer.value?.get().result == .success(true))
        let expected = try cluster.contents(leader)
        #expect(expected.count == 6001)
        for id in [1, 2, 3] as [NodeID] { #expect(try eventually { try cluster.contents(id) == expected }) }
        // Everything is durable where the next start looks for it.
        for id in [1, 2, 3] as [NodeID] { try cluster.stop(id) }
        for id in [1, 2, 3] as [NodeID] {
            // The disk thread has stopped: its counters may be read here.
            let side = cluster.servers[id]!.replicator.value.diskSide.value
            #expect(side.journalFullCount > 0, "server \(id): the journal never filled")
            #expect(side.directLogWrites > 0, "server \(id): the large batch went through the journal")
        }
        for id in [1, 2, 3] as [NodeID] { try cluster.restart(id) }
        _ = try #require(try cluster.waitForLeader())
        for id in [1, 2, 3] as [NodeID] { #expect(try eventually { try cluster.contents(id) == expected }) }
    }
}
