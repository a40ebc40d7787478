// `--scenario sweep`: the Raft pipelining limits (raft_max_inflight, raft_max_append_entries,
// raft_max_append_bytes) and an optional injected one-way delay between servers. Each combination
// gets a fresh cluster (the limits are agent config keys, read at start) and one PUT run per
// connection count. Rounds repeat every combination in the same order, so on a shared machine a
// change of load hits all combinations alike; the summary gives the median over rounds.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum SweepConfig {
    /// The agent config file of one combination. The agent refuses raft_max_append_bytes below
    /// kv_max_value_size + 1024 (the largest write must fit one message), so a smaller limit
    /// comes with a smaller kv_max_value_size.
    public static func json(inflight: Int, entries: Int, bytes: Int) -> String {
        var fields = ["\"raft_max_inflight\": \(inflight)", "\"raft_max_append_entries\": \(entries)",
                      "\"raft_max_append_bytes\": \(bytes)"]
        if bytes < 512 * 1024 + 1024 { fields.append("\"kv_max_value_size\": \(bytes - 1024)") }
        return "{" + fields.joined(separator: ", ") + "}\n"
    }
}

struct SweepScenario {
    let runner: BenchRunner

    struct Combination: Hashable {
        var delayMs: Int
        var inflight: Int
        var entries: Int
        var bytes: Int
    }

    struct Row {
        var combination: Combination
        var connections: Int
        var result: RunResult
    }

    static func configJSON(_ c: Combination) -> String {
        SweepConfig.json(inflight: c.inflight, entries: c.entries, bytes: c.bytes)
    }

    func run() throws {
        let o = runner.options
        let binary = try runner.ensureConclaveBinary()
        let dir = try makeTempDir("sweep")
        var combinations: [Combination] = []
        for delay in BenchCommand.ints(o.sweepDelayMs) {
            for inflight in BenchCommand.ints(o.sweepInflight) {
                for entries in BenchCommand.ints(o.sweepEntries) {
                    for bytes in BenchCommand.ints(o.sweepBytes) {
                        combinations.append(Combination(delayMs: delay, inflight: inflight, entries: entries, bytes: bytes))
                    }
                }
            }
        }
        runner.say("sweep: \(combinations.count) combinations x \(o.connectionCounts.count) connection counts x \(o.sweepRounds) round(s), a fresh \(o.servers!)-server cluster per combination and round")
        var rows: [Row] = []
        for round in 1...o.sweepRounds {
            for (n, c) in combinations.enumerated() {
                let file = "\(dir)/c\(n).json"
                try Self.configJSON(c).write(toFile: file, atomically: true, encoding: .utf8)
                // Read by the agents' RaftTransport (test-only switch); the children inherit it.
                if c.delayMs > 0 { setenv("CONCLAVE_TEST_RAFT_DELAY_MS", String(c.delayMs), 1) } else { unsetenv("CONCLAVE_TEST_RAFT_DELAY_MS") }
                defer { unsetenv("CONCLAVE_TEST_RAFT_DELAY_MS") }
                let cluster = try ConclaveCluster(count: o.servers!, binary: binary, configFile: file, log: { _ in })
                defer { cluster.stop() }
                let leader = try cluster.leaderIndex(timeoutSeconds: 30)
                for connections in o.connectionCounts {
                    var plan = LoadPlan(system: .conclave, workload: .put, connections: connections, durationSeconds: o.duration,
                                        requestCap: o.requests, valueSize: o.valueSize, consistency: .default, readRatio: 0,
                                        keys: o.keys, targets: [cluster.targets[leader]], clientLoops: o.clientLoops,
                                        putPrefix: "bench/sweep/\(runner.runTag())")
                    if o.warmup > 0 {
                        var warm = plan
                        warm.durationSeconds = o.warmup
                        warm.requestCap = 0
                        _ = try LoadDriver.run(warm)
                        plan.putPrefix = "bench/sweep/\(runner.runTag())"
                    }
                    let load = runner.loadAverage()
                    let startedAt = iso8601Now()
                    let outcome = try LoadDriver.run(plan)
                    var settings = o.settings(system: .conclave, workload: .put, connections: connections, servers: o.servers!)
                    settings.configFile = Self.configJSON(c).trimmingCharacters(in: .whitespacesAndNewlines)
                    let result = RunResult(settings: settings, startedAt: startedAt, elapsedSeconds: outcome.elapsedSeconds,
                                           operations: outcome.operations, latencyMs: LatencySummary(histogram: outcome.histogram),
                                           errors: outcome.errors,
                                           extra: ["round": Double(round), "raftMaxInflight": Double(c.inflight),
                                                   "raftMaxAppendEntries": Double(c.entries), "raftMaxAppendBytes": Double(c.bytes),
                                                   "raftDelayMs": Double(c.delayMs), "loadAverage1m": load])
                    rows.append(Row(combination: c, connections: connections, result: result))
                    runner.say(String(format: "round %d  delay %3d ms  inflight %4d  entries %4d  bytes %8d  conns %3d: %7.0f puts/s  p50 %6.2f  p99 %7.2f ms  errors %d  load %.1f",
                                      round, c.delayMs, c.inflight, c.entries, c.bytes, connections, result.opsPerSecond,
                                      result.latencyMs.p50, result.latencyMs.p99, result.errorCount, load))
                    if o.json { print(result.jsonLine()); fflush(nil) }
                }
            }
        }
        printSummary(rows, combinations: combinations)
    }

    private func printSummary(_ rows: [Row], combinations: [Combination]) {
        let o = runner.options
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        var table: [[String]] = []
        for c in combinations {
            for connections in o.connectionCounts {
                let mine = rows.filter { $0.combination == c && $0.connections == connections }
                guard !mine.isEmpty else { continue }
                let ops = mine.map(\.result.opsPerSecond)
                let range = mine.count > 1 ? String(format: " (%.0f–%.0f)", ops.min()!, ops.max()!) : ""
                table.append([String(c.delayMs), String(c.inflight), String(c.entries), Self.bytesLabel(c.bytes), String(connections),
                              String(format: "%.0f", median(ops)) + range,
                              String(format: "%.2f", median(mine.map(\.result.latencyMs.p50))),
                              String(format: "%.2f", median(mine.map(\.result.latencyMs.p99))),
                              String(mine.map(\.result.errorCount).reduce(0, +)),
                              String(format: "%.1f", median(mine.compactMap { $0.result.extra["loadAverage1m"] }))])
            }
        }
        runner.say("")
        runner.say("sweep: PUT of unique keys, \(o.valueSize) B values, \(o.servers!) servers, every connection to the leader, \(o.duration) s per cell after \(o.warmup) s warm-up; median over \(o.sweepRounds) round(s)")
        runner.say(Table.render(table, header: ["delay ms", "inflight", "entries", "bytes", "conns", "puts/s", "p50 ms", "p99 ms", "errors", "load 1m"]))
    }

    static func bytesLabel(_ bytes: Int) -> String {
        if bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes % 1024 == 0 { return "\(bytes >> 10) KiB" }
        return String(bytes)
    }
}
