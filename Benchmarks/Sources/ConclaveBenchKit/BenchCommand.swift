// `conclave-bench`: options, their validation, and the run: cluster(s) up, each workload ×
// connection count measured (Conclave, then etcd with --compare-etcd), tables and JSON out.
import ArgumentParser
import Foundation

public struct BenchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "conclave-bench",
        abstract: "Closed-loop HTTP load against a local Conclave cluster (optionally beside etcd) or running agents.",
        discussion: """
        Examples (from Benchmarks/):
          swift run -c release conclave-bench --servers 3 --workload put,get --connections 1,16,64 --duration 10 --compare-etcd
          swift run -c release conclave-bench --target http://127.0.0.1:8500 --workload mixed --read-ratio 0.9
          swift run -c release conclave-bench --servers 3 --scenario failover --repetitions 5
          swift run -c release conclave-bench --servers 3 --scenario sweep --connections 64 --duration 5
          swift run -c release conclave-bench --servers 3 --scenario large-kv --keys 1000000
        """)

    @Option(help: "Start this many local servers (conclave agent -server -bootstrap-expect=N on 127.0.0.1).")
    public var servers: Int?

    @Option(help: "Comma-separated HTTP addresses of running agents (http://host:port,...) instead of --servers.")
    public var target: String?

    @Option(help: "The conclave binary (default ../.build/release/conclave, built if missing).")
    public var conclaveBinary: String = "../.build/release/conclave"

    @Option(help: "A JSON config file passed to every started agent with -config-file (e.g. Raft tuning keys).")
    public var configFile: String?

    @Option(help: "Workloads, comma-separated: put, get, mixed, cas, import, catalog, health.")
    public var workload: String = "put"

    @Option(help: "Concurrent keep-alive connections, comma-separated for several runs (e.g. 1,16,64).")
    public var connections: String = "16"

    @Option(help: "Seconds each run lasts (0.1...3600).")
    public var duration: Double = 10

    @Option(help: "Stop after this many requests (0: the duration alone bounds a run).")
    public var requests: Int = 0

    @Option(help: "Value size in bytes for writes and preloaded keys.")
    public var valueSize: Int = 256

    @Option(help: "Read consistency: default, stale or consistent (etcd: stale → serializable, others → linearizable).")
    public var consistency: String = "default"

    @Option(help: "Share of GETs in the mixed workload (0...1).")
    public var readRatio: Double = 0.9

    @Option(help: "Keys preloaded for get/mixed/cas (cas contends on all of them), and the key count of import.")
    public var keys: Int = 1000

    @Flag(help: "Spread connections round-robin over all servers (default: every connection to the leader).")
    public var spread = false

    @Option(help: "Client event-loop threads driving the connections.")
    public var clientLoops: Int = 1

    @Option(help: "Seconds of unmeasured load before each run (same workload and connections).")
    public var warmup: Double = 1

    @Flag(help: "Print one JSON object per run on stdout (the tables go to stderr).")
    public var json = false

    @Flag(help: "Run the same put/get/mixed load against an etcd cluster of the same size and print Conclave/etcd ratios.")
    public var compareEtcd = false

    @Option(help: "load (default), failover (kill -9 the leader of a 3+ server cluster under write load), sweep (Raft pipelining limits) or large-kv.")
    public var scenario: String = "load"

    @Option(help: "Sweep: raft_max_inflight values.")
    public var sweepInflight: String = "1,2,8,64"

    @Option(help: "Sweep: raft_max_append_entries values.")
    public var sweepEntries: String = "16,64,512"

    @Option(help: "Sweep: raft_max_append_bytes values (bytes; below 525312 the agent's kv_max_value_size is lowered to fit).")
    public var sweepBytes: String = "262144,1048576"

    @Option(help: "Sweep: injected one-way delay in ms between servers (CONCLAVE_TEST_RAFT_DELAY_MS, a test-only switch of the agent).")
    public var sweepDelayMs: String = "0"

    @Option(help: "Sweep: rounds over all combinations (rows alternate between combinations within a round).")
    public var sweepRounds: Int = 1

    @Option(help: "health workload: instances of the queried service.")
    public var healthInstances: Int = 10

    @Option(help: "Failover: how many times (a fresh cluster each time).")
    public var repetitions: Int = 5

    @Option(help: "Failover: seconds of write load before the kill, and total seconds of load per repetition.")
    public var failoverWindow: String = "3,15"

    @Flag(help: "Keep temp data dirs and server logs after the run.")
    public var keepData = false

    public init() {}

    // MARK: Parsed and validated

    public var workloads: [Workload] { Self.list(workload).compactMap(Workload.init(rawValue:)) }
    public var connectionCounts: [Int] { Self.list(connections).compactMap { Int($0) } }
    public var consistencyMode: Consistency { Consistency(rawValue: consistency) ?? .default }
    public var scenarioKind: Scenario { Scenario(rawValue: scenario) ?? .load }
    static func ints(_ text: String) -> [Int] { list(text).compactMap { Int($0) } }
    public var failoverTimes: (killAfter: Double, total: Double) {
        let parts = Self.list(failoverWindow).compactMap(Double.init)
        return (parts.first ?? 3, parts.count > 1 ? parts[1] : 15)
    }

    public var targets: [Target] {
        guard let target else { return [] }
        return Self.list(target).compactMap { text in
            guard let (host, port) = parseHTTPAddress(text) else { return nil }
            return Target(host: host, port: port)
        }
    }

    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
    }

    public func validate() throws {
        if servers == nil && target == nil { throw ValidationError("Give --servers N (start a local cluster) or --target URL[,URL...].") }
        if servers != nil && target != nil { throw ValidationError("--servers and --target exclude each other.") }
        if let servers, !(1...9).contains(servers) { throw ValidationError("--servers must be 1...9 (got \(servers)).") }
        if target != nil && targets.count != Self.list(target!).count {
            throw ValidationError("--target: every address must be http://host:port (got \"\(target!)\").")
        }
        for name in Self.list(workload) where Workload(rawValue: name) == nil {
            throw ValidationError("Unknown workload \"\(name)\": use put, get, mixed, cas, import, catalog or health.")
        }
        if workloads.isEmpty { throw ValidationError("--workload: give at least one of put, get, mixed, cas, import.") }
        for text in Self.list(connections) {
            guard let n = Int(text), (1...4096).contains(n) else {
                throw ValidationError("--connections: \"\(text)\" is not a count in 1...4096.")
            }
        }
        if connectionCounts.isEmpty { throw ValidationError("--connections: give at least one count.") }
        if !(duration >= 0.1 && duration <= 3600) { throw ValidationError("--duration must be 0.1...3600 seconds (got \(duration)).") }
        if requests < 0 { throw ValidationError("--requests must be 0 (no cap) or more.") }
        if !(0...(512 << 10)).contains(valueSize) { throw ValidationError("--value-size must be 0...524288 bytes (Consul's kv_max_value_size).") }
        if Consistency(rawValue: consistency) == nil { throw ValidationError("--consistency must be default, stale or consistent.") }
        if !(readRatio >= 0 && readRatio <= 1) { throw ValidationError("--read-ratio must be 0...1.") }
        if !(1...10_000_000).contains(keys) { throw ValidationError("--keys must be 1...10000000.") }
        if !(1...64).contains(clientLoops) { throw ValidationError("--client-loops must be 1...64.") }
        if !(warmup >= 0 && warmup <= 600) { throw ValidationError("--warmup must be 0...600 seconds.") }
        guard let scenarioValue = Scenario(rawValue: scenario) else { throw ValidationError("--scenario must be load, failover, sweep or large-kv.") }
        if !(1...1000).contains(healthInstances) { throw ValidationError("--health-instances must be 1...1000.") }
        if scenarioValue == .sweep {
            guard servers != nil else { throw ValidationError("--scenario sweep needs --servers (a fresh cluster per combination).") }
            for (name, text, range) in [("--sweep-inflight", sweepInflight, 1...4096), ("--sweep-entries", sweepEntries, 1...65536),
                                        ("--sweep-bytes", sweepBytes, 4096...(64 << 20)), ("--sweep-delay-ms", sweepDelayMs, 0...10_000)] {
                let values = Self.list(text)
                guard !values.isEmpty, values.allSatisfy({ Int($0).map(range.contains) ?? false }) else {
                    throw ValidationError("\(name): comma-separated integers in \(range.lowerBound)...\(range.upperBound) (got \"\(text)\").")
                }
            }
            if !(1...20).contains(sweepRounds) { throw ValidationError("--sweep-rounds must be 1...20.") }
        }
        if scenarioValue == .largeKV {
            guard let servers, servers >= 3 else { throw ValidationError("--scenario large-kv needs --servers 3 or more.") }
        }
        if compareEtcd && target != nil { throw ValidationError("--compare-etcd needs --servers (etcd is started with the same size).") }
        if compareEtcd && workloads.contains(where: { [.cas, .import, .catalog, .health].contains($0) }) {
            throw ValidationError("--compare-etcd runs put, get and mixed only (cas, import, catalog and health have no etcd gateway equivalent here).")
        }
        if workloads.contains(.import) && target == nil && servers == nil { throw ValidationError("import needs a cluster.") }
        if scenarioValue == .failover {
            guard let servers, servers >= 3 else { throw ValidationError("--scenario failover needs --servers 3 or more.") }
            if !(1...50).contains(repetitions) { throw ValidationError("--repetitions must be 1...50.") }
            let times = Self.list(failoverWindow).compactMap(Double.init)
            guard times.count == 2, times[0] > 0, times[1] > times[0] + 1, times[1] <= 120 else {
                throw ValidationError("--failover-window must be KILL_AFTER,TOTAL seconds with 0 < KILL_AFTER < TOTAL - 1 <= 119.")
            }
        }
    }

    /// The settings recorded with a run.
    public func settings(system: System, workload: Workload, connections: Int, servers: Int) -> RunSettings {
        RunSettings(system: system, workload: workload, connections: connections, durationSeconds: duration,
                    requestCap: requests, valueSize: valueSize, consistency: consistencyMode, readRatio: readRatio,
                    keys: keys, servers: servers, targeting: spread ? "spread" : "leader", clientLoops: clientLoops,
                    configFile: configFile)
    }

    public func run() throws {
        Cleanup.shared.keepDirectories = keepData
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.run() }
        let runner = BenchRunner(options: self)
        do {
            try runner.run()
        } catch {
            Cleanup.shared.run()
            throw error
        }
    }
}

/// `http://host:port`, `host:port` (HTTPClient's rules); https is refused.
func parseHTTPAddress(_ text: String) -> (String, Int)? {
    var rest = Substring(text)
    if rest.hasPrefix("http://") { rest = rest.dropFirst(7) } else if rest.contains("://") { return nil }
    if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
    guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else { return nil }
    let host = String(rest[..<colon])
    return host.isEmpty ? nil : (host, port)
}
