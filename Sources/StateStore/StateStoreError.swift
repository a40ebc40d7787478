// StateStore's error type. Storage failures arrive as `StorageError` unchanged.

public enum StateStoreError: Error, CustomStringConvertible, Equatable {
    /// Command bytes that do not decode (from the log, so possibly from another server).
    case malformedCommand(String)
    /// A stored KV entry that does not decode.
    case corrupt(String)

    public var description: String {
        switch self {
        case let .malformedCommand(reason): return "malformed command: \(reason)"
        case let .corrupt(reason): return "corrupt KV entry: \(reason)"
        }
    }
}
