// The durable command log, shaped for Raft (hashicorp/raft's LogStore): entries keyed by
// big-endian index in the "log" database, value = [term u64 BE][kind u8][data].
// One writer thread owns a LogStore; first and last index are cached in memory.

public struct LogEntry: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    /// What the entry holds, as the log's user names it (Replication maps Raft's entry kinds);
    /// stored as is, the log does not interpret it.
    public var kind: UInt8
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, kind: UInt8, data: [UInt8]) {
        self.index = index
        self.term = term
        self.kind = kind
        self.data = data
    }

    static let headerBytes = 9

    func encodedValue() -> [UInt8] {
        var bytes = term.bigEndianBytes
        bytes.reserveCapacity(LogEntry.headerBytes + data.count)
        bytes.append(kind)
        bytes.append(contentsOf: data)
        return bytes
    }

    /// Total: any stored bytes give an entry or `.corrupt`.
    init(index: UInt64, storedValue value: [UInt8]) throws(StorageError) {
        guard value.count >= LogEntry.headerBytes,
              let term = UInt64(bigEndianBytes: value[0..<8]) else {
            throw StorageError.corrupt("log entry \(index): \(value.count) bytes, shorter than its header")
        }
        self.init(index: index, term: term, kind: value[8], data: Array(value[LogEntry.headerBytes...]))
    }
}

public final class LogStore {
    public let environment: Environment
    private let database: Database
    /// Index of the oldest entry; 0 when the log is empty.
    public private(set) var firstIndex: UInt64 = 0
    /// Index of the newest entry; 0 when the log is empty.
    public private(set) var lastIndex: UInt64 = 0

    public init(environment: Environment) throws {
        self.environment = environment
        self.database = try environment.openDatabase("log")
        let database = self.database
        (firstIndex, lastIndex) = try environment.read { txn in try LogStore.bounds(in: txn, database) }
    }

    /// Term of the newest entry; 0 when the log is empty.
    public func lastTerm() throws -> UInt64 {
        guard lastIndex > 0 else { return 0 }
        guard let term = try term(at: lastIndex) else {
            throw StorageError.corrupt("log entry \(lastIndex) missing though it is the last index")
        }
        return term
    }

    /// Appends `entries` inside the caller's transaction. The first must be `lastIndex + 1`
    /// (any index >= 1 when the log is empty) and the rest consecutive, else
    /// `StorageError.nonContiguousAppend`. The cached indexes move when `txn` commits.
    public func append(_ entries: [LogEntry], in txn: WriteTransaction) throws {
        guard let firstNew = entries.first else { return }
        let (first, last) = try LogStore.bounds(in: txn, database)
        var expected = last == 0 ? max(firstNew.index, 1) : last + 1
        for entry in entries {
            guard entry.index == expected else {
                throw StorageError.nonContiguousAppend(expected: expected, got: entry.index)
            }
            try txn.put(database, key: entry.index.bigEndianBytes, value: entry.encodedValue())
            expected += 1
        }
        let newFirst = first == 0 ? firstNew.index : first
        let newLast = expected - 1
        txn.afterCommit { [weak self] in
            self?.firstIndex = newFirst
            self?.lastIndex = newLast
        }
    }

    /// Appends `entries` in a transaction of its own (durable per the environment's durability).
    public func append(_ entries: [LogEntry]) throws {
        try environment.write { txn in try append(entries, in: txn) }
    }

    public func entry(at index: UInt64) throws -> LogEntry? {
        let database = self.database
        return try environment.read { txn in
            guard let value = try txn.get(database, index.bigEndianBytes) else { return nil }
            return try LogEntry(index: index, storedValue: value)
        }
    }

    /// Entries with `from <= index <= through`, in order, stopping before the stored size
    /// (header + data) would pass `maxBytes`; at least one entry whenever one is in range.
    public func entries(from: UInt64, through: UInt64, maxBytes: Int) throws -> [LogEntry] {
        guard from <= through else { return [] }
        let database = self.database
        return try environment.read { txn in
            let cursor = try txn.cursor(database)
            var result: [LogEntry] = []
            var totalBytes = 0
            var record = try cursor.seek(atOrAfter: from.bigEndianBytes)
            while let (key, value) = record {
                let index = try LogStore.index(key)
                if index > through { break }
                if !result.isEmpty && totalBytes + value.count > maxBytes { break }
                result.append(try LogEntry(index: index, storedValue: value))
                totalBytes += value.count
                record = try cursor.next()
            }
            return result
        }
    }

    public func term(at index: UInt64) throws -> UInt64? {
        try entry(at: index)?.term
    }

    /// Deletes every entry with index <= `index` (compaction after a snapshot).
    public func truncatePrefix(through index: UInt64) throws {
        try truncate { txn, cursor in
            while let (key, _) = try cursor.first(), try LogStore.index(key) <= index {
                try txn.delete(self.database, key: key)
            }
        }
    }

    /// Deletes every entry with index >= `index` (entries that conflict with a new leader's).
    public func truncateSuffix(from index: UInt64) throws {
        try truncate { txn, cursor in
            while let (key, _) = try cursor.last(), try LogStore.index(key) >= index {
                try txn.delete(self.database, key: key)
            }
        }
    }

    private func truncate(_ deleteEntries: (WriteTransaction, Cursor) throws -> Void) throws {
        let database = self.database
        try environment.write { txn in
            try deleteEntries(txn, try txn.cursor(database))
            let (first, last) = try LogStore.bounds(in: txn, database)
            txn.afterCommit { [weak self] in
                self?.firstIndex = first
                self?.lastIndex = last
            }
        }
    }

    private static func bounds(in txn: ReadTransaction, _ database: Database) throws -> (first: UInt64, last: UInt64) {
        let cursor = try txn.cursor(database)
        guard let first = try cursor.first(), let last = try cursor.last() else { return (0, 0) }
        return (try index(first.key), try index(last.key))
    }

    private static func index(_ key: [UInt8]) throws(StorageError) -> UInt64 {
        guard let index = UInt64(bigEndianBytes: key) else {
            throw StorageError.corrupt("log key of \(key.count) bytes, expected 8")
        }
        return index
    }
}
