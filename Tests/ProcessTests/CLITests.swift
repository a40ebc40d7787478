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
        let agent = try AgentProcess(dataDir: "", arguments: ["agent", "-dev", "-server-port", "0", "-http-port", "0", "-dns-port", "-1",
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

@Suite("CLI: kv export and import", .serialized)
struct KVExportImportTests {
    @Test func exportThenImportCopiesATreeWithFlagsAndBinaryValues() throws {
        let sourceDir = temporaryDataDir("export"), targetDir = temporaryDataDir("import")
        defer { try? FileManager.default.removeItem(atPath: sourceDir); try? FileManager.default.removeItem(atPath: targetDir) }
        let source = try AgentProcess(dataDir: sourceDir)
        defer { _ = source.terminate() }
        let target = try AgentProcess(dataDir: targetDir)
        defer { _ = target.terminate() }
        var client = source.client()
        _ = try client.request(method: "PUT", path: "/v1/kv/app/config?flags=7", body: Array("{\"a\": \"b\\n\"}".utf8))
        _ = try client.request(method: "PUT", path: "/v1/kv/app/binary", body: [0, 255, 10, 13])
        _ = try client.request(method: "PUT", path: "/v1/kv/app/empty")
        _ = try client.request(method: "PUT", path: "/v1/kv/other", body: [1])

        let exported = try runCLI(["kv", "export", "-http-addr", "127.0.0.1:\(source.httpPort)", "app/"])
        #expect(exported.status == 0)
        #expect(exported.stdout.hasPrefix("[\n\t{\n\t\t\"key\": \"app/binary\","))
        let parsed = try JSONSerialization.jsonObject(with: Data(exported.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.count == 3)

        let imported = try runCLI(["kv", "import", "-http-addr", "127.0.0.1:\(target.httpPort)", "-prefix", "copy/", "-"],
                                  stdin: exported.stdout)
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout == "Imported: copy/app/binary\nImported: copy/app/config\nImported: copy/app/empty\n")
        var targetClient = target.client()
        #expect(try targetClient.request(method: "GET", path: "/v1/kv/copy/app/binary?raw").body == [0, 255, 10, 13])
        let config = try targetClient.request(method: "GET", path: "/v1/kv/copy/app/config")
        let entry = (try JSONSerialization.jsonObject(with: Data(config.body)) as? [[String: Any]])?.first
        #expect((entry?["Flags"] as? NSNumber)?.intValue == 7)
        #expect(try targetClient.request(method: "GET", path: "/v1/kv/copy/app/empty").status == 200)
        #expect(try targetClient.request(method: "GET", path: "/v1/kv/copy/other").status == 404)

        let bad = try runCLI(["kv", "import", "-http-addr", "127.0.0.1:\(target.httpPort)", "{not json"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("Cannot unmarshal"))
    }
}
