// Issue 6 end to end: 3 servers and 2 client agents on 127.0.0.1. A service with an HTTP check
// registered on one client appears (through anti-entropy) in the catalog seen from the other;
// stopping the checked server turns it critical and wakes a blocked health watcher; kill -9 of
// the client turns its serfHealth critical (the leader's gossip reconcile); a restart brings
// its services back from the data dir. Every wait polls with a deadline.
import EventLoop
import Foundation
import HTTP
import Logging
import Testing

/// A one-path HTTP server on its own loop, the target of the HTTP check.
private final class CheckedServer: @unchecked Sendable {
    let loop: Loop
    private(set) var port = 0
    private var server: HTTPServer?

    init() throws {
        loop = try Loop(name: "checked-server")
        loop.start()
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            var logger = Logger(label: "checked-server")
            logger.logLevel = .error
            server = try? HTTPServer(loop: loop, host: "127.0.0.1", port: 0, logger: logger) { responder in
                responder.respond(.text(status: 200, "ok"))
            }
            port = server?.localPort ?? 0
            done.signal()
        }
        done.wait()
    }

    func stop() { loop.shutdown() }
}

extension AgentProcess {
    func jsonArray(_ path: String) throws -> (entries: [[String: Any]], index: UInt64) {
        let response = try http("GET", path)
        let index = response.headers["X-Consul-Index"].flatMap { UInt64($0) } ?? 0
        let entries = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [[String: Any]] ?? []
        return (entries, index)
    }

    /// Status of `checkID` on `node` from /v1/health/node/<node>, nil if absent.
    func checkStatus(node: String, checkID: String) throws -> String? {
        try jsonArray("/v1/health/node/\(node)").entries.first { $0["CheckID"] as? String == checkID }?["Status"] as? String
    }
}

