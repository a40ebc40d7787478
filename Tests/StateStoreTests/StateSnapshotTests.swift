// The state snapshot (InstallSnapshot's data): a dump of every named database, its load into
// another environment, the never-backwards rule, and a total decoder (a bad dump never
// touches the target environment).
import Foundation
@testable import StateStore
import Storage
import Testing
import TestSupport

@Suite("State snapshot dump and load")
struct StateSnapshotTests {
    /// A state with KV entries, a tombstone, and an extra table StateStore does not know.
    func populate(_ driver: KVDriver) throws {
        for i in 0 ..< 50 { try driver.run(.set(key: "k/\(i)", value: bytes("v\(i)"), flags: UInt64(i))) }
        try driver.run(.delete(key: "k/7"))
        let extra = try driver.environment.openDatabase("catalog_nodes")
        try driver.environment.write { txn in _ = try txn.put(extra, key: bytes("node1"), value: bytes("10.0.0.1")) }
    }

    func everything(_ env: Environment) throws -> [String: [[UInt8]: [UInt8]]] {
        let names = try env.read { try $0.databaseNames() }
        var result: [String: [[UInt8]: [UInt8]]] = [:]
        for name in names {
            let db = try env.openDatabase(name)
            result[name] = try env.read { txn in
                var records: [[UInt8]: [UInt8]] = [:]
                let cursor = try txn.cursor(db)
                var record = try cursor.first()
                while let (k, v) = record { records[k] = v; record = try cursor.next() }
                return records
            }
        }
        return result
    }

