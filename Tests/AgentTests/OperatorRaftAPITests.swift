// /v1/operator/raft/*, /v1/agent/metrics, the raft_* config keys, default-consistency reads on
// followers and the 429 answer to an overloaded replicator, on in-process agents.
@testable import Agent
import Foundation
import HTTP
import Testing

/// Three in-process servers with -bootstrap-expect 3, the others joining the first.
final class ThreeAgents {
    let agents: [TestAgent]
    let prefix: String

    init(prefix: String) throws {
        self.prefix = prefix
        func configure(_ name: String, join: [String]) -> (inout AgentConfig) -> Void {
            { config in
                config.nodeName = name
                config.bootstrap = false
                config.bootstrapExpect = 3
                config.startJoin = join
            }
        }
        let first = try TestAgent(configure: configure("\(prefix)1", join: []))
        var agents = [first]
        do {
            let join = ["127.0.0.1:\(first.agent.serfLANPort)"]
            agents.append(try TestAgent(configure: configure("\(prefix)2", join: join)))
            agents.append(try TestAgent(configure: configure("\(prefix)3", join: join)))
        } catch {
            agents.forEach { $0.stop() }
            throw error
        }
        self.agents = agents
    }

    func stop() { agents.forEach { $0.stop() } }

    /// The index of the agent every running agent names as leader, once they agree on 3 peers.
    func waitForLeader(among running: [Int] = [0, 1, 2], seconds: Double = 30) throws -> Int {
        var found = -1
        try pollUntil("one leader and 3 peers", seconds: seconds) {
            let answers = try running.map { i -> (String, Int) in
                let leader = try agents[i].request("GET", "/v1/status/leader").json as? String ?? ""
                let peers = try agents[i].request("GET", "/v1/status/peers").json as? [String] ?? []
                return (leader, peers.count)
            }
            guard let leader = answers.first?.0, !leader.isEmpty, answers.allSatisfy({ $0.0 == leader && $0.1 == 3 }) else {
                return false
            }
            found = running.first { nodeAddress($0) == leader } ?? -1
            return found >= 0
        }
        return found
    }

    /// Waits until agent `observer` sees agent `i` as failed in the LAN pool (a live member
    /// would be added back by the leader's reconcile, as in Consul).
    func waitUntilFailed(_ i: Int, seenBy observer: Int) throws {
        let name = "\(prefix)\(i + 1)"
        try pollUntil("\(name) to be failed in the LAN pool", seconds: 60) {
            let members = try agents[observer].request("GET", "/v1/agent/members").entries
            return members.contains { $0["Name"] as? String == name && $0["Status"] as? Int == 4 }
        }
    }

    /// The Raft address of agent `i` (127.0.0.1 and its `port` tag).
    func nodeAddress(_ i: Int) -> String {
        let member = ((try? agents[i].request("GET", "/v1/agent/self").json) as? [String: Any])?["Member"] as? [String: Any]
        return "127.0.0.1:\((member?["Tags"] as? [String: String])?["port"] ?? "?")"
    }

    func nodeID(_ i: Int) -> String {
        let config = ((try? agents[i].request("GET", "/v1/agent/self").json) as? [String: Any])?["Config"] as? [String: Any]
        return config?["NodeID"] as? String ?? ""
    }
}

@Suite("Raft operator API", .serialized)
struct OperatorRaftAPITests {
    @Test func configurationOfASingleServerHasConsulShape() throws {
        let agent = try TestAgent { $0.nodeName = "solo" }
        defer { agent.stop() }
        let nodeID = ((try agent.request("GET", "/v1/agent/self").json as? [String: Any])?["Config"] as? [String: Any])?["NodeID"] as? String
        for path in ["/v1/operator/raft/configuration", "/v1/operator/raft/configuration?stale"] {
            let response = try agent.request("GET", path)
            #expect(response.status == 200)
            let body = try #require(response.json as? [String: Any])
            #expect(body["Index"] is Int)
            let servers = try #require(body["Servers"] as? [[String: Any]])
            try #require(servers.count == 1)
            let server = servers[0]
            #expect(Set(server.keys) == ["ID", "Node", "Address", "Leader", "ProtocolVersion", "Voter"])
            #expect(server["ID"] as? String == nodeID)
            #expect(server["Node"] as? String == "solo")
            #expect(server["Leader"] as? Bool == true)
            #expect(server["Voter"] as? Bool == true)
            #expect(server["ProtocolVersion"] as? String == "3")
            #expect((server["Address"] as? String)?.hasPrefix("127.0.0.1:") == true)
            #expect(response.headers["X-Consul-KnownLeader"] == "true")
        }
    }

