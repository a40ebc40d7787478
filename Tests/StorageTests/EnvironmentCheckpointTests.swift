import Foundation
import Storage
import Testing

@Suite struct EnvironmentCheckpointTests {
    private func open(_ path: String, mapSize: Int = 1 << 20) throws -> Environment {
        try Environment(directory: path, initialMapSizeBytes: mapSize, durability: .noSync)
    }

    private func value(_ key: Int, generation: Int) -> [UInt8] {
        bytes("value-\(key)-\(generation)-" + String(repeating: "x", count: 100 + key % 50))
    }

    @Test func aNewEnvironmentHasNoCheckpointAndATakenOneIsClean() throws {
        try withTemporaryDirectory { path throws in
            #expect(try EnvironmentCheckpoint.recover(directory: path) == .noCheckpoint)
            let env = try open(path)
            let db = try env.openDatabase("t")
            try env.write { txn throws in _ = try txn.put(db, key: bytes("a"), value: bytes("1")) }
            let checkpoint = EnvironmentCheckpoint(environment: env)
            try checkpoint.take()
            #expect(checkpoint.transactionID == env.lastTransactionID)
            checkpoint.release()
            env.close()
            #expect(try EnvironmentCheckpoint.recover(directory: path) == .clean(transactionID: checkpoint.transactionID))
        }
    }

    /// The property the state store relies on: after commits that overwrote and deleted every
    /// key of the checkpoint (so LMDB wanted to reuse its pages), rolling back gives exactly the
    /// checkpoint's contents, readable and writable. Without the pin this reads garbage.
    @Test func rollbackRestoresTheCheckpointExactlyAfterHeavyChurn() throws {
        try withTemporaryDirectory { path throws in
            let env = try open(path)
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                for key in 0..<2000 { _ = try txn.put(db, key: bytes("k\(key)"), value: value(key, generation: 0)) }
            }
            let checkpoint = EnvironmentCheckpoint(environment: env)
            try checkpoint.take()
            let pinned = checkpoint.transactionID
            for generation in 1...40 {
                try env.write { txn throws in
                    for key in stride(from: generation % 3, to: 2000, by: 3) {
                        _ = try txn.put(db, key: bytes("k\(key)"), value: value(key, generation: generation))
                    }
                    for key in stride(from: generation % 7, to: 2000, by: 97) { _ = try txn.delete(db, key: bytes("k\(key)")) }
                    _ = try txn.put(db, key: bytes("new\(generation)"), value: bytes("n"))
                }
            }
            let newest = env.lastTransactionID
            #expect(newest > pinned)
            // An unclean stop: no final checkpoint.
            checkpoint.release()
            env.close()

            #expect(try EnvironmentCheckpoint.recover(directory: path) == .rolledBack(from: newest, to: pinned))
            let reopened = try open(path)
            defer { reopened.close() }
            #expect(reopened.lastTransactionID == pinned)
            let db2 = try reopened.openDatabase("t")
            try reopened.read { txn throws in
                for key in 0..<2000 { #expect(try txn.get(db2, bytes("k\(key)")) == value(key, generation: 0)) }
                #expect(try txn.get(db2, bytes("new1")) == nil)
            }
            // The rolled-back environment takes new commits and a new checkpoint.
            try reopened.write { txn throws in _ = try txn.put(db2, key: bytes("after"), value: bytes("ok")) }
            let again = EnvironmentCheckpoint(environment: reopened)
            try again.take()
            again.release()
            #expect(try reopened.read { txn throws in try txn.get(db2, bytes("after")) } == bytes("ok"))
        }
    }

