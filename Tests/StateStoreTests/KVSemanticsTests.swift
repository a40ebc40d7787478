// Consul's KV semantics (agent/consul/state/kvs.go), one behaviour per test.
import TestSupport
import StateStore
import Storage
import Testing

@Suite struct KVSemanticsTests {
    @Test func setCreatesThenUpdatesKeepingCreateIndex() throws {
        try withDriver { kv throws in
            #expect(try kv.run(.set(key: "a", value: bytes("1"), flags: 7)) == .success(true))
            #expect(try kv.entry("a") == KVEntry(key: "a", value: bytes("1"), flags: 7, createIndex: 1, modifyIndex: 1))
            #expect(kv.lastChangedKeys == ["a"])
            #expect(try kv.run(.set(key: "a", value: bytes("2"), flags: 0)) == .success(true))
            #expect(try kv.entry("a") == KVEntry(key: "a", value: bytes("2"), flags: 0, createIndex: 1, modifyIndex: 2))
            #expect(try kv.tableIndex() == 2)
        }
    }

    @Test func setWithNothingChangedBumpsNoIndex() throws {
        // Consul's kvsSetTxn skips the write when the entry is Equal (value, flags, lock, session).
        try withDriver { kv throws in
            try kv.run(.set(key: "a", value: bytes("v"), flags: 1))
            #expect(try kv.run(.set(key: "a", value: bytes("v"), flags: 1)) == .success(true))
            #expect(try kv.entry("a")?.modifyIndex == 1)
            #expect(try kv.tableIndex() == 1)
            #expect(kv.lastChangedKeys == [])
            try kv.run(.set(key: "a", value: bytes("v"), flags: 2))  // flags alone are a change
            #expect(try kv.entry("a")?.modifyIndex == 3)
        }
    }

    @Test func getReportsTableIndexEvenForMissingKeys() throws {
        try withDriver { kv throws in
            #expect(try kv.store.get("a") == (index: 0, entry: nil))
            try kv.run(.set(key: "a", value: [], flags: 0))
            try kv.run(.set(key: "b", value: [], flags: 0))
            let (index, entry) = try kv.store.get("missing")
            #expect(index == 2)
            #expect(entry == nil)
            #expect(try kv.store.get("a").index == 2)
            #expect(try kv.store.get(String(repeating: "k", count: 600)) == (index: 2, entry: nil))
        }
    }

    @Test func checkAndSetTable() throws {
        // existing: the entry present before the CAS (its ModifyIndex is 1) or none.
        let cases: [(name: String, existing: Bool, casIndex: UInt64, answer: Bool)] = [
            ("0 on a missing key creates it", false, 0, true),
            ("0 on a present key fails", true, 0, false),
            ("N on a missing key fails", false, 1, false),
            ("N matching ModifyIndex sets", true, 1, true),
            ("N not matching fails", true, 9, false),
        ]
        for c in cases {
            try withDriver { kv throws in
                if c.existing { try kv.run(.set(key: "k", value: bytes("old"), flags: 0)) }
                let before = try kv.tableIndex()
                let result = try kv.run(.checkAndSet(key: "k", value: bytes("new"), flags: 3, modifyIndex: c.casIndex))
                #expect(result == .success(c.answer), "\(c.name)")
                let entry = try kv.entry("k")
                if c.answer {
                    #expect(entry?.value == bytes("new"), "\(c.name)")
                    #expect(entry?.modifyIndex == kv.index, "\(c.name)")
                    #expect(entry?.createIndex == (c.existing ? 1 : kv.index), "\(c.name)")
                    #expect(try kv.tableIndex() == kv.index, "\(c.name)")
                } else {
                    #expect(entry?.value == (c.existing ? bytes("old") : nil), "\(c.name)")
                    #expect(try kv.tableIndex() == before, "\(c.name): a failed CAS bumps no index")
                    #expect(kv.lastChangedKeys == [], "\(c.name)")
                }
            }
        }
    }

    @Test func deleteOfPresentKeyLeavesTombstoneAndBumpsIndex() throws {
        try withDriver { kv throws in
            try kv.run(.set(key: "a/x", value: [], flags: 0))
            try kv.run(.set(key: "b", value: [], flags: 0))
            #expect(try kv.run(.delete(key: "a/x")) == .success(true))
            #expect(try kv.entry("a/x") == nil)
            #expect(try kv.tableIndex() == 3)
            #expect(kv.lastChangedKeys == ["a/x"])
            #expect(try kv.store.list(prefix: "a/").index == 3, "the tombstone carries the deletion index")
        }
    }