    @Test(arguments: [
        ("DELETE", "/v1/operator/raft/peer", 400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"),
        ("DELETE", "/v1/operator/raft/peer?id=nope", 500, "id \"nope\" was not found in the Raft configuration"),
        ("DELETE", "/v1/operator/raft/peer?address=nope", 500, "address \"nope\" was not found in the Raft configuration"),
        ("POST", "/v1/operator/raft/transfer-leader?id=nope", 500, "id \"nope\" was not found in the Raft configuration"),
        ("POST", "/v1/operator/raft/transfer-leader", 500, "cannot find peer"),
        ("PUT", "/v1/operator/raft/peer?id=x", 405, "method PUT not allowed"),
        ("GET", "/v1/operator/raft/transfer-leader", 405, "method GET not allowed"),
        ("GET", "/v1/operator/raft/configuration?stale&consistent", 400, "Cannot specify ?stale with ?consistent"),
        ("GET", "/v1/operator/raft/configuration?dc=other", 500, "No path to datacenter"),
        ("GET", "/v1/operator/raft/nothing", 404, "404 page not found"),
    ] as [(String, String, Int, String)])
    func badOperatorRequestsAnswerConsulsStatusAndMessage(method: String, path: String, status: Int, message: String) throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let response = try agent.request(method, path)
        #expect(response.status == status)
        #expect(response.text.contains(message), "\(response.text)")
    }

    @Test func clientAgentsAnswerNoKnownServers() throws {
        let agent = try TestAgent { $0.server = false; $0.bootstrap = false }
        defer { agent.stop() }
        let response = try agent.request("GET", "/v1/operator/raft/configuration")
        #expect(response.status == 500)
        #expect(response.text == "No known Consul servers")
    }

    @Test func threeServersListTransferLeadershipAndServeDefaultReadsOnFollowers() throws {
        let cluster = try ThreeAgents(prefix: "op")
        defer { cluster.stop() }
        let leader = try cluster.waitForLeader()
        let followers = [0, 1, 2].filter { $0 != leader }

        // The configuration names every server by node name and full node ID, from any server.
        let body = try #require(try cluster.agents[followers[0]].request("GET", "/v1/operator/raft/configuration").json as? [String: Any])
        let servers = try #require(body["Servers"] as? [[String: Any]])
        #expect(Set(servers.compactMap { $0["Node"] as? String }) == ["op1", "op2", "op3"])
        #expect(Set(servers.compactMap { $0["ID"] as? String }) == Set((0..<3).map(cluster.nodeID)))
        #expect(servers.filter { $0["Leader"] as? Bool == true }.compactMap { $0["Node"] as? String } == ["op\(leader + 1)"])
        #expect(servers.allSatisfy { $0["Voter"] as? Bool == true })

        // Default-mode reads on a follower see a write acknowledged by the leader just before.
        for i in 0..<20 {
            let put = try cluster.agents[leader].request("PUT", "/v1/kv/default/k\(i)", body: Array("v\(i)".utf8))
            #expect(put.status == 200)
            let get = try cluster.agents[followers[i % 2]].request("GET", "/v1/kv/default/k\(i)?raw")
            #expect(get.status == 200)
            #expect(get.text == "v\(i)")
            #expect(get.headers["X-Consul-Effective-Consistency"] == "leader")
        }

        // The leader counted what it replicated to each follower, and how full each window was.
        let snapshot = cluster.agents[leader].agent.metrics.snapshot()
        let followerIDs = Set(followers.map { cluster.nodeID($0) }.compactMap { RaftServerID.from(nodeID: $0) }.map { String($0, radix: 16) })
        let logs = snapshot.counters.filter { $0.name == "consul.raft.replication.appendEntries.logs" }
        #expect(Set(logs.compactMap { $0.labels["peer_id"] }) == followerIDs)
        #expect(logs.allSatisfy { $0.summary.sum >= 20 })
        #expect(Set(snapshot.gauges.filter { $0.name == "consul.raft.replication.inflight" }.compactMap { $0.labels["peer_id"] }) == followerIDs)
        let entries = try #require(snapshot.samples.first { $0.name == "consul.raft.replication.appendEntries.entries" })
        #expect(entries.summary.count > 0 && entries.summary.min >= 1)
        #expect(snapshot.samples.contains { $0.name == "consul.raft.replication.appendEntries.bytes" && $0.summary.sum > 0 })
        let rpc = snapshot.samples.filter { $0.name == "consul.raft.replication.appendEntries.rpc" }
        #expect(Set(rpc.compactMap { $0.labels["peer_id"] }) == followerIDs)
        #expect(rpc.allSatisfy { $0.summary.count > 0 && $0.summary.min >= 0 })

        // Transfer to a named follower, asked through the other follower (forwarded).
        let target = followers[0]
        let transfer = try cluster.agents[followers[1]].request("POST", "/v1/operator/raft/transfer-leader?id=\(cluster.nodeID(target))")
        #expect(transfer.status == 200, "\(transfer.text)")
        #expect(transfer.json as? [String: Bool] == ["Success": true])
        try pollUntil("leadership to move to op\(target + 1)") {
            try cluster.agents.allSatisfy { try $0.request("GET", "/v1/status/leader").json as? String == cluster.nodeAddress(target) }
        }
        // Without an ID the leader picks another voter.
        let again = try cluster.agents[target].request("POST", "/v1/operator/raft/transfer-leader")
        #expect(again.status == 200, "\(again.text)")
        try pollUntil("leadership to leave op\(target + 1)") {
            let leaders = try cluster.agents.map { try $0.request("GET", "/v1/status/leader").json as? String ?? "" }
            return Set(leaders).count == 1 && !leaders[0].isEmpty && leaders[0] != cluster.nodeAddress(target)
        }
    }

