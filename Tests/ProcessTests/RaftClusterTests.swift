// Real server agents on 127.0.0.1 forming a Raft cluster the way Consul servers do:
// -bootstrap-expect with -retry-join, replication of KV writes, failover after kill -9 of the
// leader, and a plain -server joining by gossip. Every wait polls with a deadline.
import Foundation
import HTTP
import Testing

extension AgentProcess {
    func http(_ method: String, _ path: String, body: String = "") throws -> HTTPClientResponse {
        var client = HTTPClient(host: "127.0.0.1", port: httpPort, timeoutSeconds: 15)
        return try client.request(method: method, path: path, body: Array(body.utf8))
    }

    func json(_ path: String) throws -> Any? {
        let response = try http("GET", path)
        guard response.status == 200 else { return nil }
        return try JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed])
    }

    var leader: String { ((try? json("/v1/status/leader")) as? String) ?? "" }
    var peers: [String] { ((try? json("/v1/status/peers")) as? [String]) ?? [] }

    /// The Raft address this server advertises: its gossip host and `port` tag.
    func raftAddress() throws -> String {
        let member = (try json("/v1/agent/self") as? [String: Any])?["Member"] as? [String: Any]
        let tags = member?["Tags"] as? [String: String]
        return "127.0.0.1:\(tags?["port"] ?? "?")"
    }

    /// The value of `key` read with ?consistent, nil when absent or not answered.
    func consistentValue(_ key: String) throws -> String? {
        let response = try http("GET", "/v1/kv/\(key)?consistent")
        guard response.status == 200,
              let entries = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]],
              let encoded = entries.first?["Value"] as? String, let data = Data(base64Encoded: encoded) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    func stop() {
        _ = terminate()
        try? FileManager.default.removeItem(atPath: dataDir)
    }
}

/// Three servers with -bootstrap-expect 3, the others joining the first by -retry-join.
private func startThreeServers(_ prefix: String) throws -> [AgentProcess] {
    let first = try AgentProcess(node: "\(prefix)1", server: true, extra: ["-bootstrap-expect", "3"])
    let join = ["-bootstrap-expect", "3", "-retry-join", "127.0.0.1:\(try first.serfLANPort())", "-retry-interval", "1s"]
    return [first,
            try AgentProcess(node: "\(prefix)2", server: true, extra: join),
            try AgentProcess(node: "\(prefix)3", server: true, extra: join)]
}

/// Waits until every agent in `servers` reports `count` peers and one same, non-empty leader.
private func waitForOneCluster(_ servers: [AgentProcess], count: Int, seconds: Double = 30) throws -> String {
    var agreed = ""
    try poll("\(servers.count) servers to agree on \(count) peers and one leader", seconds: seconds) {
        let leaders = Set(servers.map(\.leader))
        guard leaders.count == 1, let leader = leaders.first, !leader.isEmpty else { return false }
        guard servers.allSatisfy({ Set($0.peers).count == count && $0.peers.contains(leader) }) else { return false }
        agreed = leader
        return true
    }
    return agreed
}

