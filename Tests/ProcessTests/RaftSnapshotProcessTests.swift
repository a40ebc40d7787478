// Snapshots with real server agents: three servers with a tiny raft_snapshot_threshold and
// raft_trailing_logs (set through -config-file) compact their logs; a follower stopped during
// the writes catches up through InstallSnapshot; a server whose log was compacted restarts.
import Foundation
import HTTP
import Testing

extension AgentProcess {
    /// Stats.raft of /v1/agent/self (Consul's strings).
    func raftStats() throws -> [String: String] {
        let stats = (try json("/v1/agent/self") as? [String: Any])?["Stats"] as? [String: Any]
        return stats?["raft"] as? [String: String] ?? [:]
    }

    /// The value of `key` read with ?stale (answered from this server's own state).
    func staleValue(_ key: String) throws -> String? {
        let response = try http("GET", "/v1/kv/\(key)?stale")
        guard response.status == 200,
              let entries = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]],
              let encoded = entries.first?["Value"] as? String, let data = Data(base64Encoded: encoded) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

@Suite("Raft snapshots with agents", .serialized)
struct RaftSnapshotProcessTests {
    @Test func aStoppedFollowerCatchesUpThroughASnapshotAndACompactedServerRestarts() throws {
        let configFile = NSTemporaryDirectory() + "/conclave-snapshot-config-\(UUID().uuidString).json"
        try Data(#"{"raft_snapshot_threshold": 32, "raft_trailing_logs": 8, "raft_snapshot_interval": "200ms"}"#.utf8)
            .write(to: URL(fileURLWithPath: configFile))
        defer { try? FileManager.default.removeItem(atPath: configFile) }
        let first = try AgentProcess(node: "sn1", server: true, extra: ["-bootstrap-expect", "3", "-config-file", configFile])
        let join = ["-bootstrap-expect", "3", "-config-file", configFile,
                    "-retry-join", "127.0.0.1:\(try first.serfLANPort())", "-retry-interval", "1s"]
        var servers = [first, try AgentProcess(node: "sn2", server: true, extra: join),
                       try AgentProcess(node: "sn3", server: true, extra: join)]
        defer { servers.forEach { $0.stop() } }
        let leader = try waitForCluster(servers)
        let leaderIndex = try #require(try servers.firstIndex { try $0.raftAddress() == leader })
        let followerIndex = (leaderIndex + 1) % 3
        let otherIndex = (leaderIndex + 2) % 3
        // Restarted servers join through the leader (the first server may be one of them).
        let joinAddress = "127.0.0.1:\(try servers[leaderIndex].serfLANPort())"

        #expect(try servers[leaderIndex].http("PUT", "/v1/kv/snap/before", body: "b").status == 200)
        try poll("the first write on the follower", seconds: 30) { try servers[followerIndex].staleValue("snap/before") == "b" }
        let follower = servers[followerIndex]
        let raftPort = try follower.raftAddress().split(separator: ":").last.map(String.init) ?? "0"
        let serfPort = String(try follower.serfLANPort())
        _ = follower.terminate()
        let stoppedAt = UInt64(try servers[leaderIndex].raftStats()["commit_index"] ?? "0") ?? 0

        var expected = ["snap/before": "b"]
        for i in 0 ..< 100 {
            let response = try servers[otherIndex].http("PUT", "/v1/kv/snap/k\(i)", body: "v\(i)")
            if response.status == 200 { expected["snap/k\(i)"] = "v\(i)" }
        }
        #expect(expected.count == 101)
        // Both running servers compact past everything the stopped follower holds.
        for index in [leaderIndex, otherIndex] {
            try poll("server \(index) to compact past \(stoppedAt)", seconds: 30) {
                (UInt64(try servers[index].raftStats()["last_snapshot_index"] ?? "0") ?? 0) > stoppedAt + 1
            }
        }

        let restarted = try AgentProcess(dataDir: follower.dataDir, arguments: [
            "agent", "-server", "-bootstrap-expect", "3", "-node", "sn\(followerIndex + 1)", "-data-dir", follower.dataDir,
            "-client", "127.0.0.1", "-bind", "127.0.0.1", "-http-port", "0", "-dns-port", "-1",
            "-serf-lan-port", serfPort, "-serf-wan-port", "0", "-server-port", raftPort, "-log-level", "info",
            "-config-file", configFile, "-retry-join", joinAddress, "-retry-interval", "1s"])
        servers[followerIndex] = restarted
        try poll("every key on the restarted follower", seconds: 60) {
            try expected.allSatisfy { key, value in try restarted.staleValue(key) == value }
        }
        // The keys are readable once the state is loaded; the log's restore is logged after.
        try poll("the snapshot install in the restarted follower's log", seconds: 30) {
            restarted.output.text.contains("raft: installing snapshot") && restarted.output.text.contains("raft: snapshot installed")
        }
        #expect(servers[leaderIndex].output.text.contains("raft: compacting logs")
            || servers[otherIndex].output.text.contains("raft: compacting logs"))

        // A server whose log was compacted restarts from its snapshot point and its state.
        let other = servers[otherIndex]
        let snapshotIndex = UInt64(try other.raftStats()["last_snapshot_index"] ?? "0") ?? 0
        #expect(snapshotIndex > 0)
        let otherRaftPort = try other.raftAddress().split(separator: ":").last.map(String.init) ?? "0"
        let otherSerfPort = String(try other.serfLANPort())
        _ = other.terminate()
        let again = try AgentProcess(dataDir: other.dataDir, arguments: [
            "agent", "-server", "-bootstrap-expect", "3", "-node", "sn\(otherIndex + 1)", "-data-dir", other.dataDir,
            "-client", "127.0.0.1", "-bind", "127.0.0.1", "-http-port", "0", "-dns-port", "-1",
            "-serf-lan-port", otherSerfPort, "-serf-wan-port", "0", "-server-port", otherRaftPort, "-log-level", "info",
            "-config-file", configFile, "-retry-join", joinAddress, "-retry-interval", "1s"])
        servers[otherIndex] = again
        #expect((UInt64(try again.raftStats()["last_snapshot_index"] ?? "0") ?? 0) >= snapshotIndex)
        for (key, value) in expected { #expect(try again.staleValue(key) == value, "\(key)") }
        _ = try waitForCluster(servers)
        #expect(try again.http("PUT", "/v1/kv/snap/after", body: "a").status == 200)
        try poll("the last write everywhere", seconds: 30) {
            try servers.allSatisfy { try $0.staleValue("snap/after") == "a" }
        }
    }

    /// Waits until all servers report 3 peers and one same, non-empty leader.
    private func waitForCluster(_ servers: [AgentProcess]) throws -> String {
        var agreed = ""
        try poll("3 servers to agree on one leader", seconds: 60) {
            let leaders = Set(servers.map(\.leader))
            guard leaders.count == 1, let leader = leaders.first, !leader.isEmpty else { return false }
            guard servers.allSatisfy({ Set($0.peers).count == 3 }) else { return false }
            agreed = leader
            return true
        }
        return agreed
    }
}
