// The agent's configuration: Consul's flag and config-file vocabulary, defaults and checks.
import Foundation

public struct AgentPorts: Sendable, Equatable {
    /// -1 disables a listener (Consul's convention); 0 asks the OS for a free port.
    public var http = 8500
    public var dns = 8600
    public var server = 8300
    public var serfLAN = 8301
    public var serfWAN = 8302
    public init() {}
}

public struct AgentConfig: Sendable, Equatable {
    public var nodeName: String = AgentConfig.hostName()
    public var datacenter = "dc1"
    public var dataDir: String?
    public var server = false
    public var dev = false
    public var bootstrap = false
    public var bootstrapExpect = 0
    /// Address for cluster traffic (gossip, RPC). Consul's default listens on all interfaces.
    public var bindAddr = "0.0.0.0"
    /// Address for client interfaces (HTTP, DNS).
    public var clientAddr = "127.0.0.1"
    public var ports = AgentPorts()
    public var logLevel = "info"
    /// Address others reach this agent's gossip (and RPC) at; nil: the bind address, or this
    /// host's first private IPv4 address when binding to all interfaces.
    public var advertiseAddr: String?
    /// `-join` / `start_join`: addresses joined once at start.
    public var startJoin: [String] = []
    /// `-retry-join` / `retry_join`: joined at start and retried every `retryIntervalMs`
    /// until one join succeeds.
    public var retryJoin: [String] = []
    /// Consul's `retry_interval` (default 30 s).
    public var retryIntervalMs: UInt64 = 30_000
    /// `-rejoin` / `rejoin_after_leave`: accepted. We keep no member snapshot across
    /// restarts yet, so there is nothing to rejoin from beyond -join/-retry-join.
    public var rejoinAfterLeave = false
    /// Consul's `reconnect_timeout` / `reconnect_timeout_wan`: how long a failed member is
    /// kept (and probed) before it is reaped. Consul's default 72h, minimum 8h.
    public var reconnectTimeoutMs: Int64 = 72 * 3_600_000
    public var reconnectTimeoutWANMs: Int64 = 72 * 3_600_000
    public static let minReconnectTimeoutMs: Int64 = 8 * 3_600_000
    /// `-encrypt` / `encrypt`: base64 gossip key. The keyring in `<data-dir>/serf/local.keyring`
    /// wins once it exists (as in Consul).
    public var encryptKey: String?
    /// `-event-handler` / `event_handlers`: Serf-style `[filter=]script` specs.
    public var eventHandlers: [String] = []
    /// Consul's `kv_max_value_size`: larger PUT bodies get 413.
    public var kvMaxValueSizeBytes = 512 * 1024
    /// Consul's `http_config.max_header_bytes` is Go's 1 MiB default; we keep headers small.
    public var httpMaxHeaderBytes = 64 * 1024
    /// `raft_max_inflight`, `raft_max_append_entries`, `raft_max_append_bytes`: the Raft
    /// core's pipelining limits (RaftConfig.maxInflightMessages / maxAppendEntries /
    /// maxAppendBytes); nil keeps the core's default. Not Consul keys: hashicorp/raft fixes them.
    public var raftMaxInflight: Int?
    public var raftMaxAppendEntries: Int?
    public var raftMaxAppendBytes: Int?
    static let raftMaxInflightLimit = 4096
    static let raftMaxAppendEntriesLimit = 1 << 16
    static let raftMaxAppendBytesLimit = 64 << 20
    /// Internal (tests): the replicator's bound on proposals waiting to apply; past it, writes
    /// answer 429. nil keeps RaftReplicatorConfig's default.
    var raftMaxPendingProposals: Int?
    /// Consul's `raft_snapshot_threshold`, `raft_trailing_logs`, `raft_snapshot_interval`
    /// (defaults 16384, 10240, 30s): when a server compacts its Raft log.
    public var raftSnapshotThreshold = 16_384
    public var raftTrailingLogs = 10_240
    public var raftSnapshotIntervalMs: UInt64 = 30_000
    /// Servers: the leader keeps a node entry with serfHealth per LAN member in the catalog.
    /// Not a config key; tests of the catalog API alone turn it off so the agent's own node
    /// does not appear in what they count.
    var reconcileMembersIntoCatalog = true
    /// `-enable-script-checks` / `enable_script_checks`: script checks may run (off by default, as in Consul).
    public var enableScriptChecks = false
    /// `service` / `services` / `check` / `checks` definitions from config files (see LocalDefinitions).
    var localServices: [ConfigServiceEntry] = []
    var localChecks: [CheckDefinition] = []
    /// Consul's floors (agent/checks MinInterval, and the 1 minute minimum and 30 s reaper of
    /// DeregisterCriticalServiceAfter). Not config keys: tests lower them to run quickly.
    var minimumCheckIntervalMilliseconds: UInt64 = 1_000
    var minimumDeregisterCriticalMilliseconds: UInt64 = 60_000
    var criticalReapIntervalMilliseconds: UInt64 = 30_000

