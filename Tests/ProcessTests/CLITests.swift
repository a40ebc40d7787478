// `conclave kv|version|leave|agent` as a user runs them: output lines and exit codes.
import Foundation
import Testing

@Suite("CLI", .serialized)
struct CLITests {
    @Test func versionPrintsAPlainVersion() throws {
        let result = try runCLI(["version"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("Conclave v0."))
    }

    @Test func unknownCommandAndBadFlagsExitNonZeroWithAMessage() throws {
        let unknown = try runCLI(["frobnicate"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("Unknown command"))
        let badFlag = try runCLI(["agent", "-no-such-flag"])
        #expect(badFlag.status == 1)
        #expect(badFlag.stderr.contains("flag provided but not defined: -no-such-flag"))
        let noDataDir = try runCLI(["agent", "-server"])
        #expect(noDataDir.status == 1)
        #expect(noDataDir.stderr.contains("data_dir"))
        let badPort = try runCLI(["agent", "-dev", "-http-port", "abc"])
        #expect(badPort.status == 1)
    }

    @Test func kvPutGetDeleteRoundTrip() throws {
        let dir = temporaryDataDir("cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        defer { _ = agent.terminate() }
        let addr = ["-http-addr", "127.0.0.1:\(agent.httpPort)"]

        let put = try runCLI(["kv", "put"] + addr + ["-flags=42", "app/name", "conclave"])
        #expect(put.status == 0)
        #expect(put.stdout == "Success! Data written to: app/name\n")
        let get = try runCLI(["kv", "get"] + addr + ["app/name"])
        #expect(get.stdout == "conclave\n")

        // CONSUL_HTTP_ADDR works as in Consul.
        let env = ["CONSUL_HTTP_ADDR": "http://127.0.0.1:\(agent.httpPort)"]
        let detailed = try runCLI(["kv", "get", "-detailed", "app/name"], environment: env)
        #expect(detailed.stdout.contains("Flags            42"))
        #expect(detailed.stdout.contains("Value            conclave"))

        _ = try runCLI(["kv", "put"] + addr + ["app/port", "8080"])
        let stdinPut = try runCLI(["kv", "put"] + addr + ["app/stdin", "-"], stdin: "from-stdin")
        #expect(stdinPut.status == 0)
        let recurse = try runCLI(["kv", "get"] + addr + ["-recurse", "app/"])
        #expect(recurse.stdout == "app/name:conclave\napp/port:8080\napp/stdin:from-stdin\n")
        let keys = try runCLI(["kv", "get"] + addr + ["-keys", ""])
        #expect(keys.stdout == "app/\n")

        let casFail = try runCLI(["kv", "put"] + addr + ["-cas", "-modify-index=99999", "app/name", "x"])
        #expect(casFail.status == 1)
        #expect(casFail.stderr.contains("CAS failed"))
        let casNew = try runCLI(["kv", "put"] + addr + ["-cas", "-modify-index=0", "app/fresh", "x"])
        #expect(casNew.status == 0)

        let missing = try runCLI(["kv", "get"] + addr + ["nope"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("Error! No key exists at: nope"))

        let delete = try runCLI(["kv", "delete"] + addr + ["app/port"])
        #expect(delete.stdout == "Success! Deleted key: app/port\n")
        let deleteTree = try runCLI(["kv", "delete"] + addr + ["-recurse", "app/"])
        #expect(deleteTree.stdout == "Success! Deleted keys with prefix: app/\n")
        #expect(try runCLI(["kv", "get"] + addr + ["-recurse", "app/"]).stdout == "")
    }

    @Test func kvAgainstNoAgentFailsClearly() throws {
        let result = try runCLI(["kv", "get", "-http-addr", "127.0.0.1:1", "x"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("Error!"))
    }

    @Test func leaveStopsTheAgentProcess() throws {
        let dir = temporaryDataDir("leave")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        let leave = try runCLI(["leave", "-http-addr", "127.0.0.1:\(agent.httpPort)"])
        #expect(leave.status == 0)
        agent.process.waitUntilExit()
        #expect(agent.process.terminationStatus == 0)
    }

    @Test func devAgentUsesATemporaryDataDirAndRemovesItOnExit() throws {
        let agent = try AgentProcess(dataDir: "", arguments: ["agent", "-dev", "-http-port", "0", "-dns-port", "-1",
                                                                          "-serf-lan-port", "0", "-serf-wan-port", "0"])
        let banner = agent.output.text
        let line = try #require(banner.split(separator: "\n").first { $0.contains("Data Dir:") })
        let path = String(line.split(separator: " ").dropFirst(2).first ?? "")
        #expect(path.contains("conclave-dev-"))
        #expect(FileManager.default.fileExists(atPath: path))
        var client = agent.client()
        #expect(try client.request(method: "PUT", path: "/v1/kv/dev", body: [1]).status == 200)
        #expect(agent.terminate() == 0)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