    @Test func aTornNewestMetaPageIsRepaired() throws {
        try withTemporaryDirectory { path throws in
            let env = try open(path)
            let db = try env.openDatabase("t")
            try env.write { txn throws in _ = try txn.put(db, key: bytes("kept"), value: bytes("1")) }
            let checkpoint = EnvironmentCheckpoint(environment: env)
            try checkpoint.take()
            try env.write { txn throws in _ = try txn.put(db, key: bytes("lost"), value: bytes("2")) }
            let pageSize = env.pageSize
            let newest = env.lastTransactionID
            checkpoint.release()
            env.close()
            // Garbage over the meta page the last commit wrote (slot = txn id & 1).
            let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path + "/data.mdb"))
            try handle.seek(toOffset: UInt64(Int(newest & 1) * pageSize))
            try handle.write(contentsOf: Data(repeating: 0xA5, count: pageSize))
            try handle.close()

            // The garbage page hides the newest commit; the other page is the checkpoint's.
            #expect(try EnvironmentCheckpoint.recover(directory: path)
                    == .rolledBack(from: checkpoint.transactionID, to: checkpoint.transactionID))
            let reopened = try open(path)
            defer { reopened.close() }
            let db2 = try reopened.openDatabase("t")
            try reopened.read { txn throws in
                #expect(try txn.get(db2, bytes("kept")) == bytes("1"))
                #expect(try txn.get(db2, bytes("lost")) == nil)
            }
        }
    }

    @Test func aCheckpointIsDueOnlyOnceTheIntervalHasPassed() throws {
        try withTemporaryDirectory { path throws in
            let env = try open(path)
            defer { env.close() }
            let checkpoint = EnvironmentCheckpoint(environment: env)
            defer { checkpoint.release() }
            try checkpoint.take(nowNanoseconds: 1_000)
            #expect(!checkpoint.isDue(nowNanoseconds: 1_500, intervalNanoseconds: 1_000))
            #expect(checkpoint.isDue(nowNanoseconds: 2_000, intervalNanoseconds: 1_000))
            // A begun checkpoint restarts the interval, whether or not it completed yet.
            let pending = try checkpoint.begin(nowNanoseconds: 2_000)
            #expect(!checkpoint.isDue(nowNanoseconds: 2_500, intervalNanoseconds: 1_000))
            try checkpoint.complete(pending)
            checkpoint.adopt(pending)
        }
    }

    @Test func aCheckpointOfAReplacedDataFileIsRefusedAndAMissingOneIgnored() throws {
        try withTemporaryDirectory { path throws in
            let env = try open(path)
            let db = try env.openDatabase("t")
            for i in 0..<5 { try env.write { txn throws in _ = try txn.put(db, key: bytes("k\(i)"), value: bytes("v")) } }
            let checkpoint = EnvironmentCheckpoint(environment: env)
            try checkpoint.take()
            checkpoint.release()
            env.close()
            // A data file older than the checkpoint: refuse rather than point it at pages it never had.
            try FileManager.default.removeItem(atPath: path + "/data.mdb")
            let fresh = try open(path)
            fresh.close()
            #expect(throws: StorageError.self) { try EnvironmentCheckpoint.recover(directory: path) }
            // Without a data file the checkpoint is dropped.
            try FileManager.default.removeItem(atPath: path + "/data.mdb")
            #expect(try EnvironmentCheckpoint.recover(directory: path) == .noCheckpoint)
            #expect(!FileManager.default.fileExists(atPath: path + "/" + EnvironmentCheckpoint.sideFileName))
        }
    }

    /// Closing races a checkpoint syncing on another thread: a pending checkpoint adopted after
    /// `release()` must not stay pinned past the environment's close.
    @Test func aPendingCheckpointAdoptedAfterReleaseIsDropped() throws {
        try withTemporaryDirectory { path throws in
            let env = try open(path)
            let db = try env.openDatabase("t")
            try env.write { txn throws in _ = try txn.put(db, key: bytes("a"), value: bytes("1")) }
            let checkpoint = EnvironmentCheckpoint(environment: env)
            let pending = try checkpoint.begin()
            try checkpoint.complete(pending)
            checkpoint.release()
            checkpoint.adopt(pending)
            // Closing with a pin still open would leave LMDB a reader slot in freed memory.
            env.close()
            #expect(try EnvironmentCheckpoint.recover(directory: path) == .clean(transactionID: pending.transactionID))
        }
    }
}
