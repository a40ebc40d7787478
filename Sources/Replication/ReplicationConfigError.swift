/// A setting of the replicator or its transport that `validate()` refused, named in the message.
public enum ReplicationConfigError: Error, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case .invalid(let m): return "replication config: \(m)" }
    }
}
