// Client-agent RPC end to end in one process: a real server port (RaftTransport) handing
// connections to RPCServer, an RPCClient forwarding in-process requests to it. Checks
// multiplexing with answers out of order, cancellation reaching the server, and failover.
import EventLoop
import Foundation
import Glibc
import HTTP
import Logging
import Replication
import Testing
import TestSupport
@testable import Agent

/// Carries a value across threads; tests only touch it on the loop thread or after a wait.
final class Unsafe<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// Runs `body` on `loop`'s thread and returns its result.
func onLoop<T>(_ loop: Loop, _ body: @escaping () throws -> T) throws -> T {
    let result = Unsafe<Result<T, Error>?>(nil)
    let work = Unsafe(body)
    let done = DispatchSemaphore(value: 0)
    loop.execute {
        result.value = Result { try work.value() }
        done.signal()
    }
    guard done.wait(timeout: .now() + 30) == .success else { throw CancellationError() }
    return try result.value!.get()
}

/// One server port with an RPC server whose handler the test drives.
private final class FakeServer {
    let name: String
    let transport: RaftTransport
    let rpc: RPCServer
    var received: [HTTPResponder] = []
    /// Requests whose path contains "hold" are kept unanswered while true.
    var holding = false

    init(loop: Loop, name: String) throws {
        self.name = name
        var logger = Logger(label: "test.rpc")
        logger.logLevel = .critical
        transport = try RaftTransport(loop: loop, host: "127.0.0.1", port: 0, logger: logger)
        var config = RPCServerConfig()
        config.maxInFlightPerConnection = 8
        var me: FakeServer?
        rpc = RPCServer(loop: loop, config: config) { responder in me?.handle(responder) }
        me = self
        transport.streamHandlers[StreamKind.clientRPC] = { [weak rpc] connection, first, decoder in
            rpc?.accept(connection, firstFrame: first, decoder: decoder)
        }
    }

    func handle(_ responder: HTTPResponder) {
        received.append(responder)
        if responder.request.path.contains("hold") && holding { return }
        if responder.request.path.contains("park") { return }
        var response = HTTPResponse.text(status: 200, name)
        response.headers.add("X-Consul-Index", "7")
        responder.respond(response)
    }

    var known: KnownServer {
        KnownServer(name: name, id: "", datacenter: "dc1", gossipAddress: "127.0.0.1:1", serverPort: transport.port,
                    bootstrapExpect: 0, bootstrap: false)
    }

    func stop() {
        rpc.close()
        transport.close()
    }
}

/// A forwarded request's answer, filled on the loop thread.
private final class Answer {
    var response: HTTPResponse?
    let responder: HTTPResponder
    init(_ method: String, _ target: String, headers: HTTPHeaders = [:], body: [UInt8] = [], answer: Unsafe<[String: Answer]>, key: String) throws {
        let request = try HTTPRequest.make(method: method, target: target, headers: headers, body: body).get()
        var me: Answer?
        responder = HTTPResponder(request: request) { response in me?.response = response }
        me = self
        answer.value[key] = self
    }
}

