// Batching, replay and the applied index.
import StateStore
import Storage
import Testing

@Suite struct ApplyTests {
    private let batch: [(index: UInt64, command: [UInt8])] = [
        (1, KVCommand.set(key: "a", value: bytes("1"), flags: 0).encoded()),
        (2, KVCommand.set(key: "b", value: bytes("2"), flags: 0).encoded()),
        (3, KVCommand.delete(key: "a").encoded()),
        (5, KVCommand.checkAndSet(key: "b", value: bytes("3"), flags: 0, modifyIndex: 2).encoded()),
    ]

    @Test func batchAppliesInOrderAndReportsChangedKeys() throws {
        try withDriver { kv throws in
            let applied = try kv.store.apply(batch)
            #expect(applied.results == [.success(true), .success(true), .success(true), .success(true)])
            #expect(applied.changedKeys == ["a", "b"])
            #expect(applied.lastIndex == 5)
            #expect(try kv.store.appliedIndex() == 5)
            #expect(try kv.store.get("b").entry?.modifyIndex == 5)
            #expect(try kv.store.get("a") == (index: 5, entry: nil))
        }
    }

    @Test func replayingABatchChangesNothing() throws {
        try withDriver { kv throws in
            _ = try kv.store.apply(batch)
            let before = try kv.store.list(prefix: "")
            let again = try kv.store.apply(batch)
            #expect(again.results == Array(repeating: .failed("already applied"), count: batch.count))
            #expect(again.changedKeys == [])
            #expect(again.lastIndex == 5)
            let after = try kv.store.list(prefix: "")
            #expect(after.index == before.index)
            #expect(after.entries == before.entries)
            // A batch overlapping the applied index applies only the new part.
            let overlap = try kv.store.apply([(5, KVCommand.delete(key: "b").encoded()),
                                              (6, KVCommand.set(key: "c", value: [], flags: 0).encoded())])
            #expect(overlap.results == [.failed("already applied"), .success(true)])
            #expect(try kv.store.get("b").entry != nil)
        }
    }

    @Test func undecodableCommandFailsAndIndexStillAdvances() throws {
        try withDriver { kv throws in
            let applied = try kv.store.apply([
                (1, KVCommand.set(key: "a", value: [], flags: 0).encoded()),
                (2, [0xff, 1, 2]),
                (3, []),
                (4, KVCommand.set(key: "b", value: [], flags: 0).encoded()),
            ])
            #expect(applied.results[0] == .success(true))
            #expect(applied.results[1] == .failed("malformed command: unknown tag 255"))
            #expect(applied.results[2] == .failed("malformed command: missing tag"))
            #expect(applied.results[3] == .success(true))
            #expect(applied.lastIndex == 4)
            #expect(try kv.store.appliedIndex() == 4)
        }
    }

    @Test func appliedIndexIsStoredWithTheDataAndSurvivesReopen() throws {
        try withTemporaryDirectory { path throws in
            do {
                let environment = try Environment(directory: path)
                let store = try StateStore(environment: environment)
                _ = try store.apply(batch)
                environment.close()
            }
            let environment = try Environment(directory: path)
            defer { environment.close() }
            let store = try StateStore(environment: environment)
            #expect(try store.appliedIndex() == 5)
            #expect(try store.get("b").entry?.value == bytes("3"))
            #expect(try store.apply(batch).results.allSatisfy { $0 == .failed("already applied") })
        }
    }

    @Test func batchThatThrowsLeavesNeitherDataNorAppliedIndex() throws {
        try withDriver { kv throws in
            try kv.run(.set(key: "a", value: [], flags: 0))
            // Plant an undecodable stored entry; touching it makes apply throw mid-batch.
            let kvDatabase = try kv.environment.openDatabase("kv")
            try kv.environment.write { txn throws in try txn.put(kvDatabase, key: bytes("bad"), value: [1, 2, 3]) }
            #expect(throws: StateStoreError.self) {
                try kv.store.apply([(2, KVCommand.set(key: "b", value: [], flags: 0).encoded()),
                                    (3, KVCommand.set(key: "bad", value: [], flags: 0).encoded())])
            }
            #expect(try kv.store.appliedIndex() == 1)
            #expect(try kv.store.get("b").entry == nil)
        }
    }

    @Test func emptyBatchReportsCurrentIndex() throws {
        try withDriver { kv throws in
            try kv.run(.set(key: "a", value: [], flags: 0))
            let applied = try kv.store.apply([])
            #expect(applied.results == [])
            #expect(applied.lastIndex == 1)
        }
    }
}
