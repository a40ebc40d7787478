// Five real agents (servers and clients) on 127.0.0.1 gossiping: joining through
// -retry-join, a kill -9 seen as failed, a graceful leave seen as left, force-leave, and
// gossip encryption keeping a wrong-key agent out. Every wait polls with a deadline.
import Foundation
import HTTP
import Testing

extension AgentProcess {
    /// An agent on kernel-chosen ports (HTTP, serf LAN/WAN), gossiping on 127.0.0.1.
    convenience init(node: String, server: Bool, extra: [String] = []) throws {
        let dir = temporaryDataDir(node)
        var arguments = ["agent", "-node", node, "-data-dir", dir, "-client", "127.0.0.1", "-bind", "127.0.0.1",
                         "-http-port", "0", "-dns-port", "-1", "-serf-lan-port", "0", "-serf-wan-port", "0",
                         "-log-level", "info"]
        if server { arguments += ["-server", "-server-port", "0"] }
        try self.init(dataDir: dir, arguments: arguments + extra)
    }

    var httpAddr: [String] { ["-http-addr", "127.0.0.1:\(httpPort)"] }

    /// The serf LAN port this agent bound, from /v1/agent/self.
    func serfLANPort() throws -> Int {
        var client = client()
        let response = try client.request(method: "GET", path: "/v1/agent/self")
        let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        let member = json?["Member"] as? [String: Any]
        return (member?["Port"] as? Int) ?? 0
    }

    /// `conclave members` as a table: node → status.
    func members(_ flags: [String] = []) throws -> [String: String] {
        let result = try runCLI(["members"] + httpAddr + flags)
        var out: [String: String] = [:]
        for line in result.stdout.split(separator: "\n").dropFirst() {
            let cells = line.split(separator: " ", omittingEmptySubsequences: true)
            if cells.count >= 3 { out[String(cells[0])] = String(cells[2]) }
        }
        return out
    }
}

func poll(_ what: String, seconds: Double, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return }
        usleep(100_000)
    }
    throw ProcessTestError(description: "timed out after \(seconds)s waiting for \(what)")
}

@Suite("Gossip cluster", .serialized)
struct GossipClusterTests {
    @Test func fiveAgentsJoinFailLeaveAndForceLeaveAsConsulShowsThem() throws {
        let started = Date()
        let seed = try AgentProcess(node: "s1", server: true, extra: ["-bootstrap"])
        let seedAddress = "127.0.0.1:\(try seed.serfLANPort())"
        let retry = ["-retry-join", seedAddress, "-retry-interval", "1s"]
        var agents = [seed]
        agents.append(try AgentProcess(node: "s2", server: true, extra: retry))
        agents.append(try AgentProcess(node: "s3", server: true, extra: retry))
        agents.append(try AgentProcess(node: "c1", server: false, extra: retry))
        agents.append(try AgentProcess(node: "c2", server: false, extra: retry))
        defer {
            let stopping = Date()
            for agent in agents { _ = agent.terminate(); try? FileManager.default.removeItem(atPath: agent.dataDir) }
            print("gossip cluster: stopping the agents took \(Date().timeIntervalSince(stopping))s")
        }
        let names = ["c1", "c2", "s1", "s2", "s3"]
        try poll("all 5 agents to list 5 alive members", seconds: 20) {
            try agents.allSatisfy { try $0.members() == Dictionary(uniqueKeysWithValues: names.map { ($0, "alive") }) }
        }
        #expect(agents[3].output.text.contains("Join cluster completed. Synced with 1 initial agents"))

        // Consul's table: columns, server/client type, partition and segment.
        let table = try runCLI(["members"] + seed.httpAddr).stdout
        let lines = table.split(separator: "\n")
        #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true) ==
                ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"])
        let s2Row = try #require(lines.first { $0.hasPrefix("s2 ") }).split(separator: " ", omittingEmptySubsequences: true)
        #expect(Array(s2Row[2...]).map(String.init) == ["alive", "server", "0.1.0", "2", "dc1", "default", "<all>"])
        #expect(lines.first { $0.hasPrefix("c1 ") }?.contains("client") == true)
        let onlyFailed = try runCLI(["members", "-status=failed"] + seed.httpAddr)
        #expect(onlyFailed.status == 2 && onlyFailed.stdout.isEmpty)
        #expect(try runCLI(["members", "-wan"] + seed.httpAddr).stdout.contains("s1.dc1"))
        #expect(try runCLI(["members", "-detailed"] + seed.httpAddr).stdout.contains("role=consul"))

        // kill -9: failed everywhere.
        agents[4].kill9()
        let survivors = Array(agents[0..<4])
        try poll("c2 to show failed on the 4 others", seconds: 30) {
            try survivors.allSatisfy { try $0.members()["c2"] == "failed" }
        }
        #expect(seed.output.text.contains("EventMemberFailed: c2 127.0.0.1"))

        // conclave leave: left everywhere, and the agent exits.
        let leave = try runCLI(["leave"] + agents[2].httpAddr)
        #expect(leave.status == 0)
        try poll("s3 to exit after leaving", seconds: 10) { !agents[2].process.isRunning }
        #expect(agents[2].process.terminationStatus == 0)
        let remaining = [agents[0], agents[1], agents[3]]
        try poll("s3 to show left on the 3 others", seconds: 15) {
            try remaining.allSatisfy { try $0.members()["s3"] == "left" }
        }

        // force-leave of the failed one: left everywhere.
        let forced = try runCLI(["force-leave"] + seed.httpAddr + ["c2"])
        #expect(forced.status == 0)
        try poll("c2 to show left on the 3 others", seconds: 15) {
            try remaining.allSatisfy { try $0.members()["c2"] == "left" }
        }
        #expect(try runCLI(["force-leave", "-prune"] + seed.httpAddr + ["c2"]).status == 0)
        #expect(try seed.members()["c2"] == nil)
        print("gossip cluster scenario took \(Date().timeIntervalSince(started))s")
    }