    public init() {}

    /// `-dev`: a one-node server on loopback with its data in a temporary folder.
    public static func development() -> AgentConfig {
        var config = AgentConfig()
        config.dev = true
        config.server = true
        config.bootstrap = true
        config.bindAddr = "127.0.0.1"
        config.clientAddr = "127.0.0.1"
        config.logLevel = "debug"
        return config
    }

    public static let validLogLevels = ["trace", "debug", "info", "warn", "error"]

    public func validate() throws(AgentConfigError) {
        for spec in eventHandlers { _ = try EventHandlerSpec.parse(spec) }
        if reconnectTimeoutMs < Self.minReconnectTimeoutMs || reconnectTimeoutWANMs < Self.minReconnectTimeoutMs {
            throw .invalid("reconnect_timeout and reconnect_timeout_wan must be >= 8h")
        }
        if !dev && (dataDir ?? "").isEmpty {
            throw .invalid("data_dir cannot be empty (set -data-dir, or use -dev)")
        }
        if nodeName.isEmpty { throw .invalid("node_name cannot be empty") }
        if datacenter.isEmpty || datacenter.contains(where: { !($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
            throw .invalid("datacenter must be alphanumeric with dashes and underscores: \"\(datacenter)\"")
        }
        if !Self.validLogLevels.contains(logLevel.lowercased()) {
            throw .invalid("invalid log level \"\(logLevel)\"; use one of \(Self.validLogLevels.joined(separator: ", "))")
        }
        if bootstrapExpect < 0 { throw .invalid("bootstrap_expect cannot be negative") }
        if bootstrapExpect > 0 && !server { throw .invalid("bootstrap_expect requires server mode (-server)") }
        if bootstrap && bootstrapExpect > 0 { throw .invalid("bootstrap and bootstrap_expect are mutually exclusive") }
        for (name, port) in [("http", ports.http), ("dns", ports.dns), ("server", ports.server),
                             ("serf_lan", ports.serfLAN), ("serf_wan", ports.serfWAN)] where port < -1 || port > 65535 {
            throw .invalid("ports.\(name) must be -1 (disabled) or 0...65535, got \(port)")
        }
        if kvMaxValueSizeBytes <= 0 { throw .invalid("kv_max_value_size must be positive") }
        let configChecks = localChecks + localServices.flatMap(\.checks)
        if !enableScriptChecks, let script = configChecks.first(where: { if case .script = $0.kind { true } else { false } }) {
            throw .invalid("check \"\(script.id)\" is a script check, but scripts are disabled on this agent; set enable_script_checks (or -enable-script-checks)")
        }
        try validateRaftLimits()
    }

    private func validateRaftLimits() throws(AgentConfigError) {
        if let n = raftMaxInflight, !(1...Self.raftMaxInflightLimit).contains(n) {
            throw .invalid("raft_max_inflight must be between 1 and \(Self.raftMaxInflightLimit), got \(n)")
        }
        if let n = raftMaxAppendEntries, !(1...Self.raftMaxAppendEntriesLimit).contains(n) {
            throw .invalid("raft_max_append_entries must be between 1 and \(Self.raftMaxAppendEntriesLimit), got \(n)")
        }
        if let n = raftMaxAppendBytes {
            // A proposal larger than this is refused by the core, so the largest KV write
            // (kv_max_value_size plus key and command header) must fit.
            let least = kvMaxValueSizeBytes + 1024
            guard n >= least, n <= Self.raftMaxAppendBytesLimit else {
                throw .invalid("raft_max_append_bytes must be between \(least) (kv_max_value_size + 1024) and \(Self.raftMaxAppendBytesLimit), got \(n)")
            }
        }
        if let n = raftMaxPendingProposals, n < 1 { throw .invalid("raft max pending proposals must be at least 1, got \(n)") }
        if raftSnapshotThreshold <= 0 { throw .invalid("raft_snapshot_threshold must be positive") }
        if raftTrailingLogs < 0 { throw .invalid("raft_trailing_logs must not be negative") }
    }

    /// Applies a Consul JSON config file (the keys this agent understands; others are
    /// rejected so a typo does not pass silently).
    public mutating func apply(jsonFile path: String) throws(AgentConfigError) {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .invalid("cannot read config file \(path): \(error.localizedDescription)")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw .invalid("config file \(path) is not valid JSON: \(error.localizedDescription)")
        }
        guard let root = object as? [String: Any] else { throw .invalid("config file \(path): top level must be an object") }
        try apply(json: root, source: path)
    }

    mutating func apply(json root: [String: Any], source: String) throws(AgentConfigError) {
        func string(_ key: String, _ value: Any) throws(AgentConfigError) -> String {
            guard let s = value as? String else { throw .invalid("\(source): \(key) must be a string") }
            return s
        }
        func int(_ key: String, _ value: Any) throws(AgentConfigError) -> Int {
            guard let n = value as? NSNumber, !isJSONBool(value), n.doubleValue == n.doubleValue.rounded() else {
                throw .invalid("\(source): \(key) must be an integer")
            }
            return n.intValue
        }
        func bool(_ key: String, _ value: Any) throws(AgentConfigError) -> Bool {
            guard let b = value as? Bool else { throw .invalid("\(source): \(key) must be true or false") }
            return b
        }
        for (key, value) in root {
            switch key {
            case "node_name": nodeName = try string(key, value)
            case "datacenter": datacenter = try string(key, value)
            case "data_dir": dataDir = try string(key, value)
            case "server": server = try bool(key, value)
            case "bootstrap": bootstrap = try bool(key, value)
            case "bootstrap_expect": bootstrapExpect = try int(key, value)
            case "bind_addr": bindAddr = try string(key, value)
            case "client_addr": clientAddr = try string(key, value)
            case "log_level": logLevel = try string(key, value)
            case "kv_max_value_size": kvMaxValueSizeBytes = try int(key, value)
            case "raft_snapshot_threshold": raftSnapshotThreshold = try int(key, value)
            case "raft_trailing_logs": raftTrailingLogs = try int(key, value)
            case "raft_snapshot_interval":
                let text = try string(key, value)
                guard let nanos = GoDuration.nanoseconds(text), nanos >= 1_000_000 else {
                    throw .invalid("\(source): raft_snapshot_interval must be a duration such as \"30s\", got \"\(text)\"")
                }
                raftSnapshotIntervalMs = nanos / 1_000_000
            case "advertise_addr": advertiseAddr = try string(key, value)
            case "raft_max_inflight": raftMaxInflight = try int(key, value)
            case "raft_max_append_entries": raftMaxAppendEntries = try int(key, value)
            case "raft_max_append_bytes": raftMaxAppendBytes = try int(key, value)
            case "encrypt": encryptKey = try string(key, value)
            case "event_handlers":
                guard let list = value as? [Any] else { throw .invalid("\(source): event_handlers must be a list of strings") }
                var specs: [String] = []
                for item in list { specs.append(try string(key, item)) }
                eventHandlers = specs
            case "rejoin_after_leave": rejoinAfterLeave = try bool(key, value)
            case "enable_script_checks": enableScriptChecks = try bool(key, value)
            case "service", "services", "check", "checks":
                try applyLocalDefinitions(key: key, value: value, source: source)
            case "reconnect_timeout", "reconnect_timeout_wan":
                let text = try string(key, value)
                guard let nanos = GoDuration.nanoseconds(text) else {
                    throw .invalid("\(source): \(key) must be a duration such as \"72h\", got \"\(text)\"")
                }
                if key == "reconnect_timeout" { reconnectTimeoutMs = Int64(nanos / 1_000_000) } else { reconnectTimeoutWANMs = Int64(nanos / 1_000_000) }
            case "retry_interval":
                let text = try string(key, value)
                guard let nanos = GoDuration.nanoseconds(text), nanos >= 1_000_000 else {
                    throw .invalid("\(source): retry_interval must be a duration such as \"30s\", got \"\(text)\"")
                }
                retryIntervalMs = nanos / 1_000_000
            case "start_join":
                guard let list = value as? [Any] else { throw .invalid("\(source): start_join must be a list of strings") }
                var joined: [String] = []
                for item in list { joined.append(try string(key, item)) }
                startJoin = joined
            case "retry_join":
                guard let list = value as? [Any] else { throw .invalid("\(source): retry_join must be a list of strings") }
                var joined: [String] = []
                for item in list { joined.append(try string(key, item)) }
                retryJoin = joined
            case "ports":
                guard let ports = value as? [String: Any] else { throw .invalid("\(source): ports must be an object") }
                for (portKey, portValue) in ports {
                    let n = try int("ports.\(portKey)", portValue)
                    switch portKey {
                    case "http": self.ports.http = n
                    case "dns": self.ports.dns = n
                    case "server": self.ports.server = n
                    case "serf_lan": self.ports.serfLAN = n
                    case "serf_wan": self.ports.serfWAN = n
                    default: throw .invalid("\(source): unknown key ports.\(portKey)")
                    }
                }
            default:
                throw .invalid("\(source): unknown or unsupported config key \"\(key)\"")
            }
        }
    }

    /// Consul's -config-dir: every *.json file in it, in lexical order.
    public mutating func apply(configDir path: String) throws(AgentConfigError) {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            throw .invalid("cannot read config dir \(path): \(error.localizedDescription)")
        }
        for name in names.sorted() where name.hasSuffix(".json") {
            try apply(jsonFile: path + "/" + name)
        }
    }

