// Storage's one error type. LMDB's C error codes are translated here and go no further:
// callers see which operation failed, LMDB's code and its own message (mdb_strerror).
import CLMDB

public enum StorageError: Error, CustomStringConvertible, Equatable {
    /// An LMDB call failed. `message` is LMDB's text for `code` (mdb_strerror).
    case lmdb(operation: String, code: Int32, message: String)
    /// A key longer than LMDB's maximum key size (mdb_env_get_maxkeysize: 511 bytes in 0.9.24).
    case keyTooLarge(size: Int, limit: Int)
    /// Stored bytes that do not decode: the database holds something we did not write.
    case corrupt(String)
    /// A log append that does not continue the log without a gap.
    case nonContiguousAppend(expected: UInt64, got: UInt64)

    public var description: String {
        switch self {
        case let .lmdb(operation, code, message):
            return "\(operation) failed: \(message) (\(code))"
        case let .keyTooLarge(size, limit):
            return "key too large: \(size) bytes, limit \(limit)"
        case let .corrupt(what):
            return "corrupt stored data: \(what)"
        case let .nonContiguousAppend(expected, got):
            return "non-contiguous log append: expected index \(expected), got \(got)"
        }
    }

    /// True when LMDB ran out of map space (MDB_MAP_FULL); `Environment.write` grows the map
    /// and retries on its own, so callers only see this past `maxMapSizeBytes`.
    public var isMapFull: Bool {
        if case let .lmdb(_, code, _) = self { return code == MDB_MAP_FULL }
        return false
    }

    static func from(_ code: Int32, _ operation: String) -> StorageError {
        .lmdb(operation: operation, code: code, message: String(cString: mdb_strerror(code)))
    }
}

/// Throws `StorageError.lmdb` unless `code` is MDB_SUCCESS.
@inline(__always)
func check(_ code: Int32, _ operation: String) throws(StorageError) {
    if code != MDB_SUCCESS { throw StorageError.from(code, operation) }
}