@Suite("Services and health across a cluster", .serialized)
struct ServiceHealthClusterTests {
    @Test func aClientsCheckedServiceIsSeenEverywhereAndFollowsHealthAndMembership() throws {
        let first = try AgentProcess(node: "hs1", server: true, extra: ["-bootstrap-expect", "3"])
        let seed = "127.0.0.1:\(try first.serfLANPort())"
        let join = ["-retry-join", seed, "-retry-interval", "1s"]
        let servers = [first,
                       try AgentProcess(node: "hs2", server: true, extra: ["-bootstrap-expect", "3"] + join),
                       try AgentProcess(node: "hs3", server: true, extra: ["-bootstrap-expect", "3"] + join)]
        var clientA = try AgentProcess(node: "hc1", server: false, extra: join)
        let clientB = try AgentProcess(node: "hc2", server: false, extra: join)
        let target = try CheckedServer()
        let t0 = Date()
        func phase(_ name: String) { print("[\(String(format: "%.1f", Date().timeIntervalSince(t0))) s] \(name)") }
        defer {
            (servers + [clientA, clientB]).forEach { $0.stop() }
            target.stop()
        }
        try poll("a leader seen through both clients", seconds: 60) {
            let leaders = Set([clientA.leader, clientB.leader])
            return leaders.count == 1 && leaders.first?.isEmpty == false
        }
        phase("leader known")
        // Every member gets a node entry with a passing serfHealth from the leader.
        try poll("all five nodes in the catalog with serfHealth passing", seconds: 60) {
            try ["hs1", "hs2", "hs3", "hc1", "hc2"].allSatisfy { try clientB.checkStatus(node: $0, checkID: "serfHealth") == "passing" }
        }

        phase("all nodes in the catalog")
        // Register on client A; anti-entropy puts it in the catalog; client B sees it healthy.
        let registration = """
            {"ID":"web1","Name":"web","Tags":["v1"],"Port":\(target.port),
             "Check":{"HTTP":"http://127.0.0.1:\(target.port)/health","Interval":"1s","Timeout":"1s"}}
            """
        #expect(try clientA.http("PUT", "/v1/agent/service/register", body: registration).status == 200)
        try poll("web passing as seen from client B", seconds: 30) {
            try clientB.jsonArray("/v1/health/service/web?passing").entries.count == 1
        }
        phase("service passing on client B")
        let healthy = try clientB.jsonArray("/v1/health/service/web")
        let entry = try #require(healthy.entries.first)
        #expect((entry["Node"] as? [String: Any])?["Node"] as? String == "hc1")
        #expect((entry["Service"] as? [String: Any])?["ID"] as? String == "web1")
        let checkIDs = Set(((entry["Checks"] as? [[String: Any]]) ?? []).compactMap { $0["CheckID"] as? String })
        #expect(checkIDs == ["serfHealth", "service:web1"])
        #expect(try clientB.jsonArray("/v1/catalog/service/web").entries.first?["ServicePort"] as? Int == target.port)

        // A watcher blocked on the service's health wakes once the checked server stops.
        let port = clientB.httpPort
        let healthyIndex = healthy.index
        let blocked = Unsafe<HTTPClientResponse?>(nil)
        let returned = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 120)
            blocked.value = try? client.request(method: "GET", path: "/v1/health/service/web?index=\(healthyIndex)&wait=90s")
            returned.signal()
        }
        usleep(300_000)
        #expect(returned.wait(timeout: .now()) == .timedOut)  // parked: nothing changed yet
        let stopped = Date()
        target.stop()
        #expect(returned.wait(timeout: .now() + 60) == .success)
        let seen = Date().timeIntervalSince(stopped)
        print("check failing → blocked watcher answered after \(String(format: "%.2f", seen)) s (interval 1 s, timeout 1 s)")
        let answer = try #require(blocked.value)
        #expect(answer.status == 200)
        let woke = (try JSONSerialization.jsonObject(with: Data(answer.body)) as? [[String: Any]]) ?? []
        let serviceCheck = ((woke.first?["Checks"] as? [[String: Any]]) ?? []).first { $0["CheckID"] as? String == "service:web1" }
        #expect(serviceCheck?["Status"] as? String == "critical")
        // Within interval + timeout, with slack for a loaded 2-core CI machine.
        #expect(seen < 10, "critical took \(seen) s")
        #expect(try clientB.jsonArray("/v1/health/service/web?passing").entries.isEmpty)

        // kill -9 of client A: gossip declares it failed and the leader marks serfHealth critical.
        let serfPortA = try clientA.serfLANPort()
        clientA.kill9()
        try poll("serfHealth of hc1 critical", seconds: 60) {
            try clientB.checkStatus(node: "hc1", checkID: "serfHealth") == "critical"
        }
        phase("hc1 serfHealth critical after kill -9")
        #expect(try clientB.jsonArray("/v1/catalog/service/web").entries.count == 1)  // still listed, unhealthy

        // Restarted on the same data dir: its service comes back from disk, serfHealth passes again.
        // Same gossip address: a failed member coming back from another address may reclaim its
        // name only after 30 s (Consul's DeadNodeReclaimTime), which would only slow the test.
        var arguments = clientA.process.arguments ?? []
        if let i = arguments.firstIndex(of: "-serf-lan-port") { arguments[i + 1] = String(serfPortA) }
        clientA = try AgentProcess(dataDir: clientA.dataDir, arguments: arguments)
        try poll("hc1 alive again with its service", seconds: 60) {
            try clientB.checkStatus(node: "hc1", checkID: "serfHealth") == "passing"
        }
        phase("hc1 back")
        let services = try clientA.http("GET", "/v1/agent/services")
        let local = (try JSONSerialization.jsonObject(with: Data(services.body)) as? [String: Any]) ?? [:]
        #expect(local["web1"] != nil)
        #expect(try clientB.jsonArray("/v1/catalog/service/web").entries.first?["ServiceID"] as? String == "web1")
    }
}
