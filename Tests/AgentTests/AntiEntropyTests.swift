// Anti-entropy logic against an in-test fake catalog (a test double that keeps state and
// answers Consul-shaped JSON for the four catalog calls anti-entropy makes).
import Foundation
import Testing
@testable import Agent

/// Holds per-node services and checks like the catalog would, and records every request.
final class FakeCatalog {
    var services: [String: [String: [String: Any]]] = [:]  // node → id → catalog service JSON
    var checks: [String: [String: [String: Any]]] = [:]    // node → id → HealthCheck JSON
    var requests: [(method: String, path: String, body: [String: Any])] = []
    var failNextWrites = 0

    var writes: [(method: String, path: String, body: [String: Any])] { requests.filter { $0.method == "PUT" } }

    func call(_ method: String, _ path: String, _ body: [UInt8], _ completion: @escaping (Int, [UInt8]) -> Void) {
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        requests.append((method, path, object))
        func json(_ value: Any) -> [UInt8] { Array(try! JSONSerialization.data(withJSONObject: value)) }
        if method == "GET", path.hasPrefix("/v1/catalog/node-services/") {
            let node = String(path.dropFirst("/v1/catalog/node-services/".count))
            completion(200, json(["Node": ["Node": node], "Services": Array((services[node] ?? [:]).values)]))
        } else if method == "GET", path.hasPrefix("/v1/health/node/") {
            let node = String(path.dropFirst("/v1/health/node/".count))
            completion(200, json(Array((checks[node] ?? [:]).values)))
        } else if method == "PUT", failNextWrites > 0 {
            failNextWrites -= 1
            completion(500, Array("No cluster leader".utf8))
        } else if method == "PUT", path == "/v1/catalog/register" {
            let node = object["Node"] as! String
            if let service = object["Service"] as? [String: Any] {
                services[node, default: [:]][service["ID"] as! String] = service
            }
            var newChecks = object["Checks"] as? [[String: Any]] ?? []
            if let check = object["Check"] as? [String: Any] { newChecks.append(check) }
            for check in newChecks { checks[node, default: [:]][check["CheckID"] as! String] = check }
            completion(200, Array("true".utf8))
        } else if method == "PUT", path == "/v1/catalog/deregister" {
            let node = object["Node"] as! String
            if let id = object["ServiceID"] as? String {
                services[node]?[id] = nil
                checks[node] = checks[node]?.filter { ($0.value["ServiceID"] as? String) != id }
            }
            if let id = object["CheckID"] as? String { checks[node]?[id] = nil }
            completion(200, Array("true".utf8))
        } else {
            completion(404, [])
        }
    }
}

@Suite("Anti-entropy")
struct AntiEntropyTests {
    final class Fixture {
        let catalog = FakeCatalog()
        let ae = AntiEntropy(nodeName: "n1", nodeID: "0b2a6a0e-0000-4000-8000-000000000001", address: "10.0.0.1", datacenter: "dc1")
        var services: [String: ServiceDefinition] = [:]
        var checks: [String: CheckState] = [:]

        init() {
            ae.catalogCall = { [catalog] in catalog.call($0, $1, $2, $3) }
            ae.localSnapshot = { [unowned self] in (self.services, self.checks) }
        }

        func addService(_ id: String, tags: [String] = [], checkStatus: CheckStatus? = nil) {
            services[id] = ServiceDefinition(id: id, name: id, tags: tags, port: 80)
            if let checkStatus {
                var check = CheckDefinition(id: "service:\(id)", name: "Service '\(id)' check", kind: .ttl(milliseconds: 1000))
                check.serviceID = id
                checks[check.id] = CheckState(definition: check, status: checkStatus, output: "", criticalSince: nil)
            }
        }

        func sync(full: Bool) -> Bool {
            var result: Bool?
            if full { ae.fullSync { result = $0 } } else { ae.partialSync { result = $0 } }
            return result ?? false
        }
    }

    @Test func fullSyncRegistersEverythingWithConsulShapedBodies() throws {
        let f = Fixture()
        f.addService("web", tags: ["v1"], checkStatus: .passing)
        var nodeCheck = CheckDefinition(id: "mem", name: "Memory", kind: .ttl(milliseconds: 1000))
        nodeCheck.notes = "n"
        f.checks["mem"] = CheckState(definition: nodeCheck, status: .warning, output: "high", criticalSince: nil)
        #expect(f.sync(full: true))
        #expect(f.catalog.requests.map(\.path).prefix(2) == ["/v1/catalog/node-services/n1", "/v1/health/node/n1"])
        let writes = f.catalog.writes
        #expect(writes.count == 2)
        let service = writes[0].body
        #expect(service["Node"] as? String == "n1")
        #expect(service["Address"] as? String == "10.0.0.1")
        #expect(service["SkipNodeUpdate"] as? Bool == true)
        let s = try #require(service["Service"] as? [String: Any])
        #expect(s["ID"] as? String == "web")
        #expect(s["Service"] as? String == "web")
        #expect(s["Tags"] as? [String] == ["v1"])
        let checks = try #require(service["Checks"] as? [[String: Any]])
        #expect(checks.first?["CheckID"] as? String == "service:web")
        #expect(checks.first?["Status"] as? String == "passing")
        #expect(checks.first?["ServiceName"] as? String == "web")
        let check = try #require(writes[1].body["Check"] as? [String: Any])
        #expect(check["CheckID"] as? String == "mem")
        #expect(check["Status"] as? String == "warning")
        #expect(check["Output"] as? String == "high")
        #expect(f.catalog.services["n1"]?.keys.sorted() == ["web"])
        #expect(f.catalog.checks["n1"]?.keys.sorted() == ["mem", "service:web"])

        // In sync: another full sync reads but writes nothing.
        let before = f.catalog.writes.count
        #expect(f.sync(full: true))
        #expect(f.catalog.writes.count == before)
    }