    @Test func deleteOfMissingKeyChangesNothingButAnswersTrue() throws {
        try withDriver { kv throws in
            try kv.run(.set(key: "a", value: [], flags: 0))
            #expect(try kv.run(.delete(key: "missing")) == .success(true))
            #expect(try kv.tableIndex() == 1)
            #expect(kv.lastChangedKeys == [])
            #expect(try kv.store.list(prefix: "missing").index == 1, "no tombstone")
        }
    }

    @Test func deleteCASTable() throws {
        let cases: [(name: String, existing: Bool, casIndex: UInt64, answer: Bool, deleted: Bool)] = [
            ("missing key: nothing to do", false, 1, true, false),
            ("matching ModifyIndex deletes", true, 1, true, true),
            ("other ModifyIndex keeps the key", true, 2, false, false),
            ("0 on a present key keeps it", true, 0, false, false),
        ]
        for c in cases {
            try withDriver { kv throws in
                if c.existing { try kv.run(.set(key: "k", value: bytes("v"), flags: 0)) }
                let before = try kv.tableIndex()
                #expect(try kv.run(.deleteCAS(key: "k", modifyIndex: c.casIndex)) == .success(c.answer), "\(c.name)")
                #expect(try (kv.entry("k") == nil) == (c.deleted || !c.existing), "\(c.name)")
                #expect(try kv.tableIndex() == (c.deleted ? kv.index : before), "\(c.name)")
            }
        }
    }

    @Test func deleteTreeDeletesEveryKeyUnderPrefix() throws {
        try withDriver { kv throws in
            for key in ["a/1", "a/2", "a/b/3", "a", "ab", "b/1"] { try kv.run(.set(key: key, value: [], flags: 0)) }
            #expect(try kv.run(.deleteTree(prefix: "a/")) == .success(true))
            #expect(try kv.store.list(prefix: "").entries.map(\.key) == ["a", "ab", "b/1"])
            #expect(kv.lastChangedKeys == ["a/1", "a/2", "a/b/3"])
            #expect(try kv.tableIndex() == 7)
            #expect(try kv.store.list(prefix: "a/").index == 7)
        }
    }

    @Test func deleteTreeOfNothingBumpsNoIndex() throws {
        try withDriver { kv throws in
            try kv.run(.set(key: "b", value: [], flags: 0))
            #expect(try kv.run(.deleteTree(prefix: "a/")) == .success(true))
            #expect(try kv.tableIndex() == 1)
            #expect(kv.lastChangedKeys == [])
        }
    }

    @Test func deleteTreeOfEverything() throws {
        try withDriver { kv throws in
            for key in ["x", "y"] { try kv.run(.set(key: key, value: [], flags: 0)) }
            #expect(try kv.run(.deleteTree(prefix: "")) == .success(true))
            #expect(try kv.store.list(prefix: "").entries == [])
            #expect(try kv.store.list(prefix: "").index == 3)
            #expect(try kv.store.list(prefix: "x").index == 3, "no tombstone; falls back to the table index")
        }
    }

    @Test func writesWithUnusableKeysFail() throws {
        try withDriver { kv throws in
            let long = String(repeating: "k", count: 512)
            let tooLarge = ApplyResult.failed("key too large: 512 bytes, limit 511")
            let cases: [(KVCommand, ApplyResult)] = [
                (.set(key: long, value: [], flags: 0), tooLarge),
                (.checkAndSet(key: long, value: [], flags: 0, modifyIndex: 0), tooLarge),
                (.delete(key: long), tooLarge),
                (.deleteCAS(key: long, modifyIndex: 1), tooLarge),
                (.deleteTree(prefix: long), tooLarge),
                (.set(key: "", value: [], flags: 0), .failed("missing key name")),
                (.checkAndSet(key: "", value: [], flags: 0, modifyIndex: 0), .failed("missing key name")),
                (.delete(key: ""), .success(true)),
                (.set(key: String(repeating: "k", count: 511), value: [1], flags: 0), .success(true)),
            ]
            for (command, expected) in cases {
                #expect(try kv.run(command) == expected, "\(command)")
            }
            #expect(try kv.store.appliedIndex() == UInt64(cases.count), "failed commands still advance the index")
            #expect(try kv.tableIndex() == UInt64(cases.count))
        }
    }