@Suite("Client agent RPC", .serialized)
struct RPCForwardingTests {
    @Test func requestsAreMultiplexedAnsweredOutOfOrderAndCancellationReachesTheServer() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let answers = Unsafe<[String: Answer]>([:])
        let state = try onLoop(loop) { () -> Unsafe<(FakeServer, RPCClient)> in
            let server = try FakeServer(loop: loop, name: "s1")
            let client = RPCClient(loop: loop)
            client.setServers([server.known])
            for (key, method, target) in [("block", "GET", "/v1/kv/park?index=5&wait=1m"), ("b", "GET", "/v1/kv/park-b?recurse"),
                                          ("c", "PUT", "/v1/kv/park-c?cas=0")] {
                let answer = try Answer(method, target, headers: ["X-Consul-Token": "secret", "X-Other": "dropped"],
                                        body: key == "c" ? Array("value".utf8) : [], answer: answers, key: key)
                client.forward(answer.responder)
            }
            return Unsafe((server, client))
        }
        let (server, client) = state.value
        #expect(waitFor { try onLoop(loop) { server.received.count == 3 } })
        try onLoop(loop) {
            let byPath = Dictionary(uniqueKeysWithValues: server.received.map { ($0.request.path, $0) })
            let put = try #require(byPath["/v1/kv/park-c"])
            #expect(put.request.method == "PUT")
            #expect(put.request.body == Array("value".utf8))
            #expect(put.request.query.first("cas") == "0")
            #expect(put.request.headers["X-Consul-Token"] == "secret")
            #expect(put.request.headers["X-Other"] == nil)
            #expect(byPath["/v1/kv/park"]?.request.query.first("index") == "5")
            // Answer the last first; the blocking one stays parked.
            var response = HTTPResponse.json(Array("true".utf8))
            response.headers.add("X-Consul-Index", "42")
            put.respond(response)
            byPath["/v1/kv/park-b"]?.respond(.text(status: 404, ""))
        }
        #expect(waitFor { try onLoop(loop) { answers.value["b"]?.response != nil && answers.value["c"]?.response != nil } })
        try onLoop(loop) {
            #expect(answers.value["c"]?.response?.status == 200)
            #expect(answers.value["c"]?.response?.body == Array("true".utf8))
            #expect(answers.value["c"]?.response?.headers["X-Consul-Index"] == "42")
            #expect(answers.value["b"]?.response?.status == 404)
            #expect(answers.value["block"]?.response == nil)
            #expect(server.rpc.inFlightCount == 1)
            // The caller of the blocking query goes away: the server's request is cancelled.
            answers.value["block"]?.responder.cancel()
        }
        #expect(waitFor { try onLoop(loop) { server.rpc.inFlightCount == 0 } })
        try onLoop(loop) {
            #expect(server.received.first { $0.request.path == "/v1/kv/park" }?.isCancelled == true)
            #expect(client.inFlightCount == 0)
            // A parked request, then the client agent goes away: the server cancels it too.
            let answer = try Answer("GET", "/v1/kv/park-late?index=9", answer: answers, key: "late")
            client.forward(answer.responder)
        }
        #expect(waitFor { try onLoop(loop) { server.rpc.inFlightCount == 1 } })
        try onLoop(loop) { client.close() }
        #expect(waitFor { try onLoop(loop) { server.rpc.inFlightCount == 0 && server.rpc.connectionCount == 0 } })
        try onLoop(loop) {
            #expect(server.received.last?.isCancelled == true)
            #expect(answers.value["late"]?.response?.status == 500)
            server.stop()
        }
    }

    @Test func aFailedServerIsRotatedOutReadsRetryElsewhereAndSentWritesFail() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let answers = Unsafe<[String: Answer]>([:])
        let state = try onLoop(loop) { () -> Unsafe<([String: FakeServer], RPCClient)> in
            let a = try FakeServer(loop: loop, name: "a"), b = try FakeServer(loop: loop, name: "b")
            let client = RPCClient(loop: loop)
            client.setServers([a.known, b.known])
            let first = try Answer("GET", "/v1/status/leader", answer: answers, key: "first")
            client.forward(first.responder)
            return Unsafe((["a": a, "b": b], client))
        }
        let (servers, client) = state.value
        #expect(waitFor { try onLoop(loop) { answers.value["first"]?.response != nil } })
        let (front, other) = try onLoop(loop) { () -> (String, String) in
            let front = String(decoding: answers.value["first"]?.response?.body ?? [], as: UTF8.self)
            #expect(front == client.currentServer?.name)
            return (front, front == "a" ? "b" : "a")
        }
        try onLoop(loop) {
            servers[front]?.holding = true
            for (key, method) in [("read", "GET"), ("write", "PUT")] {
                let answer = try Answer(method, "/v1/kv/hold", answer: answers, key: key)
                client.forward(answer.responder)
            }
        }
        #expect(waitFor { try onLoop(loop) { servers[front]!.rpc.inFlightCount == 2 } })
        // The server the client uses dies with a read and a write in flight.
        try onLoop(loop) { servers[front]?.stop() }
        #expect(waitFor { try onLoop(loop) { answers.value["read"]?.response != nil && answers.value["write"]?.response != nil } })
        try onLoop(loop) {
            #expect(answers.value["read"]?.response?.status == 200)
            #expect(answers.value["read"]?.response.map { String(decoding: $0.body, as: UTF8.self) } == other)
            let write = answers.value["write"]?.response
            #expect(write?.status == 500)
            #expect(write.map { String(decoding: $0.body, as: UTF8.self) }?.hasPrefix("rpc error making call") == true)
            #expect(client.currentServer?.name == other)
            #expect(client.failovers == 1)
            let next = try Answer("PUT", "/v1/kv/after", answer: answers, key: "after")
            client.forward(next.responder)
            // RPC serves only the forwarded paths, never a server agent's own endpoints.
            let own = try Answer("PUT", "/v1/agent/leave", answer: answers, key: "own")
            client.forward(own.responder)
        }
        #expect(waitFor { try onLoop(loop) { answers.value["after"]?.response != nil && answers.value["own"]?.response != nil } })
        try onLoop(loop) {
            #expect(answers.value["after"]?.response.map { String(decoding: $0.body, as: UTF8.self) } == other)
            #expect(answers.value["own"]?.response?.status == 404)
            #expect(servers[other]?.received.contains { $0.request.path == "/v1/agent/leave" } == false)
            client.close()
            servers[other]?.stop()
        }
    }

    /// With a short reuse time the client moves between servers; a request parked on the
    /// server it left is still answered there (the old connection drains, then closes).
    @Test func rebalancingMovesToOtherServersAndDrainsTheOldConnection() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let answers = Unsafe<[String: Answer]>([:])
        let state = try onLoop(loop) { () -> Unsafe<([FakeServer], RPCClient)> in
            let servers = [try FakeServer(loop: loop, name: "a"), try FakeServer(loop: loop, name: "b")]
            var config = RPCClientConfig()
            config.minReuseMilliseconds = 20
            let client = RPCClient(loop: loop, config: config)
            client.setServers(servers.map(\.known))
            client.forward(try Answer("GET", "/v1/kv/park-long?index=3", answer: answers, key: "parked").responder)
            return Unsafe((servers, client))
        }
        let (servers, client) = state.value
        var round = 0
        let spread = waitFor(20) {
            round += 1
            try onLoop(loop) { client.forward(try Answer("GET", "/v1/kv/k", answer: answers, key: "r\(round)").responder) }
            usleep(10_000)
            return try onLoop(loop) { servers.allSatisfy { $0.received.contains { $0.request.path == "/v1/kv/k" } } }
        }
        #expect(spread)
        try onLoop(loop) {
            #expect(answers.value["parked"]?.response == nil)
            let parked = try #require(servers.flatMap(\.received).first { $0.request.path == "/v1/kv/park-long" })
            #expect(!parked.isCancelled)
            parked.respond(.text(status: 200, "late"))
        }
        #expect(waitFor { try onLoop(loop) { answers.value["parked"]?.response?.body == Array("late".utf8) } })
        // Connections left behind close once drained: at most one per server remains.
        #expect(waitFor { try onLoop(loop) { servers.allSatisfy { $0.rpc.connectionCount <= 1 } } })
        try onLoop(loop) {
            #expect(client.failovers == 0)
            client.close()
            servers.forEach { $0.stop() }
        }
    }

    /// Random and mutated frames after a valid hello, over real sockets: the server closes
    /// the offenders' connections and keeps serving.
    @Test func garbageFromManyClientsNeverTakesTheServerDown() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let server = try onLoop(loop) { Unsafe(try FakeServer(loop: loop, name: "s")) }.value
        let port = try onLoop(loop) { server.transport.port }
        // RPC_GARBAGE_SEED=<seed> replays a failing run.
        let seed = ProcessInfo.processInfo.environment["RPC_GARBAGE_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        var g = SeededGenerator(seed: seed)
        let valid = try RPCWire.encode(RPCRequest(id: 1, method: "GET", target: "/v1/kv/a?recurse",
                                                  headers: ["X-Consul-Token": "t"], body: Array("body".utf8)))
        for _ in 0..<100 {
            let socket = try HangUpSocket(port: port)
            var bytes = Framing.frame(RPCWire.hello())
            for _ in 0..<Int.random(in: 1...3, using: &g) {
                var payload = valid
                if Bool.random(using: &g) {
                    payload = (0..<Int.random(in: 1...64, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
                } else {
                    for _ in 0..<Int.random(in: 1...4, using: &g) {
                        payload[Int.random(in: 0..<payload.count, using: &g)] = UInt8.random(in: 0...255, using: &g)
                    }
                }
                bytes += Framing.frame(payload)
            }
            if Bool.random(using: &g) {   // a cut frame, then noise
                bytes = Array(bytes.prefix(Int.random(in: 6...bytes.count, using: &g)))
                bytes += (0..<Int.random(in: 0...8, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
            }
            socket.send(bytes)
            socket.close()
        }
        // Every connection got past its hello (6 bytes, never cut) and was then closed.
        let settled = waitFor { try onLoop(loop) { server.rpc.acceptedConnections == 100 && server.rpc.connectionCount == 0 } }
        let counts = try onLoop(loop) { (server.rpc.acceptedConnections, server.rpc.connectionCount) }
        #expect(settled, "seed \(seed): accepted \(counts.0), open \(counts.1)")
        let answers = Unsafe<[String: Answer]>([:])
        let client = try onLoop(loop) { () -> Unsafe<RPCClient> in
            let client = RPCClient(loop: loop)
            client.setServers([server.known])
            client.forward(try Answer("GET", "/v1/kv/still-alive", answer: answers, key: "alive").responder)
            return Unsafe(client)
        }
        #expect(waitFor { try onLoop(loop) { answers.value["alive"]?.response?.status == 200 } }, "seed \(seed)")
        try onLoop(loop) {
            client.value.close()
            server.stop()
        }
    }

    @Test func withNoServerOrOnlyDeadOnesTheClientAnswersConsulsErrors() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let answers = Unsafe<[String: Answer]>([:])
        let client = try onLoop(loop) { () -> Unsafe<RPCClient> in
            let client = RPCClient(loop: loop)
            let none = try Answer("GET", "/v1/kv/a", answer: answers, key: "none")
            client.forward(none.responder)
            // A server whose port refuses connections.
            let dead = try FakeServer(loop: loop, name: "dead")
            let known = dead.known
            dead.stop()
            client.setServers([known])
            let refused = try Answer("GET", "/v1/kv/a", answer: answers, key: "refused")
            client.forward(refused.responder)
            return Unsafe(client)
        }
        #expect(waitFor { try onLoop(loop) { answers.value["refused"]?.response != nil } })
        try onLoop(loop) {
            #expect(answers.value["none"]?.response?.status == 500)
            #expect(answers.value["none"]?.response?.body == Array("No known Consul servers".utf8))
            let refused = answers.value["refused"]?.response
            #expect(refused?.status == 500)
            #expect(refused.map { String(decoding: $0.body, as: UTF8.self) }?.hasPrefix("rpc error getting client") == true)
            #expect(client.value.retries == 1)
            client.value.close()
        }
    }
}

private func waitFor(_ seconds: Double = 20, _ condition: () throws -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if (try? condition()) == true { return true }
        usleep(5_000)
    }
    return (try? condition()) == true
}

@Suite("Client agent forwarding between agents", .serialized)
struct ClientAgentForwardingTests {
    @Test func aBlockingQueryThroughAClientIsReleasedOnTheServerWhenItsCallerHangsUp() throws {
        let server = try TestAgent { $0.nodeName = "fwd-server" }
        defer { server.stop() }
        let seed = "127.0.0.1:\(server.agent.serfLANPort)"
        let client = try TestAgent {
            $0.nodeName = "fwd-client"; $0.server = false; $0.bootstrap = false
            $0.retryJoin = [seed]; $0.retryIntervalMs = 500
        }
        defer { client.stop() }
        try pollUntil("the client to reach the server") { try client.request("GET", "/v1/status/leader").status == 200 }
        #expect(try client.request("PUT", "/v1/kv/watched", body: Array("1".utf8)).text == "true")
        let index = try #require(try client.request("GET", "/v1/kv/watched").consulIndex)

        // A caller parks a blocking query through the client, then hangs up.
        let socket = try HangUpSocket(port: client.port)
        socket.send("GET /v1/kv/watched?index=\(index)&wait=5m HTTP/1.1\r\nHost: x\r\n\r\n")
        try pollUntil("the query to park on the server") { server.agent.parkedQueryCount == 1 }
        #expect(client.agent.parkedQueryCount == 0)   // the client agent parks nothing itself
        socket.close()
        try pollUntil("the server to release the abandoned query") { server.agent.parkedQueryCount == 0 }

        // RPC reaches only the forwarded paths: a server's own endpoints stay its own.
        #expect(try client.request("GET", "/v1/agent/self").status == 200)
        let internalAnswer = Unsafe<(Int, [UInt8])?>(nil)
        let done = DispatchSemaphore(value: 0)
        client.agent.internalCall(method: "GET", pathAndQuery: "/v1/kv/watched?raw", body: []) { status, body in
            internalAnswer.value = (status, body)
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 20) == .success)
        #expect(internalAnswer.value?.0 == 200)
        #expect(internalAnswer.value?.1 == Array("1".utf8))
        // On a server the same call is served locally; a bad target is the parser's 400.
        func call(_ agent: Agent, _ method: String, _ target: String, _ body: String = "") -> (Int, String)? {
            let answer = Unsafe<(Int, String)?>(nil)
            let done = DispatchSemaphore(value: 0)
            agent.internalCall(method: method, pathAndQuery: target, body: Array(body.utf8)) { status, body in
                answer.value = (status, String(decoding: body, as: UTF8.self))
                done.signal()
            }
            _ = done.wait(timeout: .now() + 20)
            return answer.value
        }
        #expect(call(server.agent, "PUT", "/v1/kv/internal", "from-server")?.0 == 200)
        #expect(call(client.agent, "GET", "/v1/kv/internal?raw")?.1 == "from-server")
        #expect(call(client.agent, "GET", "/v1/kv/a%zz")?.0 == 400)
        #expect(call(client.agent, "GET", "/v1/agent/self")?.0 == 200)   // local on the client
    }
}

/// A blocking client socket, to hang up mid-request.
private struct HangUpSocket {
    let fd: Int32
    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { Glibc.close(fd); throw CancellationError() }
    }
    func send(_ text: String) { send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
    func close() { Glibc.close(fd) }
}
