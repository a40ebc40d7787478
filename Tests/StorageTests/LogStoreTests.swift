import Storage
import Testing

@Suite struct LogStoreTests {
    private func entries(_ range: ClosedRange<UInt64>, term: UInt64, size: Int = 4) -> [LogEntry] {
        range.map { LogEntry(index: $0, term: term, kind: 1, data: [UInt8](repeating: UInt8($0 & 0xff), count: size)) }
    }

    @Test func emptyLogHasZeroIndexesAndTerm() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            #expect(log.firstIndex == 0)
            #expect(log.lastIndex == 0)
            #expect(try log.lastTerm() == 0)
            #expect(try log.entry(at: 1) == nil)
            #expect(try log.term(at: 1) == nil)
            #expect(try log.entries(from: 1, through: 10, maxBytes: 1 << 20) == [])
        }
    }

    @Test func appendThenReadBack() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            try log.append(entries(1...3, term: 1))
            try log.append([LogEntry(index: 4, term: 2, kind: 2, data: []),
                            LogEntry(index: 5, term: 2, kind: 3, data: [9, 9])])
            #expect(log.firstIndex == 1)
            #expect(log.lastIndex == 5)
            #expect(try log.lastTerm() == 2)
            #expect(try log.term(at: 3) == 1)
            #expect(try log.entry(at: 4) == LogEntry(index: 4, term: 2, kind: 2, data: []))
            #expect(try log.entry(at: 5) == LogEntry(index: 5, term: 2, kind: 3, data: [9, 9]))
            #expect(try log.entries(from: 2, through: 4, maxBytes: 1 << 20).map(\.index) == [2, 3, 4])
        }
    }

    @Test func appendInCallersTransactionMovesIndexesOnlyOnCommit() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            #expect(throws: TestFailure.self) {
                try env.write { txn throws in
                    try log.append(entries(1...2, term: 1), in: txn)
                    throw TestFailure()
                }
            }
            #expect(log.lastIndex == 0)
            try env.write { txn throws in
                try log.append(entries(1...2, term: 1), in: txn)
                try log.append(entries(3...3, term: 1), in: txn)  // sees the first append
                #expect(log.lastIndex == 0, "not committed yet")
            }
            #expect(log.firstIndex == 1)
            #expect(log.lastIndex == 3)
        }
    }

    @Test func nonContiguousAppendIsRejected() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            try log.append(entries(1...3, term: 1))
            let cases: [(batch: [LogEntry], expected: UInt64, got: UInt64)] = [
                (entries(5...6, term: 1), 4, 5),   // gap
                (entries(3...4, term: 1), 4, 3),   // overlap
                ([entries(4...4, term: 1)[0], entries(6...6, term: 1)[0]], 5, 6),  // gap inside the batch
            ]
            for (batch, expected, got) in cases {
                #expect(throws: StorageError.nonContiguousAppend(expected: expected, got: got)) {
                    try log.append(batch)
                }
            }
            #expect(log.lastIndex == 3)
            #expect(try log.entry(at: 4) == nil, "a rejected batch stores nothing")
        }
    }

    @Test func emptyLogAcceptsAnyStartIndexAfterCompaction() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            try log.append(entries(10...12, term: 3))
            #expect(log.firstIndex == 10)
            #expect(log.lastIndex == 12)
        }
    }

    @Test func entriesAreBoundedByMaxBytesButNeverEmpty() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            try log.append(entries(1...10, term: 1, size: 91))  // 9-byte header + 91 = 100 bytes each
            let cases: [(from: UInt64, through: UInt64, maxBytes: Int, indexes: [UInt64])] = [
                (1, 10, 1 << 20, Array(1...10)),
                (1, 10, 300, [1, 2, 3]),
                (1, 10, 299, [1, 2]),
                (1, 10, 0, [1]),        // always at least one
                (4, 6, 1 << 20, [4, 5, 6]),
                (9, 20, 1 << 20, [9, 10]),
                (11, 20, 1 << 20, []),
                (6, 5, 1 << 20, []),
            ]
            for c in cases {
                let got = try log.entries(from: c.from, through: c.through, maxBytes: c.maxBytes).map(\.index)
                #expect(got == c.indexes, "from \(c.from) through \(c.through) maxBytes \(c.maxBytes)")
            }
        }
    }

    @Test func truncatePrefixDropsOldEntries() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            try log.append(entries(1...10, term: 1))
            try log.truncatePrefix(through: 4)
            #expect(log.firstIndex == 5)
            #expect(log.lastIndex == 10)
            #expect(try log.entry(at: 4) == nil)
            #expect(try log.entry(at: 5) != nil)
            try log.truncatePrefix(through: 10)
            #expect(log.firstIndex == 0)
            #expect(log.lastIndex == 0)
            try log.append(entries(11...11, term: 2))  // continues after the snapshot
            #expect(log.firstIndex == 11)
        }
    }

    @Test func truncateSuffixDropsConflictingEntries() throws {
        try withEnvironment { env throws in
            let log = try LogStore(environment: env)
            try log.append(entries(1...10, term: 1))
            try log.truncateSuffix(from: 7)
            #expect(log.firstIndex == 1)
            #expect(log.lastIndex == 6)
            #expect(try log.entry(at: 7) == nil)
            try log.append(entries(7...8, term: 2))
            #expect(try log.lastTerm() == 2)
            #expect(try log.term(at: 6) == 1)
            try log.truncateSuffix(from: 1)
            #expect(log.lastIndex == 0)
            #expect(log.firstIndex == 0)
        }
    }

    @Test func indexesAreRecoveredOnReopen() throws {
        try withTemporaryDirectory { path throws in
            do {
                let env = try Environment(directory: path)
                let log = try LogStore(environment: env)
                try log.append(entries(1...20, term: 4))
                try log.truncatePrefix(through: 5)
                env.close()
            }
            let env = try Environment(directory: path)
            defer { env.close() }
            let log = try LogStore(environment: env)
            #expect(log.firstIndex == 6)
            #expect(log.lastIndex == 20)
            #expect(try log.lastTerm() == 4)
        }
    }

    @Test(arguments: [[UInt8](), [0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1]])
    func corruptStoredValueIsReported(value: [UInt8]) throws {
        try withEnvironment { env throws in
            let raw = try env.openDatabase("log")
            try env.write { txn throws in try txn.put(raw, key: UInt64(1).bigEndianBytes, value: value) }
            let log = try LogStore(environment: env)
            #expect(log.lastIndex == 1)
            let error = #expect(throws: StorageError.self) { try log.entry(at: 1) }
            guard case .corrupt? = error else {
                Issue.record("expected .corrupt, got \(String(describing: error))")
                return
            }
        }
    }

    @Test func corruptKeyIsReported() throws {
        try withEnvironment { env throws in
            let raw = try env.openDatabase("log")
            try env.write { txn throws in try txn.put(raw, key: [1, 2, 3], value: [0, 0, 0, 0, 0, 0, 0, 1, 1]) }
            let error = #expect(throws: StorageError.self) { try LogStore(environment: env) }
            guard case .corrupt? = error else {
                Issue.record("expected .corrupt, got \(String(describing: error))")
                return
            }
        }
    }
}

