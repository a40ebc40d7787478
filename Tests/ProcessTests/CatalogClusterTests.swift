// The catalog through Raft on three real servers: a registration on any server (followers
// forward) is read on every server, and a blocked health watcher on a follower wakes when the
// leader applies a change to its service.
import Foundation
import HTTP
import Testing

@Suite("Catalog on a Raft cluster", .serialized)
struct CatalogClusterTests {
    @Test func registrationsReplicateAndWakeWatchersOnFollowers() throws {
        let first = try AgentProcess(node: "cat1", server: true, extra: ["-bootstrap-expect", "3"])
        let join = ["-bootstrap-expect", "3", "-retry-join", "127.0.0.1:\(try first.serfLANPort())", "-retry-interval", "1s"]
        let servers = [first, try AgentProcess(node: "cat2", server: true, extra: join),
                       try AgentProcess(node: "cat3", server: true, extra: join)]
        defer { servers.forEach { $0.stop() } }
        try poll("three servers to agree on one leader", seconds: 60) {
            let leaders = Set(servers.map(\.leader))
            return leaders.count == 1 && !(leaders.first ?? "").isEmpty && servers.allSatisfy { $0.peers.count == 3 }
        }

        // One registration through each server.
        for (i, server) in servers.enumerated() {
            let body = #"{"Node":"n\#(i)","Address":"10.0.0.\#(i)","Service":{"ID":"web-\#(i)","Service":"web"},"Check":{"CheckID":"c\#(i)","Status":"passing","ServiceID":"web-\#(i)"}}"#
            let response = try server.http("PUT", "/v1/catalog/register", body: body)
            #expect(response.status == 200, "\(response.status) \(String(decoding: response.body, as: UTF8.self))")
        }
        for server in servers {
            let nodes = try server.json("/v1/catalog/nodes?consistent") as? [[String: Any]] ?? []
            #expect(nodes.compactMap { $0["Node"] as? String } == ["n0", "n1", "n2"])
        }

        // A watcher parked on one server wakes when a write through another changes its service.
        let watcher = servers[2]
        let first200 = try watcher.http("GET", "/v1/health/service/web?consistent")
        let index = try #require(first200.headers["X-Consul-Index"].flatMap { UInt64($0) })
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var woken: HTTPClientResponse?
        nonisolated(unsafe) var wokenAt = Date.distantFuture
        let port = watcher.httpPort
        Thread.detachNewThread {
            var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 60)
            woken = try? client.request(method: "GET", path: "/v1/health/service/web?index=\(index)&wait=30s")
            wokenAt = Date()
            done.signal()
        }
        let critical = #"{"Node":"n0","Address":"10.0.0.0","Check":{"CheckID":"c0","Status":"critical","ServiceID":"web-0"}}"#
        Thread.sleep(forTimeInterval: 0.2)  // let the watcher park (it wakes either way)
        let sent = Date()
        #expect(try servers[0].http("PUT", "/v1/catalog/register", body: critical).status == 200)
        #expect(done.wait(timeout: .now() + 30) == .success)
        // A figure for the notes, not an assertion: write sent to the watcher answered.
        print("catalog cluster: a follower's health watcher answered \(Int(wokenAt.timeIntervalSince(sent) * 1000)) ms after the check update was sent")
        let entries = (woken?.body).flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [[String: Any]] } ?? []
        let statuses = entries.flatMap { ($0["Checks"] as? [[String: Any]] ?? []).compactMap { $0["Status"] as? String } }
        #expect(statuses.contains("critical"))
        #expect((woken?.headers["X-Consul-Index"].flatMap { UInt64($0) } ?? 0) > index)
    }
}

@Suite("Catalog through client agents", .serialized)
struct CatalogClientAgentTests {
    @Test func aServiceRegisteredThroughOneClientIsVisibleAndWatchableThroughAnother() throws {
        let server = try AgentProcess(node: "ccs1", server: true, extra: ["-bootstrap-expect", "1"])
        let join = ["-retry-join", "127.0.0.1:\(try server.serfLANPort())", "-retry-interval", "1s"]
        let clients = [try AgentProcess(node: "ccc1", server: false, extra: join),
                       try AgentProcess(node: "ccc2", server: false, extra: join)]
        defer { ([server] + clients).forEach { $0.stop() } }
        try poll("the clients to see the leader through the server", seconds: 60) {
            let leaders = Set(([server] + clients).map(\.leader))
            return leaders.count == 1 && leaders.first?.isEmpty == false
        }

        let body = #"{"Node":"ccc1","Address":"127.0.0.1","Service":{"Service":"api","Port":9000},"Check":{"CheckID":"api-ttl","Status":"passing","ServiceID":"api"}}"#
        let put = try clients[0].http("PUT", "/v1/catalog/register", body: body)
        #expect(put.status == 200, "\(String(decoding: put.body, as: UTF8.self))")
        let read = try clients[1].http("GET", "/v1/health/service/api?consistent")
        #expect(read.status == 200)
        let entries = try JSONSerialization.jsonObject(with: Data(read.body)) as? [[String: Any]] ?? []
        #expect(entries.count == 1)
        #expect((entries.first?["Service"] as? [String: Any])?["Port"] as? Int == 9000)
        let index = try #require(read.headers["X-Consul-Index"].flatMap { UInt64($0) })

        // A blocking query through client 2 returns when client 1 turns the check critical.
        // Other changes to the service's health wake it too (the leader adding the node's
        // serfHealth check once gossip reports ccc1), so like any Consul client it blocks again
        // from the index it got until it sees the critical status.
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var woken: HTTPClientResponse?
        let port = clients[1].httpPort
        Thread.detachNewThread {
            var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 60)
            var from = index
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                woken = try? client.request(method: "GET", path: "/v1/health/service/api?index=\(from)&wait=30s")
                guard let answer = woken, let next = answer.headers["X-Consul-Index"].flatMap({ UInt64($0) }) else { break }
                if String(decoding: answer.body, as: UTF8.self).contains(#""Status":"critical""#) { break }
                from = next
            }
            done.signal()
        }
        Thread.sleep(forTimeInterval: 0.2)
        let critical = #"{"Node":"ccc1","Address":"127.0.0.1","Check":{"CheckID":"api-ttl","Status":"critical","ServiceID":"api"}}"#
        #expect(try clients[0].http("PUT", "/v1/catalog/register", body: critical).status == 200)
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect((woken?.headers["X-Consul-Index"].flatMap { UInt64($0) } ?? 0) > index)
        let text = String(decoding: woken?.body ?? [], as: UTF8.self)
        let criticalStatus = #""Status":"critical""#
        #expect(text.contains(criticalStatus))
    }
}
