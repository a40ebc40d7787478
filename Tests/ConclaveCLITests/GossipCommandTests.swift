// Gossip flags and config keys of `conclave agent`, and the `conclave members` table.
@testable import Agent
@testable import ConclaveCLI
import Foundation
import Logging
import Testing

@Suite("Gossip flags, config and members output")
struct GossipCommandTests {
    @Test func clientAgentsAreAcceptedNow() throws {
        let config = try AgentCommand.config(from: ["-data-dir", "/tmp/c", "-node", "c1"])
        #expect(!config.server)
    }

    @Test func joinFlagsAreRepeatableAndRetryIntervalIsAGoDuration() throws {
        let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
        let config = try AgentCommand.config(from: [
            "-data-dir", "/tmp/c", "-join", "10.0.0.1", "-retry-join", "10.0.0.2:8301", "-retry-join", "10.0.0.3",
            "-retry-interval", "5s", "-rejoin", "-encrypt", key, "-advertise", "10.0.0.9",
        ])
        #expect(config.startJoin == ["10.0.0.1"])
        #expect(config.retryJoin == ["10.0.0.2:8301", "10.0.0.3"])
        #expect(config.retryIntervalMs == 5_000)
        #expect(config.rejoinAfterLeave)
        #expect(config.encryptKey == key)
        #expect(config.advertiseAddr == "10.0.0.9")
        #expect(try AgentCommand.config(from: ["-data-dir", "/tmp/c"]).retryIntervalMs == 30_000)
        #expect(throws: (any Error).self) { try AgentCommand.config(from: ["-data-dir", "/tmp/c", "-retry-interval", "soon"]) }
    }

    @Test func gossipConfigFileKeys() throws {
        var config = AgentConfig()
        try config.apply(json: ["start_join": ["a"], "retry_join": ["b", "c"], "retry_interval": "1m30s",
                                "encrypt": "k", "rejoin_after_leave": true, "advertise_addr": "10.1.1.1"], source: "test")
        #expect(config.startJoin == ["a"] && config.retryJoin == ["b", "c"])
        #expect(config.retryIntervalMs == 90_000)
        #expect(config.encryptKey == "k" && config.rejoinAfterLeave && config.advertiseAddr == "10.1.1.1")
        #expect(throws: AgentConfigError.self) { try config.apply(json: ["retry_interval": "often"], source: "test") }
    }

    @Test func joinAddressesWithoutAPortGetThePoolsDefault() {
        #expect(AgentGossip.withPort("10.0.0.1", 8301) == "10.0.0.1:8301")
        #expect(AgentGossip.withPort("10.0.0.1:9000", 8301) == "10.0.0.1:9000")
        #expect(AgentGossip.withPort("::1", 8302) == "[::1]:8302")
    }

    @Test func retryIntervalsPrintLikeGoDurations() {
        #expect(GoDurationText.format(milliseconds: 30_000) == "30s")
        #expect(GoDurationText.format(milliseconds: 1_500) == "1.5s")
        #expect(GoDurationText.format(milliseconds: 90_000) == "1m30s")
        #expect(GoDurationText.format(milliseconds: 250) == "250ms")
    }

    @Test func membersTableHasConsulsColumns() {
        let members = [
            MembersCommand.Member(["Name": "s1", "Addr": "10.0.0.1", "Port": 8301, "Status": 1,
                                   "Tags": ["role": "consul", "dc": "dc1", "build": "0.1.0:dev", "vsn": "2"]]),
            MembersCommand.Member(["Name": "client-long-name", "Addr": "10.0.0.2", "Port": 8301, "Status": 4,
                                   "Tags": ["role": "node", "dc": "dc1", "build": "0.1.0:dev", "vsn": "2", "segment": ""]]),
        ]
        #expect(MembersCommand.standardTable(members, wan: false) == """
        Node              Address        Status  Type    Build  Protocol  DC   Partition  Segment
        s1                10.0.0.1:8301  alive   server  0.1.0  2         dc1  default    <all>
        client-long-name  10.0.0.2:8301  failed  client  0.1.0  2         dc1  default    <default>

        """)
    }
}

@Suite("Gossip keyring file")
struct KeyringFileTests {
    @Test func theEncryptKeyIsSavedAndTheKeyringFileWinsAfterwards() throws {
        let dir = NSTemporaryDirectory() + "/conclave-keyring-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let first = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
        var config = AgentConfig()
        config.encryptKey = first
        let made = try AgentGossip.loadKeyring(config: config, dataDir: dir, logger: .init(label: "t"))
        #expect(made?.base64Keys == [first])
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/serf/local.keyring"))) as? [String]
        #expect(saved == [first])
        config.encryptKey = "Y1ZnR2hYbm9jY3pFbHNDUjJpQVpUeE5oVHZqbWpQWkk="
        #expect(try AgentGossip.loadKeyring(config: config, dataDir: dir, logger: .init(label: "t"))?.base64Keys == [first])
        config.encryptKey = nil
        let other = NSTemporaryDirectory() + "/conclave-keyring-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: other) }
        #expect(try AgentGossip.loadKeyring(config: config, dataDir: other, logger: .init(label: "t")) == nil)
        config.encryptKey = "bm90LWEta2V5"
        #expect(throws: AgentError.self) { try AgentGossip.loadKeyring(config: config, dataDir: other, logger: .init(label: "t")) }
    }
}
