import Foundation
import Storage
import Synchronization
import Testing

@Suite struct EnvironmentTests {
    @Test func putGetOverwriteDelete() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                #expect(try txn.put(db, key: bytes("a"), value: bytes("1")))
                #expect(try txn.put(db, key: bytes("a"), value: bytes("2")))   // overwrite
                #expect(try txn.put(db, key: bytes("b"), value: []))            // empty value
            }
            try env.read { txn throws in
                #expect(try txn.get(db, bytes("a")) == bytes("2"))
                #expect(try txn.get(db, bytes("b")) == [])
                #expect(try txn.get(db, bytes("missing")) == nil)
                #expect(try txn.count(db) == 2)
            }
            try env.write { txn throws in
                #expect(try txn.delete(db, key: bytes("a")))
                #expect(try txn.delete(db, key: bytes("a")) == false)
                #expect(try txn.get(db, bytes("a")) == nil)  // a write transaction reads its own writes
            }
            try env.read { txn throws in
                #expect(try txn.get(db, bytes("a")) == nil)
                #expect(try txn.count(db) == 1)
            }
        }
    }

    @Test func noOverwriteLeavesExistingValue() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                #expect(try txn.put(db, key: bytes("k"), value: bytes("first"), noOverwrite: true))
                #expect(try txn.put(db, key: bytes("k"), value: bytes("second"), noOverwrite: true) == false)
            }
            #expect(try env.read { try $0.get(db, bytes("k")) } == bytes("first"))
        }
    }

    @Test func clearEmptiesDatabaseOnly() throws {
        try withEnvironment { env throws in
            let a = try env.openDatabase("a")
            let b = try env.openDatabase("b")
            try env.write { txn throws in
                for i in 0..<10 { try txn.put(a, key: [UInt8(i)], value: [1]) }
                try txn.put(b, key: [1], value: [1])
                try txn.clear(a)
            }
            try env.read { txn throws in
                #expect(try txn.count(a) == 0)
                #expect(try txn.count(b) == 1)
            }
        }
    }

    @Test func keyOverMaximumSizeIsRejectedBeforeLMDB() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            #expect(env.maxKeySize == 511)
            let tooLong = [UInt8](repeating: 7, count: 512)
            #expect(throws: StorageError.keyTooLarge(size: 512, limit: 511)) {
                try env.write { txn in try txn.put(db, key: tooLong, value: [1]) }
            }
            #expect(throws: StorageError.keyTooLarge(size: 512, limit: 511)) {
                try env.read { txn in try txn.get(db, tooLong) }
            }
            // Exactly the limit is fine.
            let longest = [UInt8](repeating: 7, count: 511)
            try env.write { txn in try txn.put(db, key: longest, value: [1]) }
            #expect(try env.read { try $0.get(db, longest) } == [1])
        }
    }

    @Test func throwingWriteBodyStoresNothing() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            #expect(throws: TestFailure.self) {
                try env.write { txn throws in
                    try txn.put(db, key: bytes("k"), value: bytes("v"))
                    throw TestFailure()
                }
            }
            try env.read { txn throws in
                #expect(try txn.get(db, bytes("k")) == nil)
                #expect(try txn.count(db) == 0)
            }
        }
    }

    @Test func mapGrowsWhenOneTransactionOutgrowsIt() throws {
        try withEnvironment(initialMapSizeBytes: 64 << 10) { env throws in
            let db = try env.openDatabase("t")
            let before = env.mapSizeBytes
            var attempts = 0
            try env.write { txn throws in
                attempts += 1
                for i in UInt64(0)..<10_000 {
                    try txn.put(db, key: i.bigEndianBytes, value: [UInt8](repeating: UInt8(i & 0xff), count: 32))
                }
            }
            #expect(attempts > 1, "the body was re-run after MDB_MAP_FULL")
            #expect(env.mapSizeBytes > before)
            try env.read { txn throws in
                #expect(try txn.count(db) == 10_000)
                for i in UInt64(0)..<10_000 {
                    #expect(try txn.get(db, i.bigEndianBytes) == [UInt8](repeating: UInt8(i & 0xff), count: 32))
                }
            }
        }
    }

    @Test func bodyThatSwallowsMapFullIsStillRetried() throws {
        try withEnvironment(initialMapSizeBytes: 64 << 10) { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                for i in UInt64(0)..<5_000 {
                    do { try txn.put(db, key: i.bigEndianBytes, value: [1, 2, 3, 4]) } catch { break }
                }
            }
            #expect(try env.read { try $0.count(db) } == 5_000)
        }
    }

    @Test func mapStopsGrowingAtMaximum() throws {
        try withTemporaryDirectory { path throws in
            let env = try Environment(directory: path, initialMapSizeBytes: 64 << 10, maxMapSizeBytes: 128 << 10)
            defer { env.close() }
            let db = try env.openDatabase("t")
            let error = #expect(throws: StorageError.self) {
                try env.write { txn throws in
                    for i in UInt64(0)..<100_000 { try txn.put(db, key: i.bigEndianBytes, value: [1]) }
                }
            }
            #expect(error?.isMapFull == true)
            #expect(try env.read { try $0.count(db) } == 0)
        }
    }

    @Test func readersOnOtherThreadsSurviveMapGrowth() throws {
        try withEnvironment(initialMapSizeBytes: 64 << 10) { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn in try txn.put(db, key: UInt64(0).bigEndianBytes, value: [0]) }
            let initialSize = env.mapSizeBytes
            let state = ReaderState()
            let readerCount = 4
            for _ in 0..<readerCount {
                Thread {
                    defer { state.finished.add(1, ordering: .releasing) }
                    var i: UInt64 = 0
                    while !state.stop.load(ordering: .acquiring) {
                        do {
                            let value = try env.read { txn throws -> [UInt8]? in
                                let count = try txn.count(db)
                                #expect(count >= 1)
                                return try txn.get(db, (i % UInt64(count)).bigEndianBytes)
                            }
                            if value == nil { state.failures.add(1, ordering: .relaxed) }
                        } catch {
                            state.failures.add(1, ordering: .relaxed)
                        }
                        state.reads.add(1, ordering: .relaxed)
                        i &+= 7
                    }
                }.start()
            }
            // The writer appends in small transactions, growing the map several times.
            for batch in UInt64(0)..<100 {
                try env.write { txn throws in
                    for i in (batch * 100 + 1)...(batch * 100 + 100) {
                        try txn.put(db, key: i.bigEndianBytes, value: [UInt8](repeating: 1, count: 64))
                    }
                }
            }
            state.stop.store(true, ordering: .releasing)
            let deadline = ContinuousClock.now + .seconds(30)
            while state.finished.load(ordering: .acquiring) < readerCount && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.001)
            }
            #expect(state.finished.load(ordering: .acquiring) == readerCount)
            #expect(state.failures.load(ordering: .relaxed) == 0)
            #expect(state.reads.load(ordering: .relaxed) > 0)
            #expect(env.mapSizeBytes > initialSize)
            #expect(try env.read { try $0.count(db) } == 10_001)
        }
    }

    @Test func readNestsInsideWrite() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn in try txn.put(db, key: [1], value: [1]) }
            try env.write { txn throws in
                try txn.put(db, key: [1], value: [2])
                // The nested read sees the last commit, not the open write.
                #expect(try env.read { try $0.get(db, [1]) } == [1])
            }
        }
    }

    @Test func dataSurvivesCloseAndReopen() throws {
        try withTemporaryDirectory { path throws in
            do {
                let env = try Environment(directory: path + "/nested/dir", initialMapSizeBytes: 64 << 10)
                let db = try env.openDatabase("t")
                try env.write { txn throws in
                    for i in UInt64(0)..<2_000 { try txn.put(db, key: i.bigEndianBytes, value: i.bigEndianBytes) }
                }
                env.close()
            }
            let env = try Environment(directory: path + "/nested/dir", initialMapSizeBytes: 64 << 10)
            defer { env.close() }
            #expect(env.mapSizeBytes > 64 << 10, "the grown map size is kept by the data file")
            let db = try env.openDatabase("t")
            try env.read { txn throws in
                #expect(try txn.count(db) == 2_000)
                #expect(try txn.get(db, UInt64(1_999).bigEndianBytes) == UInt64(1_999).bigEndianBytes)
            }
        }
    }

    @Test(arguments: [false, true])
    func copyIsAConsistentEnvironment(compact: Bool) throws {
        try withTemporaryDirectory { path throws in
            let env = try Environment(directory: path + "/source")
            defer { env.close() }
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                for i in UInt64(0)..<100 { try txn.put(db, key: i.bigEndianBytes, value: [1]) }
            }
            try env.sync()
            try env.copy(toDirectory: path + "/copy", compact: compact)
            let copy = try Environment(directory: path + "/copy")
            defer { copy.close() }
            let copied = try copy.openDatabase("t")
            #expect(try copy.read { try $0.count(copied) } == 100)
        }
    }

    @Test func lmdbErrorsCarryOperationAndMessage() throws {
        try withTemporaryDirectory { path throws in
            let env = try Environment(directory: path, maxDatabases: 1)
            defer { env.close() }
            _ = try env.openDatabase("one")
            let error = #expect(throws: StorageError.self) { try env.openDatabase("two") }
            guard case let .lmdb(operation, code, message)? = error else {
                Issue.record("expected an LMDB error, got \(String(describing: error))")
                return
            }
            #expect(operation.contains("mdb_dbi_open"))
            #expect(code == -30791)  // MDB_DBS_FULL
            #expect(message.contains("MDB_DBS_FULL"))
        }
    }
}

private final class ReaderState: Sendable {
    let stop = Atomic<Bool>(false)
    let finished = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
}
