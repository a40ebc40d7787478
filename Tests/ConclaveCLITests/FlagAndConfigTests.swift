// Go-style flags as Consul parses them, and how flags and config files build AgentConfig.
@testable import Agent
@testable import ConclaveCLI
import Foundation
import Testing

@Suite("Flags and agent configuration")
struct FlagAndConfigTests {
    @Test(arguments: [
        (["-data-dir", "/d"], "/d"),
        (["-data-dir=/d"], "/d"),
        (["--data-dir", "/d"], "/d"),
        (["--data-dir=/d"], "/d"),
    ])
    func stringFlagSpellings(arguments: [String], expected: String) throws {
        let flags = FlagSet(command: "t")
        flags.string("data-dir", "")
        #expect(try flags.parse(arguments).isEmpty)
        #expect(flags.string("data-dir") == expected)
    }

    @Test func boolFlagsAndPositionalArguments() throws {
        let flags = FlagSet(command: "t")
        flags.bool("recurse", "")
        flags.bool("cas", "")
        let rest = try flags.parse(["-recurse", "-cas=false", "key", "-not-a-flag"])
        #expect(flags.flag("recurse"))
        #expect(!flags.flag("cas"))
        #expect(flags.isSet("cas"))
        #expect(rest == ["key", "-not-a-flag"])
        #expect(try flags.parse(["--", "-x"]) == ["-x"])
    }

    @Test func flagErrorsReadLikeGo() {
        let flags = FlagSet(command: "t")
        flags.string("node", "")
        flags.int("http-port", "")
        flags.bool("dev", "")
        #expect(throws: FlagError.self) { _ = try flags.parse(["-nope"]) }
        #expect(throws: FlagError.self) { _ = try flags.parse(["-node"]) }
        #expect(throws: FlagError.self) { _ = try flags.parse(["-http-port", "x"]) }
        #expect(throws: FlagError.self) { _ = try flags.parse(["-dev=maybe"]) }
        #expect(throws: FlagError.self) { _ = try flags.parse(["---node=x"]) }
        do { _ = try flags.parse(["-nope"]) } catch { #expect(error.description == "flag provided but not defined: -nope") }
    }

    @Test func devDefaults() throws {
        let config = try AgentCommand.config(from: ["-dev"])
        #expect(config.dev && config.server)
        #expect(config.clientAddr == "127.0.0.1")
        #expect(config.ports.http == 8500)
        #expect(config.dataDir == nil)
    }

    @Test func agentFlagsOverrideConfigFile() throws {
        let path = NSTemporaryDirectory() + "/conclave-config-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try """
        {"datacenter": "west", "node_name": "from-file", "data_dir": "/tmp/x", "server": true,
         "ports": {"http": 18500, "dns": -1}, "log_level": "warn"}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let config = try AgentCommand.config(from: ["-config-file", path, "-node", "from-flag", "-serf-lan-port=9301"])
        #expect(config.datacenter == "west")
        #expect(config.nodeName == "from-flag")
        #expect(config.dataDir == "/tmp/x")
        #expect(config.ports.http == 18500)
        #expect(config.ports.dns == -1)
        #expect(config.ports.serfLAN == 9301)
        #expect(config.logLevel == "warn")
    }

    @Test func badConfigFilesAreRejectedWithTheReason() throws {
        let path = NSTemporaryDirectory() + "/conclave-config-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        for (text, fragment) in [("{not json", "not valid JSON"), ("{\"ports\": {\"http\": \"x\"}}", "ports.http"),
                                 ("{\"no_such_key\": 1}", "no_such_key"), ("[1]", "top level")] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            var config = AgentConfig()
            do {
                try config.apply(jsonFile: path)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.description.contains(fragment), "\(error)")
            }
        }
        var config = AgentConfig()
        #expect(throws: AgentConfigError.self) { try config.apply(jsonFile: "/nonexistent/conclave.json") }
    }

    @Test func validationNamesTheProblem() {
        var config = AgentConfig()
        config.server = true
        #expect(throws: AgentConfigError.self) { try config.validate() }   // no data dir
        config.dataDir = "/tmp/x"
        config.ports.http = 70000
        #expect(throws: AgentConfigError.self) { try config.validate() }
        config.ports.http = -1
        config.logLevel = "loud"
        #expect(throws: AgentConfigError.self) { try config.validate() }
        config.logLevel = "info"
        #expect(throws: Never.self) { try config.validate() }
    }

    @Test(arguments: [
        ("10s", UInt64(10_000_000_000)), ("5m", 300_000_000_000), ("1m30s", 90_000_000_000),
        ("100ms", 100_000_000), ("1.5s", 1_500_000_000), ("0", 0), ("2h", 7_200_000_000_000), ("250us", 250_000),
    ])
    func goDurations(text: String, nanos: UInt64) {
        #expect(GoDuration.nanoseconds(text) == nanos)
    }

    @Test(arguments: ["", "5", "s", "10x", "-1s", "1..5s", "ms"])
    func invalidGoDurations(text: String) {
        #expect(GoDuration.nanoseconds(text) == nil)
    }

    @Test func urlEscapingKeepsSlashesInKeys() {
        #expect(URLText.kvPath("a b/c?d", query: ["recurse"]) == "/v1/kv/a%20b/c%3Fd?recurse")
    }
}

@Suite("Reconnect timeout")
struct ReconnectTimeoutConfigTests {
    @Test func reconnectTimeoutsComeFromTheConfigFileWithConsulsMinimum() throws {
        let path = NSTemporaryDirectory() + "/conclave-reconnect-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"{"data_dir": "/tmp/x", "server": true, "reconnect_timeout": "12h", "reconnect_timeout_wan": "9h"}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let config = try AgentCommand.config(from: ["-config-file", path])
        #expect(config.reconnectTimeoutMs == 12 * 3_600_000)
        #expect(config.reconnectTimeoutWANMs == 9 * 3_600_000)
        try #"{"data_dir": "/tmp/x", "server": true, "reconnect_timeout": "1h"}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: AgentConfigError.self) { _ = try AgentCommand.config(from: ["-config-file", path]) }
        #expect(AgentConfig().reconnectTimeoutMs == 72 * 3_600_000)
    }
}
