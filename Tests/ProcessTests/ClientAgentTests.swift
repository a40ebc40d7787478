// Client agents (no -server) on 127.0.0.1 forwarding KV and status requests to a 3-server
// cluster over the server port: writes through one client are visible through the other and
// the servers, a blocking query through a client returns on a change, and a client whose
// server is killed carries on through another. Every wait polls with a deadline.
import Foundation
import HTTP
import Testing

extension AgentProcess {
    /// The server this client agent's RPC is connected to now (its last "connected" log line).
    var rpcServerName: String? {
        let marker = "rpc: connected to server: "
        guard let range = output.text.range(of: marker, options: .backwards) else { return nil }
        let line = output.text[range.upperBound...].prefix { $0 != "\n" }
        guard let field = line.split(separator: " ").first(where: { $0.hasPrefix("server=") }) else { return nil }
        return String(field.dropFirst("server=".count))
    }

    func value(_ key: String, query: String = "") throws -> (value: String?, index: UInt64) {
        let response = try http("GET", "/v1/kv/\(key)\(query)")
        let index = response.headers["X-Consul-Index"].flatMap { UInt64($0) } ?? 0
        guard response.status == 200,
              let entries = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]],
              let encoded = entries.first?["Value"] as? String, let data = Data(base64Encoded: encoded) else { return (nil, index) }
        return (String(decoding: data, as: UTF8.self), index)
    }
}

@Suite("Client agents", .serialized)
struct ClientAgentTests {
    @Test func clientsForwardKVToTheServersAndFailOverWhenTheirServerIsKilled() throws {
        let started = Date()
        let first = try AgentProcess(node: "cs1", server: true, extra: ["-bootstrap-expect", "3"])
        let seed = "127.0.0.1:\(try first.serfLANPort())"
        let join = ["-retry-join", seed, "-retry-interval", "1s"]
        let servers = [first,
                       try AgentProcess(node: "cs2", server: true, extra: ["-bootstrap-expect", "3"] + join),
                       try AgentProcess(node: "cs3", server: true, extra: ["-bootstrap-expect", "3"] + join)]
        let clients = [try AgentProcess(node: "cc1", server: false, extra: join),
                       try AgentProcess(node: "cc2", server: false, extra: join)]
        defer { (servers + clients).forEach { $0.stop() } }

        // Both clients reach the cluster's leader through a server.
        try poll("the clients to see one leader through the servers", seconds: 60) {
            let leaders = Set((servers + clients).map(\.leader))
            return leaders.count == 1 && leaders.first?.isEmpty == false
        }
        try poll("client 1 to log the server it uses", seconds: 10) { clients[0].rpcServerName != nil }

        // A write through client 1 is visible through client 2 and every server.
        let put = try clients[0].http("PUT", "/v1/kv/shared", body: "from-c1")
        #expect(put.status == 200)
        #expect(put.body == Array("true".utf8))
        #expect(try clients[1].value("shared", query: "?consistent").value == "from-c1")
        for server in servers { #expect(try server.consistentValue("shared") == "from-c1") }
        let read = try clients[1].http("GET", "/v1/kv/shared")
        #expect(read.headers["X-Consul-KnownLeader"] == "true")
        #expect(read.headers["X-Consul-Index"] != nil)
        #expect(try clients[1].http("GET", "/v1/kv/missing").status == 404)
        #expect(try clients[0].http("GET", "/v1/kv/shared?dc=elsewhere").status == 500)  // the server answers for ?dc

        // A blocking query through client 2 parks on a server and returns once the key changes;
        // other requests through the same client flow meanwhile.
        let before = try clients[1].value("shared").index
        let port = clients[1].httpPort
        let blocked = Unsafe<HTTPClientResponse?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 90)
            blocked.value = try? client.request(method: "GET", path: "/v1/kv/shared?index=\(before)&wait=60s")
            done.signal()
        }
        usleep(300_000)
        #expect(try clients[1].http("GET", "/v1/status/leader").status == 200)
        #expect(done.wait(timeout: .now()) == .timedOut)  // still parked
        #expect(try clients[0].http("PUT", "/v1/kv/shared", body: "changed").status == 200)
        #expect(done.wait(timeout: .now() + 60) == .success)
        let answer = try #require(blocked.value)
        #expect(answer.status == 200)
        #expect((answer.headers["X-Consul-Index"].flatMap { UInt64($0) } ?? 0) > before)
        #expect(String(decoding: answer.body, as: UTF8.self).contains(Data("changed".utf8).base64EncodedString()))

        // kill -9 the server client 1 uses: its next requests go through another server.
        let used = try #require(clients[0].rpcServerName)
        let victim = try #require(servers.first { $0.process.arguments?.contains(used) == true })
        victim.kill9()
        let survivors = servers.filter { $0 !== victim }
        var reread: String?
        try poll("client 1 to read through another server", seconds: 30) {
            reread = try clients[0].value("shared").value
            return reread != nil
        }
        #expect(reread == "changed")
        var wrote = false
        try poll("client 1 to write through another server", seconds: 30) {
            wrote = try clients[0].http("PUT", "/v1/kv/after-kill", body: "ok").status == 200
            return wrote
        }
        #expect(try survivors[0].consistentValue("after-kill") == "ok")
        #expect(try clients[1].value("after-kill", query: "?consistent").value == "ok")
        // Its log names the server it moved to (read from the child's pipe: poll, it may lag).
        try poll("client 1 to log its new server", seconds: 10) { (clients[0].rpcServerName ?? used) != used }
        print("client agents: test took \(Date().timeIntervalSince(started))s")
    }

    @Test func aClientWithNoServersAnswersNoKnownConsulServers() throws {
        let client = try AgentProcess(node: "lonely", server: false)
        defer { client.stop() }
        let kv = try client.http("GET", "/v1/kv/anything")
        #expect(kv.status == 500)
        #expect(String(decoding: kv.body, as: UTF8.self) == "No known Consul servers")
        #expect(try client.http("GET", "/v1/status/leader").status == 500)
        #expect(try client.http("GET", "/v1/agent/self").status == 200)  // the agent's own endpoints stay local
    }
}

/// Carries a value across threads; written before a semaphore signal, read after the wait.
final class Unsafe<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}
