// Raft's stable state, beside the log in the same environment.

/// Raft's stable state (current term, voted for, configuration): named values in the
/// "stable" database. A UInt64 is stored as 8 big-endian bytes; byte values as they are.
public final class StableStore {
    public let environment: Environment
    private let database: Database

    public init(environment: Environment) throws {
        self.environment = environment
        self.database = try environment.openDatabase("stable")
    }

    public func uint64(_ name: String) throws -> UInt64? {
        guard let bytes = try bytes(name) else { return nil }
        guard let value = UInt64(bigEndianBytes: bytes) else {
            throw StorageError.corrupt("stable value \(name): \(bytes.count) bytes, expected 8")
        }
        return value
    }

    public func set(_ name: String, _ value: UInt64) throws {
        try set(name, value.bigEndianBytes)
    }

    public func bytes(_ name: String) throws -> [UInt8]? {
        let database = self.database
        return try environment.read { txn in try txn.get(database, Array(name.utf8)) }
    }

    /// Stores `value` under `name` in its own (durable) write transaction.
    public func set(_ name: String, _ value: [UInt8]) throws {
        let database = self.database
        try environment.write { txn in try txn.put(database, key: Array(name.utf8), value: value) }
    }
}
