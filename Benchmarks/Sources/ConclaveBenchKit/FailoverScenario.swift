// `--scenario failover`: a fresh N-server cluster per repetition, PUT load spread over all servers
// (a connection whose server dies moves to the next), kill -9 of the leader after KILL_AFTER
// seconds, then two figures: the time until a surviving server reports a new leader on
// /v1/status/leader, and the write gap: from the kill to the first acknowledged PUT that was
// *sent after* the kill (so no answer already on its way counts).
import Foundation

struct FailoverScenario {
    let runner: BenchRunner

    struct Repetition: Codable {
        var repetition: Int
        var servers: Int
        var connections: Int
        var electionSeconds: Double
        var writeGapSeconds: Double?
        var writesBeforeKill: Int
        var writesAfterKill: Int
        var errors: [String: Int]
    }

    func run() throws {
        let o = runner.options
        let binary = try runner.ensureConclaveBinary()
        let count = o.servers!
        let connections = o.connectionCounts.first ?? 16
        let (killAfter, total) = o.failoverTimes
        var repetitions: [Repetition] = []
        for index in 1...o.repetitions {
            let cluster = try ConclaveCluster(count: count, binary: binary, configFile: o.configFile, log: runner.say)
            defer { cluster.stop() }
            let leader = try cluster.leaderIndex(timeoutSeconds: 30)
            let oldLeader = cluster.raftAddresses[leader]
            var plan = LoadPlan(system: .conclave, workload: .put, connections: connections, durationSeconds: total,
                                requestCap: 0, valueSize: o.valueSize, consistency: .default, readRatio: 0, keys: o.keys,
                                targets: cluster.targets, clientLoops: o.clientLoops, putPrefix: "bench/failover/\(index)")
            plan.recordTimeline = true
            let loadPlan = plan
            let box = OutcomeBox()
            let loadThread = Thread { box.set(Result { try LoadDriver.run(loadPlan) }) }
            loadThread.start()
            Thread.sleep(forTimeInterval: killAfter)
            cluster.processes[leader].kill9()
            let killedAt = monotonicNanos()
            var electedAt: UInt64?
            let survivors = cluster.targets.indices.filter { $0 != leader }
            let pollDeadline = killedAt + UInt64((total - killAfter) * 1e9)
            while electedAt == nil && monotonicNanos() < pollDeadline {
                for s in survivors {
                    let reported = (controlJSON(cluster.targets[s], "/v1/status/leader", timeout: 1) as? String) ?? ""
                    if !reported.isEmpty && reported != oldLeader {
                        electedAt = monotonicNanos()
                        break
                    }
                }
                if electedAt == nil { usleep(10_000) }
            }
            let outcome = try box.wait()
            let firstAfter = outcome.writeTimeline.filter { $0.0 >= killedAt }.map(\.1).min()
            let repetition = Repetition(
                repetition: index, servers: count, connections: connections,
                electionSeconds: electedAt.map { Double($0 - killedAt) / 1e9 } ?? -1,
                writeGapSeconds: firstAfter.map { Double($0 - killedAt) / 1e9 },
                writesBeforeKill: outcome.writeTimeline.filter { $0.1 < killedAt }.count,
                writesAfterKill: outcome.writeTimeline.filter { $0.0 >= killedAt }.count,
                errors: outcome.errors)
            repetitions.append(repetition)
            runner.say(String(format: "failover %d/%d: new leader reported after %@, writes resumed after %@ (%d writes before the kill, %d after; errors %@)",
                              index, o.repetitions,
                              repetition.electionSeconds >= 0 ? String(format: "%.3f s", repetition.electionSeconds) : "never (within the window)",
                              repetition.writeGapSeconds.map { String(format: "%.3f s", $0) } ?? "never (within the window)",
                              repetition.writesBeforeKill, repetition.writesAfterKill, Table.errorText(repetition.errors)))
            if o.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                print(String(decoding: try encoder.encode(repetition), as: UTF8.self))
                fflush(nil)
            }
        }
        let elections = repetitions.map(\.electionSeconds).filter { $0 >= 0 }.sorted()
        let gaps = repetitions.compactMap(\.writeGapSeconds).sorted()
        func summary(_ values: [Double]) -> String {
            guard let first = values.first, let last = values.last else { return "none" }
            return String(format: "median %.3f s (min %.3f, max %.3f, n=%d)", values[values.count / 2], first, last, values.count)
        }
        runner.say("")
        runner.say("failover of \(count) servers, \(connections) writing connections spread over all servers, kill -9 of the leader after \(killAfter) s:")
        runner.say("  new leader on /v1/status/leader: \(summary(elections))")
        runner.say("  first write acknowledged that was sent after the kill: \(summary(gaps))")
    }
}

/// Hands the load's outcome from its thread to the scenario.
private final class OutcomeBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var result: Result<LoadOutcome, Error>?

    func set(_ value: Result<LoadOutcome, Error>) {
        condition.lock()
        result = value
        condition.broadcast()
        condition.unlock()
    }

    func wait() throws -> LoadOutcome {
        condition.lock()
        defer { condition.unlock() }
        while result == nil { condition.wait() }
        return try result!.get()
    }
}
