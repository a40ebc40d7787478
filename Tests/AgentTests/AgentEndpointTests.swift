// /v1/status, /v1/agent and / as clients probe them; plus restart and leave behaviour.
import Foundation
import HTTP
import Testing

@Suite("Status and agent endpoints")
struct AgentEndpointTests {
    @Test func statusLeaderAndPeersNameThisServer() throws {
        // A kernel-chosen server port (a fixed one collides with other test runs on the
        // machine); the agent advertises it in its `port` tag.
        let agent = try TestAgent { $0.bindAddr = "127.0.0.1" }
        defer { agent.stop() }
        let member = try #require(try agent.request("GET", "/v1/agent/self").json as? [String: Any])["Member"] as? [String: Any]
        let port = try #require((member?["Tags"] as? [String: String])?["port"])
        #expect(port != "0")
        let leader = try agent.request("GET", "/v1/status/leader")
        #expect(leader.status == 200)
        #expect(leader.json as? String == "127.0.0.1:\(port)")
        #expect(try agent.request("GET", "/v1/status/peers").json as? [String] == ["127.0.0.1:\(port)"])
    }

    @Test func agentSelfHasConsulShape() throws {
        let agent = try TestAgent { $0.datacenter = "east"; $0.nodeName = "node-7" }
        defer { agent.stop() }
        let response = try agent.request("GET", "/v1/agent/self")
        #expect(response.status == 200)
        let body = try #require(response.json as? [String: Any])
        let config = try #require(body["Config"] as? [String: Any])
        #expect(config["Datacenter"] as? String == "east")
        #expect(config["NodeName"] as? String == "node-7")
        #expect(config["Server"] as? Bool == true)
        let version = try #require(config["Version"] as? String)
        #expect(version.split(separator: ".").allSatisfy { Int($0) != nil })
        #expect(UUID(uuidString: config["NodeID"] as? String ?? "") != nil)
        let member = try #require(body["Member"] as? [String: Any])
        #expect(member["Name"] as? String == "node-7")
        #expect((member["Tags"] as? [String: String])?["dc"] == "east")
        #expect(body["Stats"] is [String: Any])
    }

    @Test func nodeIDSurvivesRestart() throws {
        let dir = NSTemporaryDirectory() + "/conclave-nodeid-" + UUID().uuidString
        let first = try TestAgent(dataDir: dir)
        let id1 = ((try first.request("GET", "/v1/agent/self").json as? [String: Any])?["Config"] as? [String: Any])?["NodeID"] as? String
        first.stop(removeData: false)
        let second = try TestAgent(dataDir: dir)
        defer { second.stop() }
        let id2 = ((try second.request("GET", "/v1/agent/self").json as? [String: Any])?["Config"] as? [String: Any])?["NodeID"] as? String
        #expect(id1 != nil)
        #expect(id1 == id2)
    }

    @Test func rootAnswers2xxAndUnknownPathsAre404() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("GET", "/").status == 200)
        #expect(try agent.request("GET", "/v1/nope").status == 404)
        #expect(try agent.request("POST", "/v1/status/leader").status == 405)
        #expect(try agent.request("GET", "/v1/agent/leave").status == 405)
    }

    @Test func writesSurviveAGracefulRestart() throws {
        let dir = NSTemporaryDirectory() + "/conclave-restart-" + UUID().uuidString
        let first = try TestAgent(dataDir: dir)
        for i in 0..<50 { _ = try first.request("PUT", "/v1/kv/r/\(i)", body: Array("value-\(i)".utf8)) }
        let indexBefore = try #require(try first.request("GET", "/v1/kv/r/0").consulIndex)
        first.stop(removeData: false)
        let second = try TestAgent(dataDir: dir)
        defer { second.stop() }
        #expect(try second.request("GET", "/v1/kv/r/?recurse").entries.count == 50)
        #expect(try second.request("GET", "/v1/kv/r/49?raw").text == "value-49")
        #expect(try second.request("GET", "/v1/kv/r/0").consulIndex == indexBefore)
        // New writes continue the index sequence.
        _ = try second.request("PUT", "/v1/kv/r/new", body: [1])
        #expect((try second.request("GET", "/v1/kv/r/new").consulIndex ?? 0) > indexBefore)
    }

    @Test func secondAgentOnTheSameDataDirIsRefused() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(throws: (any Error).self) { _ = try TestAgent(dataDir: agent.dataDir) }
    }

    @Test func leaveStopsTheAgent() throws {
        let agent = try TestAgent()
        let response = try agent.request("PUT", "/v1/agent/leave")
        #expect(response.status == 200)
        let stopped = DispatchSemaphore(value: 0)
        Thread.detachNewThread { agent.agent.waitUntilStopped(); stopped.signal() }
        #expect(stopped.wait(timeout: .now() + 10) == .success)
        try? FileManager.default.removeItem(atPath: agent.dataDir)
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/one", body: Array("1".utf8))
        _ = try agent.request("PUT", "/v1/kv/two", body: Array("2".utf8))
        // A PUT between two GETs: the write's answer comes later than the read's would,
        // yet every answer must come back in request order.
        let raw = "GET /v1/kv/one?raw HTTP/1.1\r\nHost: x\r\n\r\n"
            + "PUT /v1/kv/three HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n3"
            + "GET /v1/kv/two?raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        let reply = try RawSocket.exchange(port: agent.port, Array(raw.utf8))
        let text = String(decoding: reply, as: UTF8.self)
        let bodies = text.components(separatedBy: "\r\n\r\n").dropFirst().map { String($0.prefix(4)) }
        #expect(bodies.count == 3)
        #expect(bodies.first?.hasPrefix("1") == true)
        #expect(bodies.dropFirst().first?.hasPrefix("true") == true)
        #expect(bodies.last?.hasPrefix("2") == true)
    }

    @Test func malformedRequestGets400AndTheAgentKeepsServing() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let reply = try RawSocket.exchange(port: agent.port, Array("GARBAGE\u{1}\r\n\r\n".utf8))
        #expect(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 400"))
        #expect(try agent.request("GET", "/v1/status/leader").status == 200)
    }
}

/// Writes bytes to the agent and reads until it closes the connection.
enum RawSocket {
    static func exchange(port: Int, _ bytes: [UInt8]) throws -> [UInt8] {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            reply.append(contentsOf: buffer[0..<n])
        }
        return reply
    }
}