    @Test func largeValuesRoundTrip() throws {
        try withDriver(initialMapSizeBytes: 64 << 10) { kv throws in
            var generator = SeededGenerator(seed: 42)
            let value = (0..<(512 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(try kv.run(.set(key: "big", value: value, flags: 1)) == .success(true))
            #expect(try kv.entry("big")?.value == value)
            #expect(try kv.store.list(prefix: "b").entries.first?.value == value)
        }
    }
}

@Suite struct KVIndexRuleTests {
    /// a/1 @1, a/2 @2, b/1 @3, delete b/1 @4, c @5.
    private func populate(_ kv: KVDriver) throws {
        try kv.run(.set(key: "a/1", value: [], flags: 0))
        try kv.run(.set(key: "a/2", value: [], flags: 0))
        try kv.run(.set(key: "b/1", value: [], flags: 0))
        try kv.run(.delete(key: "b/1"))
        try kv.run(.set(key: "c", value: [], flags: 0))
    }

    @Test func listAndKeysIndexTable() throws {
        let cases: [(prefix: String, index: UInt64, keys: [String], why: String)] = [
            ("", 5, ["a/1", "a/2", "c"], "empty prefix: the table index"),
            ("a/", 2, ["a/1", "a/2"], "highest ModifyIndex under the prefix"),
            ("a/1", 1, ["a/1"], "highest ModifyIndex under the prefix"),
            ("b/", 4, [], "a tombstone under the prefix"),
            ("b", 4, [], "a tombstone under the prefix"),
            ("z", 5, [], "nothing under the prefix: the table index"),
        ]
        try withDriver { kv throws in
            try populate(kv)
            for c in cases {
                let list = try kv.store.list(prefix: c.prefix)
                #expect(list.index == c.index, "list \(c.prefix): \(c.why)")
                #expect(list.entries.map(\.key) == c.keys, "list \(c.prefix)")
                let keys = try kv.store.keys(prefix: c.prefix, separator: nil)
                #expect(keys.index == c.index, "keys \(c.prefix): \(c.why)")
                #expect(keys.keys == c.keys, "keys \(c.prefix)")
            }
        }
    }

    @Test func tombstoneNewerThanEntriesWins() throws {
        try withDriver { kv throws in
            try populate(kv)
            try kv.run(.set(key: "a/3", value: [], flags: 0))  // 6
            try kv.run(.delete(key: "a/3"))                     // 7
            #expect(try kv.store.list(prefix: "a/").index == 7)
            try kv.run(.set(key: "a/1", value: [1], flags: 0))  // 8
            #expect(try kv.store.list(prefix: "a/").index == 8)
        }
    }

    @Test func deleteTreeLeavesOneTombstoneAtItsPrefix() throws {
        try withDriver { kv throws in
            try populate(kv)
            try kv.run(.deleteTree(prefix: "a/"))           // 6
            try kv.run(.set(key: "d", value: [], flags: 0))  // 7
            #expect(try kv.store.list(prefix: "a/").index == 6)
            #expect(try kv.store.list(prefix: "a").index == 6)
            // The tombstone is keyed "a/", which is not under "a/1": Consul falls back to the table index.
            #expect(try kv.store.list(prefix: "a/1").index == 7)
        }
    }

    @Test func separatorCollapsesKeysAfterPrefix() throws {
        let cases: [(prefix: String, separator: String?, keys: [String])] = [
            ("a/", "/", ["a/b", "a/c/"]),
            ("", "/", ["a/", "b", "x--w", "x--y--z", "xy"]),
            ("a/", nil, ["a/b", "a/c/d", "a/c/e", "a/c/f/g"]),
            ("a/", "", ["a/b", "a/c/d", "a/c/e", "a/c/f/g"]),
            ("a/c", "/", ["a/c/"]),
            ("a/c/", "/", ["a/c/d", "a/c/e", "a/c/f/"]),
            ("", "--", ["a/b", "a/c/d", "a/c/e", "a/c/f/g", "b", "x--", "xy"]),
            ("x--", "--", ["x--w", "x--y--"]),
        ]
        try withDriver { kv throws in
            for key in ["a/b", "a/c/d", "a/c/e", "a/c/f/g", "b", "x--y--z", "x--w", "xy"] {
                try kv.run(.set(key: key, value: [], flags: 0))
            }
            for c in cases {
                #expect(try kv.store.keys(prefix: c.prefix, separator: c.separator).keys == c.keys,
                        "prefix \(c.prefix) separator \(c.separator ?? "nil")")
            }
            // The index counts collapsed keys too: a/c/e was the newest under "a/".
            try kv.run(.set(key: "a/c/e", value: [1], flags: 0))
            #expect(try kv.store.keys(prefix: "a/", separator: "/").index == kv.index)
        }
    }
}