    @Test func removePeerByAddressRemovesAStoppedServer() throws {
        let cluster = try ThreeAgents(prefix: "rm")
        defer { cluster.stop() }
        let leader = try cluster.waitForLeader()
        let victim = (leader + 1) % 3
        let survivor = (leader + 2) % 3
        let victimAddress = cluster.nodeAddress(victim)
        cluster.agents[victim].stop()
        try cluster.waitUntilFailed(victim, seenBy: survivor)
        // Asked through the follower that stays: it forwards to the leader.
        let response = try cluster.agents[survivor].request("DELETE", "/v1/operator/raft/peer?address=\(victimAddress)")
        #expect(response.status == 200, "\(response.text)")
        #expect(response.body.isEmpty)
        try pollUntil("both servers to list 2 peers") {
            try [leader, survivor].allSatisfy { i in
                let body = try cluster.agents[i].request("GET", "/v1/operator/raft/configuration").json as? [String: Any]
                let servers = body?["Servers"] as? [[String: Any]] ?? []
                return servers.count == 2 && !servers.contains { $0["Address"] as? String == victimAddress }
            }
        }
    }

    @Test func writesBeyondThePendingProposalBoundAnswer429() throws {
        let agent = try TestAgent { $0.raftMaxPendingProposals = 1 }
        defer { agent.stop() }
        // Pipelined PUTs reach the loop together: the first is still waiting for its disk job
        // when the others are submitted, so they meet the bound of 1.
        var raw = ""
        for i in 0..<4 {
            raw += "PUT /v1/kv/busy\(i) HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\(i == 3 ? "Connection: close\r\n" : "")\r\nv"
        }
        let reply = String(decoding: try RawSocket.exchange(port: agent.port, Array(raw.utf8)), as: UTF8.self)
        let statuses = reply.components(separatedBy: "HTTP/1.1 ").dropFirst().map { String($0.prefix(3)) }
        #expect(statuses.count == 4)
        #expect(statuses.first == "200")
        #expect(statuses.contains("429"), "\(statuses)")
        #expect(reply.contains("too many requests in flight (1, limit 1); retry later"))
    }

    @Test func metricsServeConsulJSONAndPrometheusText() throws {
        let registry = MetricsRegistry()
        let agent = try TestAgent(metrics: registry)
        defer { agent.stop() }
        for i in 0..<5 { #expect(try agent.request("PUT", "/v1/kv/m\(i)", body: [1]).status == 200) }
        let response = try agent.request("GET", "/v1/agent/metrics")
        #expect(response.status == 200)
        let body = try #require(response.json as? [String: Any])
        #expect(Set(body.keys) == ["Timestamp", "Gauges", "Points", "Counters", "Samples"])
        #expect((body["Timestamp"] as? String)?.hasSuffix(" +0000 UTC") == true)
        let samples = try #require(body["Samples"] as? [[String: Any]])
        let commit = try #require(samples.first { $0["Name"] as? String == "consul.raft.commitTime" })
        #expect(Set(commit.keys) == ["Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"])
        #expect((commit["Count"] as? Int ?? 0) >= 5)
        for name in ["consul.raft.disk.fsyncTime", "consul.raft.disk.batchEntries", "consul.raft.fsm.apply"] {
            #expect((samples.first { $0["Name"] as? String == name }?["Count"] as? Int ?? 0) >= 1, "\(name)")
        }
        let counters = try #require(body["Counters"] as? [[String: Any]])
        #expect((counters.first { $0["Name"] as? String == "consul.raft.apply" }?["Sum"] as? Int ?? 0) >= 5)

        let prometheus = try agent.request("GET", "/v1/agent/metrics?format=prometheus")
        #expect(prometheus.status == 200)
        #expect(prometheus.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(prometheus.text.contains("# TYPE consul_raft_commitTime summary\n"))
        #expect(prometheus.text.contains("\nconsul_raft_commitTime_count "))
        #expect(prometheus.text.contains("# TYPE consul_raft_apply counter\n"))
        #expect(try agent.request("POST", "/v1/agent/metrics").status == 405)
    }
}

@Suite("Metrics registry")
struct MetricsRegistryTests {
    @Test func summariesKeepCountSumMinMaxMeanAndSampleStddev() {
        var summary = Summary()
        for value in [2.0, 4, 4, 4, 5, 5, 7, 9] { summary.add(value) }
        #expect(summary.count == 8)
        #expect(summary.sum == 40)
        #expect(summary.min == 2 && summary.max == 9)
        #expect(summary.mean == 5)
        #expect(abs(summary.stddev - (32.0 / 7).squareRoot()) < 1e-9)
        #expect(Summary().stddev == 0 && Summary().mean == 0)
    }