    static func hostName() -> String {
        let name = ProcessInfo.processInfo.hostName
        return name.isEmpty ? "conclave" : name.split(separator: ".").first.map(String.init) ?? name
    }
}

/// A service from a config file with its checks.
struct ConfigServiceEntry: Sendable, Equatable {
    var service: ServiceDefinition
    var checks: [CheckDefinition]
}

extension AgentConfig {
    /// `service`/`check` take one object, `services`/`checks` a list (Consul's config format).
    mutating func applyLocalDefinitions(key: String, value: Any, source: String) throws(AgentConfigError) {
        let objects: [[String: Any]]
        if key == "service" || key == "check" {
            guard let object = value as? [String: Any] else { throw .invalid("\(source): \(key) must be an object") }
            objects = [object]
        } else {
            guard let list = value as? [[String: Any]] else { throw .invalid("\(source): \(key) must be a list of objects") }
            objects = list
        }
        for object in objects {
            do {
                if key.hasPrefix("service") {
                    let (service, checks) = try LocalDefinitions.service(from: object)
                    localServices.append(ConfigServiceEntry(service: service, checks: checks))
                } else {
                    var check: CheckDefinition
                    do { check = try LocalDefinitions.check(from: object, requireName: true) } catch {
                        throw DefinitionError("\(error)" == "Missing check name" ? "\(error)" : "Invalid check: \(error)")
                    }
                    if check.id.isEmpty { check.id = check.name }
                    localChecks.append(check)
                }
            } catch {
                throw .invalid("\(source): \(key): \(error)")
            }
        }
    }
}

public enum AgentConfigError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case .invalid(let message): return message }
    }
}
