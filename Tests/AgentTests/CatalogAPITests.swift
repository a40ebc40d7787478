// /v1/catalog/* and /v1/health/* against a live agent: Consul's shapes, errors and blocking.
import Foundation
@testable import Agent
import HTTP
import Testing

private func json(_ text: String) -> [UInt8] { Array(text.utf8) }

private let webOnN1 = """
    {"Node":"n1","Address":"10.0.0.1","NodeMeta":{"rack":"a"},"TaggedAddresses":{"lan":"10.0.0.1"},
     "Service":{"Service":"web","Tags":["v1","Primary"],"Port":8080,"Meta":{"version":"1"}},
     "Checks":[{"CheckID":"web-http","Name":"web http","Status":"passing","ServiceID":"web","Type":"http",
                "Definition":{"HTTP":"http://10.0.0.1:8080/health","Interval":"10s"}},
               {"CheckID":"serfHealth","Name":"Serf Health Status","Status":"passing"}]}
    """

private let dbOnN2 = """
    {"Node":"n2","Address":"10.0.0.2","NodeMeta":{"rack":"b"},
     "Service":{"ID":"db-1","Service":"db","Tags":["primary"],"Port":5432},
     "Check":{"CheckID":"db-tcp","Status":"critical","ServiceID":"db-1"}}
    """

@Suite("Catalog HTTP API")
struct CatalogAPITests {
    @Test func registerThenListNodesServicesAndOneService() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        let register = try agent.put("/v1/catalog/register", webOnN1)
        #expect(register.status == 200)
        #expect(register.text == "true")
        #expect(try agent.put("/v1/catalog/register", dbOnN2).status == 200)

        let nodes = try agent.request("GET", "/v1/catalog/nodes")
        #expect(nodes.status == 200)
        #expect(nodes.entries.map { $0["Node"] as? String } == ["n1", "n2"])
        let n1 = nodes.entries[0]
        #expect(n1["Address"] as? String == "10.0.0.1")
        #expect(n1["Datacenter"] as? String == "dc1")
        #expect(n1["ID"] as? String == "")
        #expect(n1["Meta"] as? [String: String] == ["rack": "a"])
        #expect(n1["TaggedAddresses"] as? [String: String] == ["lan": "10.0.0.1"])
        #expect((n1["CreateIndex"] as? NSNumber) != nil && (n1["ModifyIndex"] as? NSNumber) != nil)
        #expect(nodes.consulIndex != nil)
        #expect(nodes.headers["X-Consul-KnownLeader"] == "true")
        #expect(nodes.headers["X-Consul-LastContact"] == "0")

        let filtered = try agent.request("GET", "/v1/catalog/nodes?node-meta=rack:b")
        #expect(filtered.entries.map { $0["Node"] as? String } == ["n2"])

        let services = try agent.request("GET", "/v1/catalog/services")
        let map = try #require(services.json as? [String: [String]])
        #expect(map == ["web": ["v1", "Primary"], "db": ["primary"]])

