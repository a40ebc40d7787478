// Anti-entropy driven by a real agent: local changes made through the HTTP API reach a fake
// catalog (the test double from AntiEntropyTests, behind a lock) by partial syncs, and the full
// sync on connect removes what the agent does not have.
import Foundation
import EventLoop
import Testing
@testable import Agent

/// The fake catalog is called on the agent's loop thread and read by the test thread.
final class LockedFakeCatalog: @unchecked Sendable {
    private let lock = NSLock()
    private let fake = FakeCatalog()
    func call(_ m: String, _ p: String, _ b: [UInt8], _ c: @escaping (Int, [UInt8]) -> Void) {
        let (status, body) = lock.withLock { () -> (Int, [UInt8]) in
            var result = (0, [UInt8]())
            fake.call(m, p, b) { result = ($0, $1) }
            return result
        }
        c(status, body)
    }
    func read<T>(_ f: (FakeCatalog) -> T) -> T { lock.withLock { f(fake) } }
}

@Suite("Anti-entropy wired to an agent")
struct AntiEntropyWiringTests {
    @Test func localChangesReachTheCatalogAndStaleEntriesGo() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let catalog = LockedFakeCatalog()
        catalog.read { $0.services["test-node"] = ["stale": ["ID": "stale", "Service": "stale"]] }
        #expect(try agent.put("/v1/agent/service/register", #"{"Name":"web","Port":80,"Check":{"TTL":"1h"}}"#).status == 200)
        agent.agent.connectAntiEntropy { catalog.call($0, $1, $2, $3) }

        // The full sync on connect registers web and removes the stale service.
        #expect(eventually { catalog.read { $0.services["test-node"]?.keys.sorted() == ["web"] } })
        #expect(catalog.read { $0.checks["test-node"]?["service:web"]?["Status"] as? String } == "critical")

        // A status change is a partial sync: no catalog read, one write.
        let reads = catalog.read { $0.requests.filter { $0.method == "GET" }.count }
        #expect(try agent.request("PUT", "/v1/agent/check/pass/service:web?note=up").status == 200)
        #expect(eventually { catalog.read { $0.checks["test-node"]?["service:web"]?["Status"] as? String == "passing" } })
        #expect(catalog.read { $0.checks["test-node"]?["service:web"]?["Output"] as? String } == "up")
        #expect(catalog.read { $0.requests.filter { $0.method == "GET" }.count } == reads)

        // An output-only change waits for the next sync rather than writing at once.
        let writes = catalog.read { $0.writes.count }
        #expect(try agent.request("PUT", "/v1/agent/check/pass/service:web?note=still%20up").status == 200)
        usleep(300_000)
        #expect(catalog.read { $0.writes.count } == writes)

        // A new service and a deregistration each reach the catalog; the pending output rides along.
        #expect(try agent.put("/v1/agent/service/register", #"{"Name":"db"}"#).status == 200)
        #expect(eventually { catalog.read { $0.services["test-node"]?.keys.sorted() == ["db", "web"] } })
        #expect(catalog.read { $0.checks["test-node"]?["service:web"]?["Output"] as? String } == "still up")
        #expect(try agent.request("PUT", "/v1/agent/service/deregister/web").status == 200)
        #expect(eventually { catalog.read { $0.services["test-node"]?.keys.sorted() == ["db"] } })
        #expect(catalog.read { $0.checks["test-node"]?["service:web"] } == nil)
    }
}