@Suite struct StableStoreTests {
    @Test func valuesRoundTripAndPersist() throws {
        try withTemporaryDirectory { path throws in
            do {
                let env = try Environment(directory: path)
                let stable = try StableStore(environment: env)
                #expect(try stable.uint64("CurrentTerm") == nil)
                #expect(try stable.bytes("LastVoteCand") == nil)
                try stable.set("CurrentTerm", 7)
                try stable.set("CurrentTerm", UInt64.max)
                try stable.set("LastVoteCand", bytes("node-1"))
                try stable.set("Empty", [UInt8]())
                env.close()
            }
            let env = try Environment(directory: path)
            defer { env.close() }
            let stable = try StableStore(environment: env)
            #expect(try stable.uint64("CurrentTerm") == UInt64.max)
            #expect(try stable.bytes("LastVoteCand") == bytes("node-1"))
            #expect(try stable.bytes("Empty") == [])
        }
    }

    @Test func uint64OfWrongLengthIsCorrupt() throws {
        try withEnvironment { env throws in
            let stable = try StableStore(environment: env)
            try stable.set("CurrentTerm", [1, 2, 3])
            #expect(throws: StorageError.corrupt("stable value CurrentTerm: 3 bytes, expected 8")) {
                try stable.uint64("CurrentTerm")
            }
        }
    }
}