    @Test func aDumpLoadsIntoAnotherEnvironmentWithEveryTable() throws {
        try withDriver { source in
            try populate(source)
            let (applied, dump) = try StateSnapshot.dump(source.environment)
            #expect(applied == 51)
            let summary = try StateSnapshot.validate(dump, maxKeySize: source.environment.maxKeySize)
            #expect(summary.appliedIndex == 51)
            // Every table StateStore opens (KV and catalog), found by listing, in byte order.
            #expect(summary.databases == ["catalog_checks", "catalog_node_ids", "catalog_nodes", "catalog_service_instances",
                                          "catalog_services", "kv", "kv_tombstones", "meta"])
            try withDriver { target in
                // Older state with a key the source never had: it must disappear.
                try target.run(.set(key: "stale", value: bytes("x"), flags: 0))
                #expect(try StateSnapshot.load(dump, into: target.environment) == .loaded(appliedIndex: 51))
                #expect(try everything(target.environment) == everything(source.environment))
                #expect(try target.store.appliedIndex() == 51)
                #expect(try target.store.get("stale").entry == nil)
                #expect(try target.store.get("k/3").entry?.value == bytes("v3"))
                // Applying entries at or below the loaded index is skipped (why a dump newer than the snapshot point is safe).
                let replay = try target.store.apply([(index: 40, command: KVCommand.delete(key: "k/3").encoded())])
                #expect(replay.results == [.failed("already applied")])
                #expect(try target.store.get("k/3").entry?.value == bytes("v3"))
            }
        }
    }

    @Test func aDumpStreamedToAFileLoadsFromTheFile() throws {
        try withDriver { (source: KVDriver) throws in
            try populate(source)
            let path = NSTemporaryDirectory() + "/conclave-dump-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: path) }
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            let handle = try #require(FileHandle(forWritingAtPath: path))
            var pieces = 0
            // Tiny pieces: the sink is called many times and the file equals the in-memory dump.
            let (applied, size) = try StateSnapshot.dump(source.environment, pieceBytes: 64) { piece in
                pieces += 1
                try handle.write(contentsOf: piece)
            }
            try handle.close()
            #expect(pieces > 10)
            let (_, whole) = try StateSnapshot.dump(source.environment)
            #expect(size == whole.count)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(whole))
            #expect(try StateSnapshot.validate(file: path, maxKeySize: source.environment.maxKeySize).appliedIndex == applied)
            try withDriver { (target: KVDriver) throws in
                #expect(try StateSnapshot.load(file: path, into: target.environment) == .loaded(appliedIndex: applied))
                #expect(try everything(target.environment) == everything(source.environment))
            }
            // A truncated file is rejected before anything is written.
            try Data(whole.dropLast(3)).write(to: URL(fileURLWithPath: path))
            try withDriver { (target: KVDriver) throws in
                try target.run(.set(key: "keep", value: bytes("1"), flags: 0))
                let before = try everything(target.environment)
                #expect(throws: StateSnapshotError.self) { try StateSnapshot.load(file: path, into: target.environment) }
                #expect(try everything(target.environment) == before)
            }
            #expect(throws: StateSnapshotError.self) { try StateSnapshot.validate(file: path + ".missing", maxKeySize: 511) }
        }
    }

    @Test func aDumpNoNewerThanTheLocalStateIsNotLoaded() throws {
        try withDriver { source in
            try populate(source)
            let (_, dump) = try StateSnapshot.dump(source.environment)
            try withDriver { target in
                for i in 0 ..< 60 { try target.run(.set(key: "mine/\(i)", value: bytes("m"), flags: 0)) }
                let before = try everything(target.environment)
                #expect(try StateSnapshot.load(dump, into: target.environment) == .skipped(localAppliedIndex: 60))
                #expect(try everything(target.environment) == before)
            }
        }
    }

    /// A user restore loads an older dump over a newer state, and sets the applied index and
    /// every table index of "meta" to the restore index (X-Consul-Index never goes backwards).
    @Test func aRestoreLoadsAnOlderDumpAtTheGivenIndex() throws {
        try withDriver { source in
            try populate(source)
            let (applied, dump) = try StateSnapshot.dump(source.environment)
            try withDriver { target in
                for i in 0 ..< 60 { try target.run(.set(key: "mine/\(i)", value: bytes("m"), flags: 0)) }
                #expect(try target.store.get("mine/0").index == 60)
                #expect(throws: (any Error).self) { try StateSnapshot.restore(dump, into: target.environment, restoreIndex: applied - 1) }
                #expect(try target.store.get("mine/0").entry != nil)
                #expect(try StateSnapshot.restore(dump, into: target.environment, restoreIndex: 100) == .loaded(appliedIndex: 100))
                #expect(try target.store.appliedIndex() == 100)
                #expect(try target.store.get("mine/0").entry == nil)
                #expect(try target.store.get("k/3").entry?.value == bytes("v3"))
                #expect(try target.store.get("k/3").index == 100)
                var expected = try everything(source.environment)
                var sourceMeta = expected["meta"]!
                for key in sourceMeta.keys { sourceMeta[key] = UInt64(100).bigEndianBytes }
                expected["meta"] = sourceMeta
                #expect(try everything(target.environment) == expected)
                // A bad dump is refused before anything changes.
                let before = try everything(target.environment)
                #expect(throws: (any Error).self) { try StateSnapshot.restore(Array(dump.dropLast()), into: target.environment, restoreIndex: 200) }
                #expect(try everything(target.environment) == before)
            }
        }
    }

    @Test func badDumpsAreRejectedBeforeTouchingTheState() throws {
        try withDriver { source in
            try populate(source)
            let (_, dump) = try StateSnapshot.dump(source.environment)
            let maxKey = source.environment.maxKeySize
            var wrongApplied = dump
            wrongApplied[12] ^= 0xFF  // header applied index no longer matches meta
            let cases: [[UInt8]] = [[], Array("CNSD".utf8), Array(dump.dropLast()), dump + [0], wrongApplied,
                                    Array("XXXX".utf8) + dump.dropFirst(4)]
            try withDriver { target in
                try target.run(.set(key: "keep", value: bytes("1"), flags: 0))
                let before = try everything(target.environment)
                for bad in cases {
                    #expect(throws: StateSnapshotError.self) { try StateSnapshot.validate(bad, maxKeySize: maxKey) }
                    #expect(throws: (any Error).self) { try StateSnapshot.load(bad, into: target.environment) }
                }
                #expect(try everything(target.environment) == before)
            }
        }
    }

    /// Random bytes and mutations of a valid dump: validation never crashes or hangs, and
    /// rejects what does not parse exactly.
    @Test(arguments: [1, 2, UInt64.random(in: 3 ... UInt64.max)])
    func decodingIsTotal(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        try withDriver { source in
            for i in 0 ..< 8 { try source.run(.set(key: "k\(i)", value: bytes("v\(i)"), flags: 0)) }
            let (_, valid) = try StateSnapshot.dump(source.environment)
            let maxKey = source.environment.maxKeySize
            var accepted = 0
            for round in 0 ..< 3_000 {
                var input = valid
                if round % 3 == 0 {
                    input = (0 ..< Int.random(in: 0 ... 64, using: &generator)).map { _ in UInt8.random(in: 0 ... 255, using: &generator) }
                } else {
                    for _ in 0 ..< Int.random(in: 1 ... 3, using: &generator) {
                        switch Int.random(in: 0 ... 2, using: &generator) {
                        case 0 where !input.isEmpty:
                            input[Int.random(in: 0 ..< input.count, using: &generator)] = UInt8.random(in: 0 ... 255, using: &generator)
                        case 1 where !input.isEmpty:
                            input.removeSubrange(Int.random(in: 0 ..< input.count, using: &generator)...)
                        default:
                            input.insert(UInt8.random(in: 0 ... 255, using: &generator), at: Int.random(in: 0 ... input.count, using: &generator))
                        }
                    }
                }
                if (try? StateSnapshot.validate(input, maxKeySize: maxKey)) != nil { accepted += 1 }
            }
            #expect(accepted < 3_000, "seed \(seed)")
        }
    }
}
