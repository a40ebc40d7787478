// Orchestrates an invocation: settings block, clusters up and down, preloading, warm-up, each
// measured run, then the result table (and Conclave/etcd ratios) and JSON lines.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

final class BenchRunner {
    let options: BenchCommand
    private var results: [RunResult] = []

    init(options: BenchCommand) { self.options = options }

    /// Human-readable lines: stderr when stdout carries JSON, stdout otherwise.
    func say(_ line: String) {
        if options.json {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        } else {
            print(line)
            fflush(nil)
        }
    }

    func run() throws {
        printSettingsBlock()
        if options.scenarioKind == .failover {
            try FailoverScenario(runner: self).run()
            return
        }
        if options.scenarioKind == .sweep {
            try SweepScenario(runner: self).run()
            return
        }
        if options.scenarioKind == .largeKV {
            try LargeKVScenario(runner: self).run()
            return
        }
        if options.target != nil {
            try runAll([SystemUnderTest(system: .conclave, fixedTargets: options.targets, cluster: nil)])
        } else {
            let binary = try ensureConclaveBinary()
            let count = options.servers!
            let conclave = try ConclaveCluster(count: count, binary: binary, configFile: options.configFile, log: say)
            defer { conclave.stop() }
            var systems = [SystemUnderTest(system: .conclave, fixedTargets: nil, cluster: conclave)]
            var etcdCluster: EtcdCluster?
            defer { etcdCluster?.stop() }
            if options.compareEtcd {
                // Both clusters stay up and the rows alternate (Conclave, then etcd, per workload and
                // connection count), so a change in the machine's load hits both sides of a ratio alike.
                let etcd = try EtcdCluster.ensureInstalled(log: say)
                etcdCluster = try EtcdCluster(count: count, binary: etcd, log: say)
                systems.append(SystemUnderTest(system: .etcd, fixedTargets: nil, cluster: etcdCluster!))
            }
            try runAll(systems)
        }
        printSummary()
    }

    private func printSettingsBlock() {
        var uname = utsname()
        _ = withUnsafeMutablePointer(to: &uname) { Glibc.uname($0) }
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        say("conclave-bench \(iso8601Now()) on \(field(uname.nodename)) (\(field(uname.sysname)) \(field(uname.release)) \(field(uname.machine)), \(ProcessInfo.processInfo.activeProcessorCount) cores)")
        let o = options
        var lines = [
            "scenario: \(o.scenario); cluster: \(o.servers.map { "\($0) local server(s)" } ?? "targets \(o.targets.map(\.description).joined(separator: ","))")",
            "workloads: \(o.workloads.map(\.rawValue).joined(separator: ",")); connections: \(o.connectionCounts.map(String.init).joined(separator: ","))",
            "duration: \(o.duration) s each (warm-up \(o.warmup) s); request cap: \(o.requests == 0 ? "none" : String(o.requests)); value size: \(o.valueSize) B",
            "reads: consistency \(o.consistency), read ratio (mixed) \(o.readRatio), keys \(o.keys)",
            "targeting: \(o.spread ? "spread round-robin over all servers" : "every connection to the leader"); client loops: \(o.clientLoops)",
        ]
        if let configFile = o.configFile { lines.append("agent config file: \(configFile)") }
        if o.compareEtcd {
            lines.append("etcd: started beside Conclave (both clusters up; rows alternate Conclave, etcd per workload and connection count)")
            lines.append("etcd: same cluster size, v3 JSON gateway (put: POST /v3/kv/put; get: POST /v3/kv/range, \(o.consistencyMode == .stale ? "serializable" : "linearizable"))")
        }
        lines.append("durability: Conclave acknowledges a write after it is fsync'd on a majority and applied; etcd (defaults) after its WAL is fsync'd on a majority and applied")
        for line in lines { say("  " + line) }
    }

    // MARK: Conclave binary

