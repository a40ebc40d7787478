// /v1/agent/service*, /v1/agent/check*, maintenance: shapes, status codes and Consul's error
// texts, against a real in-process agent; plus persistence across a restart and config loading.
import Foundation
import HTTP
import Testing

/// Polls `condition` until it holds or `seconds` pass (bounded; stops as soon as it holds).
func eventually(_ seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

extension TestAgent {
    func put(_ path: String, _ json: String) throws -> HTTPClientResponse {
        try request("PUT", path, body: Array(json.utf8))
    }
    func checks() throws -> [String: [String: Any]] {
        try request("GET", "/v1/agent/checks").json as? [String: [String: Any]] ?? [:]
    }
    func check(_ id: String) throws -> [String: Any]? { try checks()[id] }
    func services() throws -> [String: [String: Any]] {
        try request("GET", "/v1/agent/services").json as? [String: [String: Any]] ?? [:]
    }
}

@Suite("Agent local services and checks API")
struct LocalStateAPITests {
    @Test func registeredServiceHasConsulsAgentServiceShape() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let body = """
            {"ID":"web-1","Name":"web","Tags":["v1","primary"],"Address":"10.0.0.5","Port":8080,
             "Meta":{"team":"edge"},"EnableTagOverride":true,"Weights":{"Passing":3,"Warning":1}}
            """
        let response = try agent.put("/v1/agent/service/register", body)
        #expect(response.status == 200)
        let services = try agent.services()
        let web = try #require(services["web-1"])
        #expect(web["ID"] as? String == "web-1")
        #expect(web["Service"] as? String == "web")
        #expect(web["Tags"] as? [String] == ["v1", "primary"])
        #expect(web["Address"] as? String == "10.0.0.5")
        #expect(web["Port"] as? Int == 8080)
        #expect(web["Meta"] as? [String: String] == ["team": "edge"])
        #expect(web["EnableTagOverride"] as? Bool == true)
        #expect(web["Weights"] as? [String: Int] == ["Passing": 3, "Warning": 1])
        #expect(web["Datacenter"] as? String == "dc1")

        let one = try agent.request("GET", "/v1/agent/service/web-1")
        #expect(one.status == 200)
        #expect((one.json as? [String: Any])?["Service"] as? String == "web")
        #expect(((one.json as? [String: Any])?["ContentHash"] as? String)?.count == 16)
    }

    @Test func serviceIDDefaultsToNameAndDeregisterRemovesIt() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/service/register", #"{"Name":"db","Port":5432}"#).status == 200)
        #expect(try agent.services()["db"] != nil)
        #expect(try agent.request("PUT", "/v1/agent/service/deregister/db").status == 200)
        #expect(try agent.services().isEmpty)
        let again = try agent.request("PUT", "/v1/agent/service/deregister/db")
        #expect(again.status == 404)
        #expect(again.text == #"Unknown service ID "db". Ensure that the service ID is passed, not the service name."#)
    }

    @Test func unknownServiceIs404() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let response = try agent.request("GET", "/v1/agent/service/nope")
        #expect(response.status == 404)
        #expect(response.text == "unknown service ID: nope")
    }

    @Test(arguments: [
        ("not json", "Request decode failed: invalid JSON"),
        ("", "Request decode failed: EOF"),
        ("[1]", "Request decode failed: body must be a JSON object"),
        (#"{"Port":1}"#, "Missing service name"),
        (#"{"Name":"a","Port":"x"}"#, "Request decode failed: Port must be an integer"),
        (#"{"Name":"a","Check":{"Interval":"10s"}}"#, "Invalid check: TTL must be > 0 for TTL checks"),
        (#"{"Name":"a","Check":{"HTTP":"http://x/"}}"#, "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"),
        (#"{"Name":"a","Check":{"TTL":"10s","Interval":"5s"}}"#, "Invalid check: Interval and TTL cannot both be specified"),
        (#"{"Name":"a","Check":{"TCP":"x:1","Interval":"soon"}}"#, #"Request decode failed: time: invalid duration "soon""#),
        (#"{"Name":"a","Weights":{"Passing":0}}"#, "Passing must be greater than 0"),
        (#"{"Name":"a","Check":{"Args":["true"],"Interval":"1s"}}"#, "Scripts are disabled on this agent"),
    ])
    func badServiceRegistrationsAre400(body: String, message: String) throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let response = try agent.put("/v1/agent/service/register", body)
        #expect(response.status == 400)
        #expect(response.text.hasPrefix(message), "\(response.text)")
        #expect(try agent.services().isEmpty)
    }

    @Test func methodsAreChecked() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("GET", "/v1/agent/service/register").status == 405)
        #expect(try agent.request("PUT", "/v1/agent/services").status == 405)
        #expect(try agent.request("GET", "/v1/agent/check/pass/x").status == 405)
    }

    @Test func serviceChecksGetConsulsDefaultIDsAndNames() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let one = #"{"Name":"web","Check":{"TTL":"30s"}}"#
        #expect(try agent.put("/v1/agent/service/register", one).status == 200)
        let check = try #require(try agent.check("service:web"))
        #expect(check["Name"] as? String == "Service 'web' check")
        #expect(check["ServiceID"] as? String == "web")
        #expect(check["ServiceName"] as? String == "web")
        #expect(check["Status"] as? String == "critical")
        #expect(check["Type"] as? String == "ttl")
        #expect(check["Node"] as? String == "test-node")

        let two = #"{"Name":"api","Checks":[{"TTL":"30s"},{"TTL":"30s","CheckID":"own","Status":"passing"}]}"#
        #expect(try agent.put("/v1/agent/service/register", two).status == 200)
        let checks = try agent.checks()
        #expect(checks["service:api:1"] != nil)
        #expect(checks["own"]?["Status"] as? String == "passing")
        // Deregistering the service removes its checks.
        #expect(try agent.request("PUT", "/v1/agent/service/deregister/api").status == 200)
        #expect(try agent.checks().keys.sorted() == ["service:web"])
    }

    @Test func replaceExistingChecksDropsChecksNotInTheNewDefinition() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let two = #"{"Name":"api","Checks":[{"TTL":"30s","CheckID":"a"},{"TTL":"30s","CheckID":"b"}]}"#
        #expect(try agent.put("/v1/agent/service/register", two).status == 200)
        let one = #"{"Name":"api","Checks":[{"TTL":"30s","CheckID":"a"}]}"#
        #expect(try agent.put("/v1/agent/service/register", one).status == 200)
        #expect(try agent.checks().keys.sorted() == ["a", "b"])
        #expect(try agent.put("/v1/agent/service/register?replace-existing-checks", one).status == 200)
        #expect(try agent.checks().keys.sorted() == ["a"])
    }

    @Test func checkRegisterAndTTLUpdates() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"mem","TTL":"30s","Notes":"memory"}"#).status == 200)
        var check = try #require(try agent.check("mem"))
        #expect(check["Status"] as? String == "critical")
        #expect(check["Notes"] as? String == "memory")
        #expect(check["Output"] as? String == "")

        #expect(try agent.request("PUT", "/v1/agent/check/pass/mem?note=all%20good").status == 200)
        check = try #require(try agent.check("mem"))
        #expect(check["Status"] as? String == "passing")
        #expect(check["Output"] as? String == "all good")
        #expect(try agent.request("PUT", "/v1/agent/check/warn/mem").status == 200)
        #expect(try agent.check("mem")?["Status"] as? String == "warning")
        #expect(try agent.request("PUT", "/v1/agent/check/fail/mem?note=oom").status == 200)
        #expect(try agent.check("mem")?["Output"] as? String == "oom")

        #expect(try agent.put("/v1/agent/check/update/mem", #"{"Status":"passing","Output":"fine"}"#).status == 200)
        check = try #require(try agent.check("mem"))
        #expect(check["Status"] as? String == "passing")
        #expect(check["Output"] as? String == "fine")
        let bad = try agent.put("/v1/agent/check/update/mem", #"{"Status":"great"}"#)
        #expect(bad.status == 400)
        #expect(bad.text == "Invalid check status: 'great'")
        #expect(try agent.put("/v1/agent/check/update/mem", "{").status == 400)

        // Output is bounded like any check output.
        let long = String(repeating: "x", count: 10_000)
        #expect(try agent.put("/v1/agent/check/update/mem", #"{"Status":"passing","Output":"\#(long)"}"#).status == 200)
        let stored = try #require(try agent.check("mem")?["Output"] as? String)
        #expect(stored.hasPrefix(String(repeating: "x", count: 4096) + " ... (captured 4096 of 10000 bytes)"))

        #expect(try agent.request("PUT", "/v1/agent/check/deregister/mem").status == 200)
        #expect(try agent.checks().isEmpty)
    }

    @Test func unknownChecksAre404WithConsulsText() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let expected = #"Unknown check ID "nope". Ensure that the check ID is passed, not the check name."#
        for path in ["/v1/agent/check/pass/nope", "/v1/agent/check/warn/nope", "/v1/agent/check/fail/nope", "/v1/agent/check/deregister/nope"] {
            let response = try agent.request("PUT", path)
            #expect(response.status == 404, "\(path)")
            #expect(response.text == expected, "\(path)")
        }
        let update = try agent.put("/v1/agent/check/update/nope", #"{"Status":"passing"}"#)
        #expect(update.status == 404)
        #expect(update.text == expected)
    }

    @Test(arguments: [
        (#"{"TTL":"10s"}"#, "Missing check name"),
        (#"{"Name":"c"}"#, "Invalid check: TTL must be > 0 for TTL checks"),
        (#"{"Name":"c","TCP":"127.0.0.1:1"}"#, "Invalid check: Interval must be > 0"),
        (#"{"Name":"c","TTL":"10s","Status":"fine"}"#, "Bad check status: fine"),
        (#"{"Name":"c","TTL":"10s","ServiceID":"ghost"}"#, #"ServiceID "ghost" does not exist"#),
        (#"{"Name":"c","TTL":10}"#, "Invalid check: TTL must be > 0"),
        ("nope", "Request decode failed"),
    ])
    func badCheckRegistrationsAre400(body: String, message: String) throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let response = try agent.put("/v1/agent/check/register", body)
        #expect(response.status == 400)
        #expect(response.text.hasPrefix(message), "\(response.text)")
    }

    @Test func intervalsBelowConsulsMinimumAreRaisedToOneSecond() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let body = #"{"Name":"fast","TCP":"127.0.0.1:1","Interval":"100ms","Timeout":"2s","Check":{}}"#
        #expect(try agent.put("/v1/agent/check/register", body).status == 200)
        let check = try #require(try agent.check("fast"))
        #expect(check["Interval"] as? String == "1s")
        #expect(check["Timeout"] as? String == "2s")
        #expect((check["Definition"] as? [String: Any])?["TCP"] as? String == "127.0.0.1:1")
    }

    @Test func ttlUpdatesOnNonTTLChecksAreRefused() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/check/register", #"{"Name":"port","TCP":"127.0.0.1:1","Interval":"1h"}"#).status == 200)
        let response = try agent.request("PUT", "/v1/agent/check/pass/port")
        #expect(response.status == 400)
        #expect(response.text == #"CheckID "port" does not have associated TTL"#)
    }

    @Test func serviceMaintenanceAddsACriticalCheck() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/service/register", #"{"Name":"web"}"#).status == 200)
        let missing = try agent.request("PUT", "/v1/agent/service/maintenance/web")
        #expect(missing.status == 400)
        #expect(missing.text == "Missing value for enable")
        #expect(try agent.request("PUT", "/v1/agent/service/maintenance/web?enable=maybe").status == 400)
        let unknown = try agent.request("PUT", "/v1/agent/service/maintenance/ghost?enable=true")
        #expect(unknown.status == 404)

        #expect(try agent.request("PUT", "/v1/agent/service/maintenance/web?enable=true&reason=deploy").status == 200)
        let check = try #require(try agent.check("_service_maintenance:web"))
        #expect(check["Status"] as? String == "critical")
        #expect(check["Name"] as? String == "Service Maintenance Mode")
        #expect(check["Notes"] as? String == "deploy")
        #expect(check["ServiceID"] as? String == "web")
        #expect(check["Type"] as? String == "maintenance")
        #expect(try agent.request("PUT", "/v1/agent/service/maintenance/web?enable=false").status == 200)
        #expect(try agent.check("_service_maintenance:web") == nil)
    }

    @Test func nodeMaintenanceAddsACriticalNodeCheckWithTheDefaultReason() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("PUT", "/v1/agent/maintenance?enable=true").status == 200)
        let check = try #require(try agent.check("_node_maintenance"))
        #expect(check["Status"] as? String == "critical")
        #expect(check["Name"] as? String == "Node Maintenance Mode")
        #expect(check["Notes"] as? String == "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.")
        #expect(check["ServiceID"] as? String == "")
        #expect(try agent.request("PUT", "/v1/agent/check/pass/_node_maintenance").status == 400)
        #expect(try agent.request("PUT", "/v1/agent/maintenance?enable=false").status == 200)
        #expect(try agent.checks().isEmpty)
    }

    @Test func apiRegistrationsSurviveARestart() throws {
        let dir = NSTemporaryDirectory() + "/conclave-local-restart-" + UUID().uuidString
        let first = try TestAgent(dataDir: dir)
        #expect(try first.put("/v1/agent/service/register", #"{"ID":"web/1","Name":"web","Port":80,"Tags":["a"],"Check":{"TTL":"1h"}}"#).status == 200)
        #expect(try first.put("/v1/agent/check/register", #"{"Name":"disk","TTL":"1h"}"#).status == 200)
        #expect(try first.request("PUT", "/v1/agent/check/pass/disk?note=ok").status == 200)
        #expect(try first.put("/v1/agent/service/register", #"{"Name":"gone"}"#).status == 200)
        #expect(try first.request("PUT", "/v1/agent/service/deregister/gone").status == 200)
        #expect(try first.request("PUT", "/v1/agent/maintenance?enable=true&reason=r").status == 200)
        first.stop(removeData: false)
        #expect(FileManager.default.fileExists(atPath: dir + "/services/web%2F1.json"))

        let second = try TestAgent(dataDir: dir)
        defer { second.stop() }
        let services = try second.services()
        #expect(services.keys.sorted() == ["web/1"])
        #expect(services["web/1"]?["Tags"] as? [String] == ["a"])
        let checks = try second.checks()
        #expect(checks.keys.sorted() == ["_node_maintenance", "disk", "service:web/1"])
        // TTL state persisted: the check comes back passing with its note.
        #expect(checks["disk"]?["Status"] as? String == "passing")
        #expect(checks["disk"]?["Output"] as? String == "ok")
        #expect(checks["_node_maintenance"]?["Notes"] as? String == "r")
    }

    @Test func rapidTTLUpdatesPersistTheLastState() throws {
        let dir = NSTemporaryDirectory() + "/conclave-ttl-burst-" + UUID().uuidString
        let first = try TestAgent(dataDir: dir)
        #expect(try first.put("/v1/agent/check/register", #"{"Name":"beat","TTL":"1h"}"#).status == 200)
        for i in 0..<200 {
            #expect(try first.request("PUT", "/v1/agent/check/\(i % 2 == 0 ? "fail" : "warn")/beat?note=n\(i)").status == 200)
        }
        #expect(try first.request("PUT", "/v1/agent/check/pass/beat?note=last").status == 200)
        first.stop(removeData: false)
        let second = try TestAgent(dataDir: dir)
        defer { second.stop() }
        #expect(try second.check("beat")?["Status"] as? String == "passing")
        #expect(try second.check("beat")?["Output"] as? String == "last")
    }

    @Test func configFileDefinitionsLoadButAreNotPersisted() throws {
        let dir = NSTemporaryDirectory() + "/conclave-local-config-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/conf", withIntermediateDirectories: true)
        let file = dir + "/conf/services.json"
        try #"""
        {"services":[{"name":"cache","port":6379,"tags":["x"],"check":{"ttl":"1h","status":"passing"}}],
         "check":{"id":"load","name":"Load","ttl":"1h"},
         "enable_script_checks":true}
        """#.write(toFile: file, atomically: true, encoding: .utf8)
        let agent = try TestAgent(dataDir: dir + "/data") { config in
            do { try config.apply(configDir: dir + "/conf") } catch { Issue.record("config: \(error)") }
        }
        defer { agent.stop() }
        #expect(agent.agent.config.enableScriptChecks)
        #expect(try agent.services()["cache"]?["Port"] as? Int == 6379)
        let checks = try agent.checks()
        #expect(checks["service:cache"]?["Status"] as? String == "passing")
        #expect(checks["load"]?["Name"] as? String == "Load")
        #expect(!FileManager.default.fileExists(atPath: dir + "/data/services/cache.json"))
    }

    @Test func configScriptChecksNeedEnableScriptChecks() throws {
        let path = NSTemporaryDirectory() + "/conclave-script-config-" + UUID().uuidString + ".json"
        try #"{"check":{"name":"s","args":["true"],"interval":"10s"}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var config = AgentConfigForTests.make()
        config.dataDir = "/tmp/unused"
        try config.apply(jsonFile: path)
        #expect(throws: AgentConfigError.self) { try config.validate() }
        config.enableScriptChecks = true
        try config.validate()
    }

    @Test func badConfigDefinitionsAreRejectedWithTheFileName() throws {
        let path = NSTemporaryDirectory() + "/conclave-bad-service-" + UUID().uuidString + ".json"
        try #"{"service":{"port":1}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var config = AgentConfigForTests.make()
        #expect(throws: (any Error).self) { try config.apply(jsonFile: path) }
        do { try config.apply(jsonFile: path) } catch {
            #expect("\(error)".contains("Missing service name"))
            #expect("\(error)".contains(path))
        }
    }
}

import Agent
enum AgentConfigForTests {
    static func make() -> AgentConfig { AgentConfig() }
}

@Suite("Agent self counts local state")
struct AgentSelfLocalCountsTests {
    @Test func statsAgentCountsServicesAndChecks() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.put("/v1/agent/service/register", #"{"Name":"web","Check":{"TTL":"1h"}}"#).status == 200)
        let stats = (try agent.request("GET", "/v1/agent/self").json as? [String: Any])?["Stats"] as? [String: Any]
        #expect(stats?["agent"] as? [String: String] == ["checks": "1", "services": "1"])
    }
}
