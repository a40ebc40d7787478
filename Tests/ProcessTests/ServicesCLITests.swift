// `conclave services register|deregister` as a user runs them, and a real agent process that
// keeps API-registered services across a restart and loads -config-dir definitions.
import Foundation
import HTTP
import Testing

@Suite("Services CLI and local state in a process", .serialized)
struct ServicesCLITests {
    private func agentArguments(_ dir: String, extra: [String] = []) -> [String] {
        ["agent", "-server", "-bootstrap", "-server-port", "0", "-node", "proc-node", "-data-dir", dir,
         "-client", "127.0.0.1", "-bind", "127.0.0.1", "-http-port", "0", "-dns-port", "-1",
         "-serf-lan-port", "0", "-serf-wan-port", "0", "-log-level", "info"] + extra
    }

    private func services(_ agent: AgentProcess) throws -> [String: [String: Any]] {
        var client = agent.client()
        let response = try client.request(method: "GET", path: "/v1/agent/services")
        return (try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: [String: Any]]) ?? [:]
    }

    @Test func registerAndDeregisterWithFlagsAndFiles() throws {
        let dir = temporaryDataDir("services-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir, arguments: agentArguments(dir))
        defer { _ = agent.terminate() }
        let addr = ["-http-addr", "127.0.0.1:\(agent.httpPort)"]

        let register = try runCLI(["services", "register"] + addr + ["-name", "web", "-id", "web-1", "-tag", "a", "-tag", "b",
                                                                     "-address", "10.1.1.1", "-port", "8080", "-meta", "team=edge"])
        #expect(register.status == 0, "\(register.stderr)")
        #expect(register.stdout == "Registered service: web\n")
        let web = try #require(try services(agent)["web-1"])
        #expect(web["Tags"] as? [String] == ["a", "b"])
        #expect(web["Port"] as? Int == 8080)
        #expect(web["Address"] as? String == "10.1.1.1")
        #expect(web["Meta"] as? [String: String] == ["team": "edge"])

        let file = dir + "-svc.json"
        try #"{"service":{"name":"cache","port":6379,"check":{"ttl":"1h"}}}"#.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fromFile = try runCLI(["services", "register"] + addr + [file])
        #expect(fromFile.status == 0, "\(fromFile.stderr)")
        #expect(fromFile.stdout == "Registered service: cache\n")
        #expect(try services(agent)["cache"]?["Port"] as? Int == 6379)

        let deregister = try runCLI(["services", "deregister"] + addr + ["-id", "web-1"])
        #expect(deregister.status == 0)
        #expect(deregister.stdout == "Deregistered service: web-1\n")
        let byFile = try runCLI(["services", "deregister"] + addr + [file])
        #expect(byFile.stdout == "Deregistered service: cache\n")
        #expect(try services(agent).isEmpty)

        let unknown = try runCLI(["services", "deregister"] + addr + ["-id", "ghost"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("Unexpected response code: 404"))
        let nothing = try runCLI(["services", "register"] + addr)
        #expect(nothing.status == 1)
        #expect(nothing.stderr.contains("Service registration requires at least one argument or flags."))
        let noID = try runCLI(["services", "deregister"] + addr)
        #expect(noID.status == 1)
        #expect(noID.stderr.contains("requires at least one argument or -id"))
        let badFile = try runCLI(["services", "register"] + addr + [dir + "-missing.json"])
        #expect(badFile.status == 1)
        let rejected = try runCLI(["services", "register"] + addr + ["-name", "x", "-port", "99999"])
        #expect(rejected.status == 1)
        #expect(rejected.stderr.contains("Error registering service \"x\": Unexpected response code: 400"))
    }

    @Test func servicesSurviveAnAgentRestartAndConfigDirDefinitionsLoad() throws {
        let dir = temporaryDataDir("services-restart")
        let confDir = dir + "-conf"
        defer { try? FileManager.default.removeItem(atPath: dir); try? FileManager.default.removeItem(atPath: confDir) }
        try FileManager.default.createDirectory(atPath: confDir, withIntermediateDirectories: true)
        try #"{"service":{"name":"from-config","port":1,"check":{"args":["true"],"interval":"200ms"}}}"#
            .write(toFile: confDir + "/a.json", atomically: true, encoding: .utf8)
        let extra = ["-config-dir", confDir, "-enable-script-checks"]

        var agent = try AgentProcess(dataDir: dir, arguments: agentArguments(dir, extra: extra))
        var client = agent.client()
        #expect(try client.request(method: "PUT", path: "/v1/agent/service/register",
                                   body: Array(#"{"Name":"api","Port":9000}"#.utf8)).status == 200)
        #expect(try services(agent).keys.sorted() == ["api", "from-config"])
        #expect(agent.terminate() == 0)

        agent = try AgentProcess(dataDir: dir, arguments: agentArguments(dir, extra: extra))
        defer { _ = agent.terminate() }
        #expect(try services(agent).keys.sorted() == ["api", "from-config"])
        client = agent.client()
        // The script check from the config runs (exit 0 → passing).
        let deadline = Date().addingTimeInterval(30)
        var status = ""
        while Date() < deadline {
            let checks = try JSONSerialization.jsonObject(with: Data(try client.request(method: "GET", path: "/v1/agent/checks").body)) as? [String: [String: Any]]
            status = checks?["service:from-config"]?["Status"] as? String ?? ""
            if status == "passing" { break }
            usleep(50_000)
        }
        #expect(status == "passing")
    }
}
