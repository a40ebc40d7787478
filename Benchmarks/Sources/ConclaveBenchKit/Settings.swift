// What one run measures: the workload, its connection count and the exact settings, as reported
// beside the figures (table and JSON), so two results are only compared when these match.

public enum Workload: String, Codable, Sendable, CaseIterable {
    /// PUT of unique keys (`bench/put/<connection>/<n>`), a value of `valueSize` bytes.
    case put
    /// GET of keys written before the measurement (`bench/get/<i>`), in the chosen consistency mode.
    case get
    /// GET or PUT per request, GETs with probability `readRatio`.
    case mixed
    /// Read-modify-write on `keys` keys: GET the key's ModifyIndex, then `PUT ?cas=<index>`.
    case cas
    /// `conclave kv import` of a generated export file (Conclave only).
    case `import`
    /// `PUT /v1/catalog/register` of a distinct node with one service per request (Consul's JSON body).
    case catalog
    /// `GET /v1/health/service/<name>` of one service with `healthInstances` instances (registered first).
    case health
}

public enum Consistency: String, Codable, Sendable, CaseIterable {
    case `default`, stale, consistent
}

public enum Scenario: String, Codable, Sendable, CaseIterable {
    /// Closed-loop load for a duration (the default).
    case load
    /// Writes running on a 3-server cluster, kill -9 of the leader, gap until writes succeed again.
    case failover
    /// One fresh cluster per combination of Raft pipelining limits (and injected delay): PUT load, one row each.
    case sweep
    /// Load `keys` keys into a 3-server cluster, then disk, memory, restart, GET, snapshot and catch-up figures.
    case largeKV = "large-kv"
}

public enum System: String, Codable, Sendable {
    case conclave, etcd
}

/// The exact settings of one measured run.
public struct RunSettings: Codable, Sendable, Equatable {
    public var system: System
    public var workload: Workload
    public var connections: Int
    public var durationSeconds: Double
    /// 0 means no cap: the duration alone bounds the run.
    public var requestCap: Int
    public var valueSize: Int
    public var consistency: Consistency
    public var readRatio: Double
    public var keys: Int
    public var servers: Int
    /// "leader" (every connection to the leader) or "spread" (round-robin over the servers).
    public var targeting: String
    public var clientLoops: Int
    public var configFile: String?

    public init(system: System, workload: Workload, connections: Int, durationSeconds: Double, requestCap: Int,
                valueSize: Int, consistency: Consistency, readRatio: Double, keys: Int, servers: Int,
                targeting: String, clientLoops: Int, configFile: String?) {
        self.system = system
        self.workload = workload
        self.connections = connections
        self.durationSeconds = durationSeconds
        self.requestCap = requestCap
        self.valueSize = valueSize
        self.consistency = consistency
        self.readRatio = readRatio
        self.keys = keys
        self.servers = servers
        self.targeting = targeting
        self.clientLoops = clientLoops
        self.configFile = configFile
    }
}