    @Test func handlesWithTheSameLabelAndDimensionsShareOneValue() {
        let registry = MetricsRegistry()
        registry.makeCounter(label: "c", dimensions: [("b", "2"), ("a", "1")]).increment(by: 2)
        registry.makeCounter(label: "c", dimensions: [("a", "1"), ("b", "2")]).increment(by: 3)
        registry.makeCounter(label: "c", dimensions: []).increment(by: 1)
        let counters = registry.snapshot().counters
        #expect(counters.count == 2)
        #expect(counters.first { $0.labels == ["a": "1", "b": "2"] }?.summary.sum == 5)
        registry.makeTimer(label: "t", dimensions: []).recordNanoseconds(2_500_000)
        #expect(registry.snapshot().samples.first?.summary.sum == 2.5)  // milliseconds, as Consul
        registry.makeRecorder(label: "g", dimensions: [], aggregate: false).record(Int64(3))
        registry.makeRecorder(label: "g", dimensions: [], aggregate: false).record(Int64(7))
        #expect(registry.snapshot().gauges.first?.value == 7)
    }

    @Test(arguments: [
        ("consul.raft.commitTime", "consul_raft_commitTime"),
        ("9lives-x", "_lives_x"),
        ("a:b_c1", "a:b_c1"),
    ])
    func prometheusNamesKeepOnlyAllowedCharacters(name: String, expected: String) {
        #expect(MetricsRegistry.prometheusName(name) == expected)
    }

    @Test func prometheusLabelValuesAreEscaped() {
        #expect(MetricsRegistry.prometheusLabels(["peer_id": "a\"b\\c\nd"]) == "{peer_id=\"a\\\"b\\\\c\\nd\"}")
        #expect(MetricsRegistry.prometheusLabels([:]) == "")
    }
}

@Suite("Raft tuning config keys")
struct RaftTuningConfigTests {
    @Test func raftKeysMapToTheCoreConfig() throws {
        var config = AgentConfig()
        config.dataDir = "/tmp/x"
        try config.apply(json: ["raft_max_inflight": 4, "raft_max_append_entries": 128, "raft_max_append_bytes": 2 << 20], source: "t.json")
        try config.validate()
        let replicator = ServerRaft.replicatorConfig(config)
        #expect(replicator.raft.maxInflightMessages == 4)
        #expect(replicator.raft.maxAppendEntries == 128)
        #expect(replicator.raft.maxAppendBytes == 2 << 20)
        #expect(replicator.transport.maxFrameBytes >= 2 * (2 << 20))
        #expect(throws: Never.self) { try replicator.validate() }
        // Unset keys keep the core's defaults (and the transport's 8 MiB frame limit suffices).
        let defaults = ServerRaft.replicatorConfig(AgentConfig())
        #expect(defaults.raft.maxInflightMessages == 16 && defaults.raft.maxAppendEntries == 64)
        #expect(defaults.transport.maxFrameBytes == 8 << 20)
    }

    @Test(arguments: [
        ("raft_max_inflight", 0, "raft_max_inflight must be between 1 and 4096, got 0"),
        ("raft_max_append_entries", 100_000, "raft_max_append_entries must be between 1 and 65536, got 100000"),
        ("raft_max_append_bytes", 1000, "raft_max_append_bytes must be between 525312 (kv_max_value_size + 1024) and 67108864, got 1000"),
    ])
    func badRaftLimitsAreRejectedNamingTheKey(key: String, value: Int, message: String) throws {
        var config = AgentConfig()
        config.dataDir = "/tmp/x"
        try config.apply(json: [key: value], source: "t.json")
        #expect(throws: AgentConfigError.invalid(message)) { try config.validate() }
    }

    @Test func nonIntegerRaftLimitIsRejected() {
        var config = AgentConfig()
        #expect(throws: AgentConfigError.invalid("t.json: raft_max_inflight must be an integer")) {
            try config.apply(json: ["raft_max_inflight": "many"], source: "t.json")
        }
    }
}