        let web = try agent.request("GET", "/v1/catalog/service/web")
        let instance = try #require(web.entries.first)
        #expect(web.entries.count == 1)
        #expect(instance["Node"] as? String == "n1")
        #expect(instance["Address"] as? String == "10.0.0.1")
        #expect(instance["ServiceID"] as? String == "web", "the ID defaults to the service name")
        #expect(instance["ServiceName"] as? String == "web")
        #expect(instance["ServicePort"] as? Int == 8080)
        #expect(instance["ServiceTags"] as? [String] == ["v1", "Primary"])
        #expect(instance["ServiceMeta"] as? [String: String] == ["version": "1"])
        #expect(instance["NodeMeta"] as? [String: String] == ["rack": "a"])
        #expect(instance["ServiceAddress"] as? String == "")
        #expect(instance["ServiceEnableTagOverride"] as? Bool == false)
        #expect((instance["ServiceWeights"] as? [String: Int]) == ["Passing": 1, "Warning": 1])
        #expect(instance["ServiceTaggedAddresses"] == nil)
    }

    @Test func serviceFiltersByTagCaseInsensitivelyAndNodeMeta() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        _ = try agent.put("/v1/catalog/register", #"{"Node":"n3","Address":"10.0.0.3","Service":{"ID":"web-3","Service":"web","Tags":["v2"]}}"#)
        #expect(try agent.request("GET", "/v1/catalog/service/web").entries.count == 2)
        let primary = try agent.request("GET", "/v1/catalog/service/web?tag=primary")
        #expect(primary.entries.map { $0["ServiceID"] as? String } == ["web"])
        #expect(try agent.request("GET", "/v1/catalog/service/web?tag=v1&tag=v2").entries.isEmpty)
        let rack = try agent.request("GET", "/v1/catalog/service/web?node-meta=rack:a")
        #expect(rack.entries.map { $0["Node"] as? String } == ["n1"])
    }

    @Test func unknownServiceIsAnEmptyList() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        for path in ["/v1/catalog/service/nope", "/v1/health/service/nope", "/v1/health/checks/nope", "/v1/health/node/nope"] {
            let response = try agent.request("GET", path)
            #expect(response.status == 200, "\(path)")
            #expect(response.text == "[]", "\(path)")
        }
    }

    @Test func nodeEndpointsShowServicesByIDOrAsAList() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        let node = try agent.request("GET", "/v1/catalog/node/n1")
        let body = try #require(node.json as? [String: Any])
        #expect((body["Node"] as? [String: Any])?["Node"] as? String == "n1")
        let services = try #require(body["Services"] as? [String: [String: Any]])
        #expect(Array(services.keys) == ["web"])
        let web = try #require(services["web"])
        #expect(web["ID"] as? String == "web")
        #expect(web["Service"] as? String == "web")
        #expect(web["Port"] as? Int == 8080)
        #expect(web["Tags"] as? [String] == ["v1", "Primary"])
        #expect(web["EnableTagOverride"] as? Bool == false)
        #expect((web["Weights"] as? [String: Int]) == ["Passing": 1, "Warning": 1])

        let list = try #require(try agent.request("GET", "/v1/catalog/node-services/n1").json as? [String: Any])
        #expect((list["Services"] as? [[String: Any]])?.map { $0["ID"] as? String } == ["web"])

        let unknown = try agent.request("GET", "/v1/catalog/node/ghost")
        #expect(unknown.status == 200)
        #expect(unknown.text == "null")
    }

    @Test func datacentersListsTheAgentsDatacenter() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        let response = try agent.request("GET", "/v1/catalog/datacenters")
        #expect(response.status == 200)
        #expect(response.json as? [String] == ["dc1"])
    }

    @Test func badRequestsAnswer400WithConsulsWords() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        let cases: [(body: String, message: String)] = [
            ("{not json", "Request decode failed: invalid JSON"),
            ("[1]", "Request decode failed: the body must be a JSON object"),
            (#"{"Address":"1.2.3.4"}"#, "Must provide node"),
            (#"{"Node":"n"}"#, "Must provide address if SkipNodeUpdate is not set"),
            (#"{"Node":"n","Address":"a","ID":"nope"}"#, #"Bad node ID: "nope" is not a 36-character UUID"#),
            (#"{"Node":"n","Address":"a","Service":{"ID":"x"}}"#, "Must provide service name with ID"),
            (#"{"Node":"n","Address":"a","Service":{"Service":"s","Port":"80"}}"#, "Request decode failed: Port must be an integer"),
            (#"{"Node":"n","Address":"a","Check":{"CheckID":"c","Status":"bogus"}}"#, #"Invalid check status: "bogus""#),
            (#"{"Node":"n","Address":"a","Check":{"Node":"other","CheckID":"c"}}"#,
             "Node name for check doesn't match node name for registration"),
            (#"{"Node":"n","Address":"a","Check":{"CheckID":"c","ServiceID":"missing"}}"#, "Missing service registration"),
        ]
        for (body, message) in cases {
            let response = try agent.put("/v1/catalog/register", body)
            #expect(response.status == 400, "\(body)")
            #expect(response.text == message, "\(body)")
        }
        #expect(try agent.request("GET", "/v1/catalog/nodes").entries.isEmpty, "no failed registration left anything")
        let deregister = try agent.put("/v1/catalog/deregister", "{}")
        #expect(deregister.status == 400)
        #expect(deregister.text == "Must provide node")
        #expect(try agent.request("GET", "/v1/catalog/register").status == 405)
        #expect(try agent.request("GET", "/v1/health/state/bogus").status == 400)
        #expect(try agent.request("GET", "/v1/health/state/bogus").text == "Invalid check state")
        #expect(try agent.request("GET", "/v1/catalog/service/").status == 400)
    }

    @Test func serviceAndNodeNamesMatchCaseInsensitively() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        #expect(try agent.request("GET", "/v1/health/service/WEB").entries.count == 1)
        #expect(try agent.request("GET", "/v1/catalog/service/Web").entries.first?["ServiceName"] as? String == "web")
        #expect((try agent.request("GET", "/v1/catalog/node/N1").json as? [String: Any])?["Node"] != nil)
    }

    @Test func fieldNamesMatchCaseInsensitivelyLikeGo() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        #expect(try agent.put("/v1/catalog/register", #"{"node":"n","address":"a","service":{"service":"s"}}"#).status == 200)
        #expect(try agent.request("GET", "/v1/catalog/service/s").entries.count == 1)
    }

    @Test func deregisterNodeServiceAndCheck() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        _ = try agent.put("/v1/catalog/register", dbOnN2)
        #expect(try agent.put("/v1/catalog/deregister", #"{"Node":"n1","CheckID":"serfHealth"}"#).text == "true")
        #expect(try agent.request("GET", "/v1/health/node/n1").entries.map { $0["CheckID"] as? String } == ["web-http"])
        #expect(try agent.put("/v1/catalog/deregister", #"{"Node":"n1","ServiceID":"web"}"#).text == "true")
        #expect(try agent.request("GET", "/v1/catalog/service/web").text == "[]")
        #expect(try agent.request("GET", "/v1/health/node/n1").text == "[]", "the service's checks went with it")
        #expect(try agent.put("/v1/catalog/deregister", #"{"Node":"n2"}"#).text == "true")
        #expect(try agent.request("GET", "/v1/catalog/nodes").entries.map { $0["Node"] as? String } == ["n1"])
        #expect(try agent.request("GET", "/v1/health/state/any").entries.isEmpty)
    }
}

@Suite("Health HTTP API")
struct HealthAPITests {
    @Test func healthServiceJoinsNodeServiceAndChecksIncludingNodeChecks() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        let response = try agent.request("GET", "/v1/health/service/web")
        #expect(response.status == 200)
        let entry = try #require(response.entries.first)
        #expect((entry["Node"] as? [String: Any])?["Node"] as? String == "n1")
        #expect((entry["Service"] as? [String: Any])?["Service"] as? String == "web")
        let checks = try #require(entry["Checks"] as? [[String: Any]])
        #expect(Set(checks.compactMap { $0["CheckID"] as? String }) == ["web-http", "serfHealth"])
        let http = try #require(checks.first { $0["CheckID"] as? String == "web-http" })
        #expect(http["Status"] as? String == "passing")
        #expect(http["ServiceName"] as? String == "web")
        #expect(http["ServiceTags"] as? [String] == ["v1", "Primary"])
        #expect(http["Type"] as? String == "http")
        #expect((http["Definition"] as? [String: String])?["HTTP"] == "http://10.0.0.1:8080/health")
        #expect(http["Node"] as? String == "n1")
        for field in ["Name", "Notes", "Output", "ServiceID", "CreateIndex", "ModifyIndex"] {
            #expect(http[field] != nil, "\(field)")
        }
    }

    @Test func passingFiltersOutInstancesWithAnyNonPassingCheck() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        _ = try agent.put("/v1/catalog/register", #"{"Node":"n3","Address":"10.0.0.3","Service":{"ID":"web-3","Service":"web"},"Check":{"CheckID":"serfHealth","Status":"critical"}}"#)
        #expect(try agent.request("GET", "/v1/health/service/web").entries.count == 2)
        let passing = try agent.request("GET", "/v1/health/service/web?passing")
        #expect(passing.entries.map { ($0["Node"] as? [String: Any])?["Node"] as? String } == ["n1"])
        #expect(try agent.request("GET", "/v1/health/service/web?passing=false").entries.count == 2)
        #expect(try agent.request("GET", "/v1/health/service/web?tag=v1").entries.count == 1)
    }

    @Test func checksByServiceAndByState() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        _ = try agent.put("/v1/catalog/register", dbOnN2)
        #expect(try agent.request("GET", "/v1/health/checks/db").entries.map { $0["CheckID"] as? String } == ["db-tcp"])
        #expect(try agent.request("GET", "/v1/health/state/critical").entries.map { $0["CheckID"] as? String } == ["db-tcp"])
        #expect(try agent.request("GET", "/v1/health/state/passing").entries.count == 2)
        #expect(try agent.request("GET", "/v1/health/state/any").entries.count == 3)
        #expect(try agent.request("GET", "/v1/health/state/warning").text == "[]")
        // ?node-meta narrows both to nodes carrying every pair.
        #expect(try agent.request("GET", "/v1/health/state/any?node-meta=rack:a").entries.count == 2)
        #expect(try agent.request("GET", "/v1/health/checks/db?node-meta=rack:a").text == "[]")
        #expect(try agent.request("GET", "/v1/health/checks/db?node-meta=rack:b").entries.count == 1)
    }
}