    @Test func anAgentWhoseJoinAddressDoesNotAnswerFailsToStart() throws {
        let dir = temporaryDataDir("join-fails")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let result = try runCLI(["agent", "-node", "j1", "-data-dir", dir, "-bind", "127.0.0.1", "-http-port", "0",
                                 "-dns-port", "-1", "-serf-lan-port", "0", "-join", "127.0.0.1:1"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("Failed to join 127.0.0.1:1"))
    }

    @Test func anAgentWithTheWrongEncryptionKeyCannotJoin() throws {
        let keygen = try runCLI(["keygen"])
        #expect(keygen.status == 0)
        let key = keygen.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(Data(base64Encoded: key)?.count == 32)
        let otherKey = try runCLI(["keygen"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        let seed = try AgentProcess(node: "enc1", server: true, extra: ["-bootstrap", "-encrypt", key])
        defer { _ = seed.terminate(); try? FileManager.default.removeItem(atPath: seed.dataDir) }
        let seedAddress = "127.0.0.1:\(try seed.serfLANPort())"
        let friend = try AgentProcess(node: "enc2", server: false, extra: ["-encrypt", key])
        defer { _ = friend.terminate(); try? FileManager.default.removeItem(atPath: friend.dataDir) }
        let stranger = try AgentProcess(node: "enc3", server: false, extra: ["-encrypt", otherKey])
        defer { _ = stranger.terminate(); try? FileManager.default.removeItem(atPath: stranger.dataDir) }

        let joined = try runCLI(["join"] + friend.httpAddr + [seedAddress])
        #expect(joined.stdout == "Successfully joined cluster by contacting 1 nodes.\n")
        let refused = try runCLI(["join"] + stranger.httpAddr + [seedAddress])
        #expect(refused.status == 1)
        try poll("enc1 and enc2 to see each other", seconds: 10) {
            try seed.members() == ["enc1": "alive", "enc2": "alive"] && friend.members() == ["enc1": "alive", "enc2": "alive"]
        }
        #expect(try stranger.members() == ["enc3": "alive"])
        #expect(try seed.members()["enc3"] == nil)
        #expect(seed.output.text.contains("failed to decrypt gossip message"))
        var client = seed.client()
        let selfInfo = try JSONSerialization.jsonObject(with: Data(try client.request(method: "GET", path: "/v1/agent/self").body)) as? [String: Any]
        let serf = (selfInfo?["Stats"] as? [String: Any])?["serf_lan"] as? [String: String]
        #expect(serf?["encrypted"] == "true")
        #expect(Int(serf?["decrypt_failures"] ?? "0")! >= 1)
        // The key is kept in the keyring file, as Consul does.
        let keyring = try String(contentsOfFile: seed.dataDir + "/serf/local.keyring", encoding: .utf8)
        #expect(keyring.contains(key.replacingOccurrences(of: "/", with: "\\/")) || keyring.contains(key))
    }
}
