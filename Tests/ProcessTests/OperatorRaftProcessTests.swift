// `conclave operator raft list-peers | transfer-leader | remove-peer` against three real
// server agents on 127.0.0.1 (-bootstrap-expect 3, joined by -retry-join).
import Foundation
import HTTP
import Testing

@Suite("Raft operator commands on a cluster", .serialized)
struct OperatorRaftProcessTests {
    /// Rows of `list-peers` after the header, split on runs of spaces.
    private func listPeers(_ agent: AgentProcess) throws -> (status: Int32, rows: [[String]], raw: String) {
        let result = try runCLI(["operator", "raft", "list-peers"] + agent.httpAddr)
        let lines = result.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        return (result.status, Array(lines.dropFirst()), result.stdout + result.stderr)
    }

    @Test func listPeersTransferLeaderAndRemovePeer() throws {
        let first = try AgentProcess(node: "orp1", server: true, extra: ["-bootstrap-expect", "3"])
        let join = ["-bootstrap-expect", "3", "-retry-join", "127.0.0.1:\(try first.serfLANPort())", "-retry-interval", "1s"]
        let servers = [first, try AgentProcess(node: "orp2", server: true, extra: join),
                       try AgentProcess(node: "orp3", server: true, extra: join)]
        defer { servers.forEach { $0.stop() } }

        // list-peers: three voters, exactly one leader, Consul's columns.
        var rows: [[String]] = []
        try poll("list-peers to show 3 servers with one leader", seconds: 60) {
            let listed = try listPeers(servers[1])
            rows = listed.rows
            return listed.status == 0 && rows.count == 3 && rows.filter { $0.count == 6 && $0[3] == "leader" }.count == 1
        }
        let header = try runCLI(["operator", "raft", "list-peers"] + servers[0].httpAddr).stdout.split(separator: "\n").first
        #expect(header?.split(separator: " ").map(String.init) == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"])
        #expect(Set(rows.map { $0[0] }) == ["orp1", "orp2", "orp3"])
        #expect(rows.allSatisfy { $0[4] == "true" && $0[5] == "3" && UUID(uuidString: $0[1]) != nil })
        let leaderRow = try #require(rows.first { $0[3] == "leader" })

        // transfer-leader to a named follower moves the leadership there.
        let targetRow = try #require(rows.first { $0[3] == "follower" })
        let transfer = try runCLI(["operator", "raft", "transfer-leader", "-id", targetRow[1]] + servers[0].httpAddr)
        #expect(transfer.status == 0, "\(transfer.stderr)")
        #expect(transfer.stdout == "Success\n")
        try poll("leadership to move to \(targetRow[0])", seconds: 30) {
            Set(servers.map(\.leader)) == [targetRow[2]]
        }
        #expect(leaderRow[0] != targetRow[0])

        // remove-peer of a stopped follower (any server but the new leader): two servers remain.
        let victimRow = try #require(rows.first { $0[0] != targetRow[0] })
        func nodeName(_ server: AgentProcess) -> String {
            ((try? server.json("/v1/agent/self")) as? [String: Any]).flatMap { ($0["Config"] as? [String: Any])?["NodeName"] as? String } ?? ""
        }
        let victim = try #require(servers.first { nodeName($0) == victimRow[0] })
        let survivors = servers.filter { $0 !== victim }
        _ = victim.terminate()
        // Only once the LAN pool has it failed: the leader adds live servers back (as Consul).
        try poll("\(victimRow[0]) to be failed in the LAN pool", seconds: 60) {
            let members = (try survivors[0].json("/v1/agent/members")) as? [[String: Any]] ?? []
            return members.contains { $0["Name"] as? String == victimRow[0] && $0["Status"] as? Int == 4 }
        }
        let removed = try runCLI(["operator", "raft", "remove-peer", "-address", victimRow[2]] + survivors[0].httpAddr)
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stdout == "Removed peer with address \"\(victimRow[2])\"\n")
        try poll("list-peers to show 2 servers", seconds: 30) {
            let listed = try listPeers(survivors[1])
            return listed.status == 0 && listed.rows.count == 2 && !listed.rows.contains { $0[0] == victimRow[0] }
        }
        // Errors exit 1 with Consul's lines.
        let unknown = try runCLI(["operator", "raft", "remove-peer", "-id", "nope"] + survivors[0].httpAddr)
        #expect(unknown.status == 1)
        #expect(unknown.stderr == "Error removing peer: Unexpected response code: 500 (id \"nope\" was not found in the Raft configuration)\n")
        let neither = try runCLI(["operator", "raft", "remove-peer"] + survivors[0].httpAddr)
        #expect(neither.status == 1)
        #expect(neither.stderr == "Error removing peer: an address or id is required for the peer to remove\n")

        // The leader's metrics count what it replicated to each follower.
        let leader = try #require(survivors.first { (try? $0.raftAddress()) == $0.leader })
        let prometheus = try leader.http("GET", "/v1/agent/metrics?format=prometheus").text
        #expect(prometheus.contains("consul_raft_replication_appendEntries_logs{peer_id="))
        #expect(prometheus.contains("consul_raft_replication_inflight{peer_id="))
    }

    @Test func listPeersWithoutAnAgentFails() throws {
        let result = try runCLI(["operator", "raft", "list-peers", "-http-addr", "127.0.0.1:1"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("Error getting peers: Failed to retrieve raft configuration: "))
    }
}

private extension HTTPClientResponse {
    var text: String { String(decoding: body, as: UTF8.self) }
}