@Suite("Raft cluster of agents", .serialized)
struct RaftClusterTests {
    @Test func threeServersBootstrapReplicateAndSurviveAKilledLeader() throws {
        let started = Date()
        let servers = try startThreeServers("rc")
        defer { servers.forEach { $0.stop() } }
        let leader = try waitForOneCluster(servers, count: 3)
        #expect(servers[0].output.text.contains("Found expected number of peers, attempting bootstrap"))
        let formed = Date().timeIntervalSince(started)

        // Writes through every server (followers forward) are readable everywhere.
        var acknowledged: [String: String] = [:]
        for i in 0..<9 {
            let response = try servers[i % 3].http("PUT", "/v1/kv/raft/k\(i)", body: "v\(i)")
            if response.status == 200 && response.body == Array("true".utf8) { acknowledged["raft/k\(i)"] = "v\(i)" }
        }
        #expect(acknowledged.count == 9)
        for server in servers {
            for (key, value) in acknowledged { #expect(try server.consistentValue(key) == value) }
            #expect(try server.http("GET", "/v1/kv/raft/k0").headers["X-Consul-KnownLeader"] == "true")
        }

        // kill -9 the leader: the two others elect a new one and keep every acknowledged write.
        let leaderIndex = try #require(try servers.firstIndex { try $0.raftAddress() == leader })
        let killedAt = Date()
        servers[leaderIndex].kill9()
        let survivors = servers.enumerated().filter { $0.offset != leaderIndex }.map(\.element)
        try poll("a new leader after kill -9", seconds: 30) {
            let leaders = Set(survivors.map(\.leader))
            return leaders.count == 1 && leaders.first != leader && leaders.first?.isEmpty == false
        }
        let failover = Date().timeIntervalSince(killedAt)
        for server in survivors {
            for (key, value) in acknowledged { #expect(try server.consistentValue(key) == value) }
        }
        let after = try survivors[0].http("PUT", "/v1/kv/raft/after", body: "new-leader")
        #expect(after.status == 200)
        #expect(try survivors[1].consistentValue("raft/after") == "new-leader")
        print("raft cluster: formed in \(formed)s, failover in \(failover)s, total \(Date().timeIntervalSince(started))s")
    }

    @Test func fiveServersKeepEveryAcknowledgedWriteWhenTheLeaderIsKilledUnderLoad() throws {
        let first = try AgentProcess(node: "rf1", server: true, extra: ["-bootstrap-expect", "5"])
        let join = ["-bootstrap-expect", "5", "-retry-join", "127.0.0.1:\(try first.serfLANPort())", "-retry-interval", "1s"]
        var servers = [first]
        for i in 2...5 { servers.append(try AgentProcess(node: "rf\(i)", server: true, extra: join)) }
        defer { servers.forEach { $0.stop() } }
        let leader = try waitForOneCluster(servers, count: 5, seconds: 60)
        let leaderIndex = try #require(try servers.firstIndex { try $0.raftAddress() == leader })

        // Four writers, one per follower, each PUTting its own keys through its server until
        // told to stop; an acknowledged write is one answered 200 "true".
        let lock = NSLock()
        let acknowledged = Unsafe<[String: String]>([:])
        let stop = Unsafe(false)
        let group = DispatchGroup()
        let ports = servers.enumerated().filter { $0.offset != leaderIndex }.map(\.element.httpPort)
        for (writer, port) in ports.enumerated() {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 15)
                var n = 0
                while !(lock.withLock { stop.value }) && n < 5_000 {
                    let key = "load/w\(writer)/k\(n)"
                    if let response = try? client.request(method: "PUT", path: "/v1/kv/\(key)", body: Array("v\(n)".utf8)),
                       response.status == 200, response.body == Array("true".utf8) {
                        lock.withLock { acknowledged.value[key] = "v\(n)" }
                    } else {
                        client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 15)
                    }
                    n += 1
                }
            }
        }
        usleep(700_000)
        let beforeKill = lock.withLock { acknowledged.value.count }
        #expect(servers[leaderIndex].output.text.contains("raft: pipelining replication"))
        servers[leaderIndex].kill9()
        let survivors = servers.enumerated().filter { $0.offset != leaderIndex }.map(\.element)
        try poll("a new leader among the four survivors", seconds: 30) {
            let leaders = Set(survivors.map(\.leader))
            return leaders.count == 1 && leaders.first != leader && leaders.first?.isEmpty == false
        }
        usleep(700_000)  // writes continue through the new leader
        lock.withLock { stop.value = true }
        #expect(group.wait(timeout: .now() + 60) == .success)
        let written = lock.withLock { acknowledged.value }
        #expect(beforeKill > 0)
        #expect(written.count > beforeKill, "writes went on after the failover")
        // Every acknowledged write, on every survivor (sampled keys ?consistent, all keys via one recurse).
        for server in survivors {
            let response = try server.http("GET", "/v1/kv/load/?recurse&consistent")
            #expect(response.status == 200)
            let entries = (try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]]) ?? []
            var stored: [String: String] = [:]
            for entry in entries {
                if let key = entry["Key"] as? String, let value = (entry["Value"] as? String).flatMap({ Data(base64Encoded: $0) }) {
                    stored[key] = String(decoding: value, as: UTF8.self)
                }
            }
            let missing = written.filter { stored[$0.key] != $0.value }
            #expect(missing.isEmpty, "\(missing.count) acknowledged writes missing, e.g. \(missing.keys.sorted().prefix(3))")
        }
        print("5 servers: \(written.count) acknowledged writes, \(beforeKill) before the leader was killed")
    }

    @Test func aRestartedServerRecoversFromItsDataDirAndDoesNotBootstrapAgain() throws {
        let servers = try startThreeServers("rr")
        defer { servers.forEach { $0.stop() } }
        _ = try waitForOneCluster(servers, count: 3)
        #expect(try servers[0].http("PUT", "/v1/kv/before", body: "restart").status == 200)
        // Restart the third on the same ports (the others know its address) from its data dir.
        let old = servers[2]
        let raftPort = try old.raftAddress().split(separator: ":").last.map(String.init) ?? "0"
        let serfPort = String(try old.serfLANPort())
        _ = old.terminate()
        let restarted = try AgentProcess(dataDir: old.dataDir, arguments: [
            "agent", "-server", "-bootstrap-expect", "3", "-node", "rr3", "-data-dir", old.dataDir,
            "-client", "127.0.0.1", "-bind", "127.0.0.1", "-http-port", "0", "-dns-port", "-1",
            "-serf-lan-port", serfPort, "-serf-wan-port", "0", "-server-port", raftPort, "-log-level", "info",
            "-retry-join", "127.0.0.1:\(try servers[0].serfLANPort())", "-retry-interval", "1s"])
        defer { restarted.stop() }
        _ = try waitForOneCluster([servers[0], servers[1], restarted], count: 3)
        try poll("the earlier write on the restarted server", seconds: 10) { try restarted.consistentValue("before") == "restart" }
        #expect(!restarted.output.text.contains("Found expected number of peers"))
    }

    @Test func aPlainServerJoiningByGossipBecomesAPeer() throws {
        let started = Date()
        var servers = try startThreeServers("rj")
        defer { servers.forEach { $0.stop() } }
        _ = try waitForOneCluster(servers, count: 3)
        let fourth = try AgentProcess(node: "rj4", server: true,
                                      extra: ["-retry-join", "127.0.0.1:\(try servers[0].serfLANPort())", "-retry-interval", "1s"])
        servers.append(fourth)
        let leader = try waitForOneCluster(servers, count: 4)
        #expect(fourth.peers.contains(try fourth.raftAddress()))
        #expect(!leader.isEmpty)
        #expect(try servers[1].http("PUT", "/v1/kv/joined", body: "yes").status == 200)
        try poll("the write on the new server", seconds: 10) { try fourth.consistentValue("joined") == "yes" }

        // A graceful leave removes the server from the configuration.
        let fourthAddress = try fourth.raftAddress()
        #expect(try fourth.http("PUT", "/v1/agent/leave").status == 200)
        _ = try waitForOneCluster(Array(servers.prefix(3)), count: 3)
        #expect(!servers[0].peers.contains(fourthAddress))
        print("raft cluster: 4th server a peer after \(Date().timeIntervalSince(started))s")
    }

    @Test func aLateServerWithBootstrapExpectJoinsTheClusterInsteadOfBootstrappingAnother() throws {
        var servers = try startThreeServers("rb")
        defer { servers.forEach { $0.stop() } }
        _ = try waitForOneCluster(servers, count: 3)
        // Same flags as the first three: it sees 4 >= 3 live servers, asks them for their peers
        // before bootstrapping, and finds a cluster.
        let fourth = try AgentProcess(node: "rb4", server: true, extra: [
            "-bootstrap-expect", "3", "-retry-join", "127.0.0.1:\(try servers[0].serfLANPort())", "-retry-interval", "1s"])
        servers.append(fourth)
        try poll("the fourth server to find the existing cluster", seconds: 30) {
            fourth.output.text.contains("Existing Raft peers reported by server, disabling bootstrap mode")
        }
        let leader = try waitForOneCluster(servers, count: 4, seconds: 60)
        #expect(fourth.leader == leader)
        #expect(fourth.peers.contains(try fourth.raftAddress()))
        #expect(try servers[0].http("PUT", "/v1/kv/late", body: "joined").status == 200)
        try poll("the write on the late server", seconds: 10) { try fourth.consistentValue("late") == "joined" }
    }
}