    func ensureConclaveBinary() throws -> String {
        let path = URL(fileURLWithPath: options.conclaveBinary).standardizedFileURL.path
        if FileManager.default.isExecutableFile(atPath: path) {
            say("conclave binary: \(path)")
            return path
        }
        let suffix = "/.build/release/conclave"
        guard path.hasSuffix(suffix) else { throw BenchError("no executable at \(path) (give --conclave-binary)") }
        let root = String(path.dropLast(suffix.count))
        say("conclave binary: \(path) is missing; building it: (cd \(root) && swift build -c release --product conclave)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swift", "build", "-c", "release", "--product", "conclave"]
        process.currentDirectoryURL = URL(fileURLWithPath: root)
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: path) else {
            throw BenchError("building conclave failed (exit \(process.terminationStatus))")
        }
        return path
    }

    // MARK: Runs

    struct SystemUnderTest {
        var system: System
        var fixedTargets: [Target]?
        var cluster: BenchCluster?
    }

    private func runAll(_ systems: [SystemUnderTest]) throws {
        var preloaded = Set<String>()
        for workload in options.workloads {
            if workload == .import {
                for sut in systems where sut.system == .conclave {
                    let serverCount = sut.cluster?.targets.count ?? sut.fixedTargets!.count
                    results.append(try runImport(targets: try targets(sut.fixedTargets, sut.cluster), servers: serverCount))
                }
                continue
            }
            if workload == .health {
                for sut in systems where sut.system == .conclave && !preloaded.contains("health") {
                    try registerHealthInstances(targets: try targets(sut.fixedTargets, sut.cluster))
                    preloaded.insert("health")
                }
            }
            if [.get, .mixed, .cas].contains(workload) {
                for sut in systems where !preloaded.contains(sut.system.rawValue) {
                    try preload(system: sut.system, targets: try targets(sut.fixedTargets, sut.cluster))
                    preloaded.insert(sut.system.rawValue)
                }
            }
            for connections in options.connectionCounts {
                for sut in systems {
                    try runOne(sut, workload: workload, connections: connections)
                }
            }
        }
    }

    /// Registers `healthInstances` nodes, each with one instance of `LoadPlan.healthService`.
    private func registerHealthInstances(targets: [Target]) throws {
        for i in 0..<options.healthInstances {
            let body = RequestEncoding.catalogRegisterBody(node: "bench-health-node-\(i)", service: LoadPlan.healthService, port: 9000 + i)
            guard let answer = control(targets[0], "PUT", "/v1/catalog/register", body: body, timeout: 30),
                  answer.status == 200 else { throw BenchError("registering health instance \(i) failed") }
        }
        let list = controlJSON(targets[0], "/v1/health/service/\(LoadPlan.healthService)") as? [Any]
        guard list?.count == options.healthInstances else {
            throw BenchError("health: expected \(options.healthInstances) instances, got \(list?.count ?? -1)")
        }
        say("conclave: registered \(options.healthInstances) instances of \(LoadPlan.healthService)")
    }

    func runOne(_ sut: SystemUnderTest, workload: Workload, connections: Int) throws {
        let system = sut.system
        let serverCount = sut.cluster?.targets.count ?? sut.fixedTargets!.count
        let runTargets = try targets(sut.fixedTargets, sut.cluster)
        let plan = LoadPlan(system: system, workload: workload, connections: connections,
                            durationSeconds: options.duration, requestCap: options.requests,
                            valueSize: options.valueSize, consistency: options.consistencyMode,
                            readRatio: options.readRatio, keys: options.keys, targets: runTargets,
                            clientLoops: options.clientLoops, putPrefix: "bench/put/\(runTag())")
        if options.warmup > 0 {
            var warm = plan
            warm.durationSeconds = options.warmup
            warm.requestCap = 0
            warm.putPrefix = "bench/warm/\(runTag())"
            _ = try LoadDriver.run(warm)
        }
        let startedAt = iso8601Now()
        let outcome = try LoadDriver.run(plan)
        let result = RunResult(settings: options.settings(system: system, workload: workload, connections: connections,
                                                          servers: serverCount),
                               startedAt: startedAt, elapsedSeconds: outcome.elapsedSeconds, operations: outcome.operations,
                               latencyMs: LatencySummary(histogram: outcome.histogram), errors: outcome.errors,
                               extra: (workload == .cas ? ["casConflicts": Double(outcome.casConflicts)] : [:])
                                   .merging(["loadAverage1m": loadAverage()]) { a, _ in a })
        results.append(result)
        let rendered = Table.render([Table.row(result)]).split(separator: "\n").map(String.init)
        if results.count == 1 { say(rendered[0]) }
        say(rendered.last ?? "")
        if workload == .cas {
            say(String(format: "  cas: %d read-then-CAS operations, %d answered false (lost the race: %.1f%%)", outcome.operations,
                       outcome.casConflicts, outcome.operations > 0 ? 100 * Double(outcome.casConflicts) / Double(outcome.operations) : 0))
        }
        if options.json { print(result.jsonLine()); fflush(nil) }
    }

    func targets(_ fixed: [Target]?, _ cluster: BenchCluster?) throws -> [Target] {
        if let fixed { return options.spread ? fixed : [fixed[0]] }
        let all = cluster!.targets
        if options.spread { return all }
        return [all[try cluster!.leaderIndex(timeoutSeconds: 30)]]
    }

    func runTag() -> String { String(UUID().uuidString.prefix(8)).lowercased() }

    /// Writes `bench/get/0..<keys` once (16 connections), checked: every key must be acknowledged.
    private func preload(system: System, targets: [Target]) throws {
        var plan = LoadPlan(system: system, workload: .put, connections: min(16, options.keys), durationSeconds: 600,
                            requestCap: 0, valueSize: options.valueSize, consistency: .default, readRatio: 0,
                            keys: options.keys, targets: targets, clientLoops: 1, putPrefix: "")
        plan.preload = true
        let outcome = try LoadDriver.run(plan, drainSeconds: 30)
        guard outcome.operations == options.keys else {
            throw BenchError("preload of \(options.keys) keys: only \(outcome.operations) acknowledged; errors \(outcome.errors)")
        }
        say(String(format: "%@: preloaded %d keys of %d B in %.1f s", system.rawValue, options.keys, options.valueSize, outcome.elapsedSeconds))
    }

    /// `conclave kv import` of a generated export of `keys` entries; keys/s.
    private func runImport(targets: [Target], servers: Int) throws -> RunResult {
        let binary = try ensureConclaveBinary()
        let dir = try makeTempDir("import")
        let file = "\(dir)/export.json"
        let value = RequestEncoding.base64(RequestEncoding.value(size: options.valueSize))
        let tag = runTag()
        var text = "["
        for i in 0..<options.keys {
            if i > 0 { text += "," }
            text += "{\"key\":\"bench/import/\(tag)/\(i)\",\"flags\":0,\"value\":\"\(value)\"}"
        }
        text += "]"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["kv", "import", "-http-addr", targets[0].description, "@\(file)"]
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        let startedAt = iso8601Now()
        let start = monotonicNanos()
        try process.run()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let elapsed = Double(monotonicNanos() - start) / 1e9
        var errorKinds: [String: Int] = [:]
        if process.terminationStatus != 0 { errorKinds["import exit \(process.terminationStatus): \(errorText.prefix(80))"] = 1 }
        let result = RunResult(settings: options.settings(system: .conclave, workload: .import, connections: 1, servers: servers),
                               startedAt: startedAt, elapsedSeconds: elapsed,
                               operations: process.terminationStatus == 0 ? options.keys : 0,
                               latencyMs: LatencySummary(p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0),
                               errors: errorKinds, extra: ["importedKeys": Double(options.keys)])
        say(String(format: "import: %d keys in %.2f s = %.0f keys/s (conclave kv import, one connection, one PUT per key)",
                   options.keys, elapsed, result.opsPerSecond))
        if options.json { print(result.jsonLine()); fflush(nil) }
        return result
    }

    /// The 1-minute load average (/proc/loadavg), recorded with each run: the machine is shared.
    func loadAverage() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return -1 }
        return Double(text.split(separator: " ").first ?? "") ?? -1
    }

    private func printSummary() {
        guard !results.isEmpty else { return }
        say("")
        say(Table.render(results.map(Table.row)))
        let conclave = results.filter { $0.settings.system == .conclave }
        let etcd = results.filter { $0.settings.system == .etcd }
        let pairs = conclave.compactMap { c -> [String]? in
            guard let e = etcd.first(where: { $0.settings.workload == c.settings.workload && $0.settings.connections == c.settings.connections }) else { return nil }
            return Table.ratioRow(conclave: c, etcd: e)
        }
        if !pairs.isEmpty {
            say("")
            say("Conclave / etcd (ops/s: above 1 means Conclave is faster; latencies: below 1 means Conclave is faster)")
            say(Table.render(pairs, header: Table.ratioHeader))
        }
        say("latencies in milliseconds; ops/s = answered operations / time from the first request to the last answer")
    }
}