    @Test func partialSyncPushesOnlyWhatChanged() throws {
        let f = Fixture()
        f.addService("web", checkStatus: .passing)
        f.addService("db")
        #expect(f.sync(full: true))
        let reads = f.catalog.requests.filter { $0.method == "GET" }.count
        let writes = f.catalog.writes.count

        f.checks["service:web"]?.status = .critical
        #expect(f.sync(full: false))
        #expect(f.catalog.requests.filter { $0.method == "GET" }.count == reads)  // no catalog read
        #expect(f.catalog.writes.count == writes + 1)
        #expect(f.catalog.checks["n1"]?["service:web"]?["Status"] as? String == "critical")

        f.services["db"] = nil
        #expect(f.sync(full: false))
        #expect(f.catalog.writes.last?.path == "/v1/catalog/deregister")
        #expect(f.catalog.writes.last?.body["ServiceID"] as? String == "db")
        #expect(f.catalog.services["n1"]?.keys.sorted() == ["web"])
    }

    @Test func fullSyncRepairsEntriesDeletedBehindItsBack() throws {
        let f = Fixture()
        f.addService("web", checkStatus: .passing)
        #expect(f.sync(full: true))
        // Someone deregisters our service directly in the catalog.
        f.catalog.services["n1"] = [:]
        f.catalog.checks["n1"] = [:]
        // A partial sync trusts its view and has nothing to do…
        #expect(f.sync(full: false))
        #expect(f.catalog.services["n1"]?.isEmpty == true)
        // …the periodic full sync notices and re-registers.
        #expect(f.sync(full: true))
        #expect(f.catalog.services["n1"]?.keys.sorted() == ["web"])
        #expect(f.catalog.checks["n1"]?.keys.sorted() == ["service:web"])
    }

    @Test func catalogEntriesTheAgentDoesNotHaveAreDeregisteredExceptSerfHealth() throws {
        let f = Fixture()
        f.catalog.services["n1"] = ["stale": ["ID": "stale", "Service": "stale"]]
        f.catalog.checks["n1"] = [
            "serfHealth": ["CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"],
            "old": ["CheckID": "old", "Name": "old", "Status": "passing"],
            "service:stale": ["CheckID": "service:stale", "ServiceID": "stale", "Status": "passing"],
        ]
        f.catalog.services["other-node"] = ["x": ["ID": "x", "Service": "x"]]
        #expect(f.sync(full: true))
        let deregistrations = f.catalog.writes.map(\.body)
        #expect(deregistrations.count == 2)  // the service (taking its check) and the node check
        #expect(deregistrations[0]["ServiceID"] as? String == "stale")
        #expect(deregistrations[1]["CheckID"] as? String == "old")
        #expect(f.catalog.services["n1"]?.isEmpty == true)
        #expect(f.catalog.checks["n1"]?.keys.sorted() == ["serfHealth"])
        #expect(f.catalog.services["other-node"]?.count == 1)
    }

    @Test func aFailedWriteForcesTheNextSyncToReadTheCatalogAgain() throws {
        let f = Fixture()
        f.addService("web")
        f.catalog.failNextWrites = 1
        #expect(!f.sync(full: true))
        #expect(f.ae.catalogView == nil)
        let reads = f.catalog.requests.filter { $0.method == "GET" }.count
        #expect(f.sync(full: false))  // partial, but the view is unknown: it reads first
        #expect(f.catalog.requests.filter { $0.method == "GET" }.count == reads + 2)
        #expect(f.catalog.services["n1"]?.keys.sorted() == ["web"])
    }

    @Test func withoutACatalogCallSyncsFail() {
        let ae = AntiEntropy(nodeName: "n", nodeID: "", address: "", datacenter: "dc1")
        var result: Bool?
        ae.fullSync { result = $0 }
        #expect(result == false)
    }

    @Test func changedServiceDefinitionsAreReRegistered() {
        let f = Fixture()
        f.addService("web", tags: ["a"])
        #expect(f.sync(full: true))
        f.services["web"]?.tags = ["b"]
        #expect(f.sync(full: false))
        #expect((f.catalog.services["n1"]?["web"]?["Tags"] as? [String]) == ["b"])
    }

    // Consul's anti-entropy docs: 1-128 nodes 1 min, 129-256 2 min, 257-512 3 min, 513-1024 4 min…
    @Test(arguments: [(1, 1), (128, 1), (129, 2), (256, 2), (257, 3), (512, 3), (513, 4), (1024, 4), (1025, 5), (10_000, 8)])
    func fullSyncIntervalScalesWithClusterSize(nodes: Int, factor: UInt64) {
        #expect(AntiEntropy.scaleFactor(clusterSize: nodes) == factor)
        // Base interval plus a stagger of up to factor × base.
        #expect(AntiEntropy.fullSyncDelay(clusterSize: nodes, random: { $0.lowerBound }) == 60_000)
        #expect(AntiEntropy.fullSyncDelay(clusterSize: nodes, random: { $0.upperBound }) == 60_000 + factor * 60_000)
    }
}