extension TestAgent {
    /// A server whose catalog holds only what the test registers: the leader's reconcile of
    /// gossip members (its own node with serfHealth) is off; ServiceHealthClusterTests covers it.
    static func catalogOnly() throws -> TestAgent {
        try TestAgent { $0.reconcileMembersIntoCatalog = false }
    }
}

@Suite("Catalog blocking queries")
struct CatalogBlockingTests {
    @Test func aHealthWatcherWakesForItsServiceAndNotForAnother() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        _ = try agent.put("/v1/catalog/register", dbOnN2)
        let index = try #require(try agent.request("GET", "/v1/health/service/web").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/health/service/web?index=\(index)&wait=20s")
        // A change to db (another service on another node) must not wake the web watcher.
        _ = try agent.put("/v1/catalog/register", #"{"Node":"n2","Address":"10.0.0.2","Check":{"CheckID":"db-tcp","Status":"passing","ServiceID":"db-1"}}"#)
        #expect(!parked.finished(within: 500), "an unrelated service's change must not wake the watcher")
        // The web check turning critical does.
        _ = try agent.put("/v1/catalog/register", #"{"Node":"n1","Address":"10.0.0.1","NodeMeta":{"rack":"a"},"TaggedAddresses":{"lan":"10.0.0.1"},"Check":{"CheckID":"web-http","Name":"web http","Status":"critical","ServiceID":"web"}}"#)
        #expect(parked.finished(within: 10_000))
        let response = try #require(parked.response)
        #expect((response.consulIndex ?? 0) > index)
        let checks = response.entries.first?["Checks"] as? [[String: Any]] ?? []
        #expect(checks.contains { $0["CheckID"] as? String == "web-http" && $0["Status"] as? String == "critical" })
    }

    @Test func aNodeCheckWakesTheWatchersOfTheNodesServices() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        let index = try #require(try agent.request("GET", "/v1/health/service/web").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/health/service/web?index=\(index)&wait=20s")
        #expect(!parked.finished(within: 300))
        // The leader's serfHealth update: SkipNodeUpdate with the node check only.
        _ = try agent.put("/v1/catalog/register", #"{"Node":"n1","SkipNodeUpdate":true,"Check":{"CheckID":"serfHealth","Name":"Serf Health Status","Status":"critical"}}"#)
        #expect(parked.finished(within: 10_000))
        #expect((parked.response?.consulIndex ?? 0) > index)
    }

    @Test func aNodesWatcherIgnoresCheckChangesAndTheIndexNeverGoesBack() throws {
        let agent = try TestAgent.catalogOnly()
        defer { agent.stop() }
        _ = try agent.put("/v1/catalog/register", webOnN1)
        let index = try #require(try agent.request("GET", "/v1/catalog/nodes").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/catalog/nodes?index=\(index)&wait=700ms")
        _ = try agent.put("/v1/catalog/register", #"{"Node":"n1","SkipNodeUpdate":true,"Check":{"CheckID":"serfHealth","Status":"critical"}}"#)
        #expect(parked.finished(within: 10_000))
        #expect(parked.elapsedMilliseconds >= 690, "a checks-only change does not wake a nodes watcher")
        #expect(parked.response?.consulIndex == index)

        let before = try #require(try agent.request("GET", "/v1/health/service/web").consulIndex)
        _ = try agent.put("/v1/catalog/deregister", #"{"Node":"n1","ServiceID":"web"}"#)
        let after = try #require(try agent.request("GET", "/v1/health/service/web").consulIndex)
        #expect(after > before, "a service that went away reports its extinction index")
    }
}

/// The register/deregister body decoders take any bytes: a command or a 400 message, never a
/// crash. Mutations of valid bodies (seeded, so a failure replays).
@Suite("Catalog request decoding")
struct CatalogRequestDecodingTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func anyBodyGivesACommandOrAMessage(seed: UInt64) {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> UInt64 {  // xorshift: enough to pick mutations reproducibly
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
        let valid = [Array(webOnN1.utf8), Array(dbOnN2.utf8), Array(#"{"Node":"n","ServiceID":"s","CheckID":"c"}"#.utf8)]
        var accepted = 0
        for round in 0..<3_000 {
            var body = valid[round % valid.count]
            for _ in 0...(next() % 4) {
                let at = Int(next() % UInt64(max(body.count, 1)))
                switch next() % 4 {
                case 0 where !body.isEmpty: body[at] = UInt8(truncatingIfNeeded: next())
                case 1 where !body.isEmpty: body.remove(at: at)
                case 2:
                    let junk = Array(#"{}[]":,0"#.utf8)
                    body.insert(junk[Int(next() % UInt64(junk.count))], at: min(at, body.count))
                default: body.removeLast(min(body.count, Int(next() % 8)))
                }
            }
            do throws(CatalogRequestError) {
                let fields = try JSONFields.parse(body)
                _ = try CatalogJSON.registration(fields, defaultDatacenter: "dc1")
                _ = try CatalogJSON.deregistration(fields)
                accepted += 1
            } catch {
                if error.message.isEmpty { Issue.record("seed \(seed) round \(round): an empty message") }
            }
        }
        #expect(accepted > 0, "some mutations stay valid")
    }
}
