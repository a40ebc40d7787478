// KV over HTTP against a real agent in this process (loopback, blocking client, keep-alive),
// plus micro benchmarks of the pieces on that path: KV command codec, request parsing and
// response serialization. Each agent lives from its benchmark's setup to its teardown.
import Agent
import Benchmark
import BenchmarkSupport
import Foundation
import HTTP
import Logging
import StateStore

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: BenchmarkMetric.default,
        maxDuration: .seconds(3),
        maxIterations: 20_000
    )

    // MARK: KV over HTTP, one connection

    let putAgent = FixtureSlot<AgentFixture>()
    Benchmark("HTTP KV PUT unique key, 256 B (fsync before reply)") { _ in
        let fixture = putAgent.fixture
        fixture.putCount += 1
        fixture.expect(try fixture.client.request(method: "PUT", path: "/v1/kv/bench/put/\(fixture.putCount)",
                                                   body: value256), body: "true")
    } setup: {
        putAgent.value = try AgentFixture()
    } teardown: {
        putAgent.value = nil
    }

    let getAgent = FixtureSlot<AgentFixture>()
    Benchmark("HTTP KV GET ?raw, 256 B value") { _ in
        let fixture = getAgent.fixture
        fixture.expect(try fixture.client.request(method: "GET", path: "/v1/kv/bench/get?raw"), bodyBytes: 256)
    } setup: {
        getAgent.value = try AgentFixture(preload: ["bench/get"])
    } teardown: {
        getAgent.value = nil
    }

    let jsonAgent = FixtureSlot<AgentFixture>()
    Benchmark("HTTP KV GET JSON, 256 B value") { _ in
        let fixture = jsonAgent.fixture
        fixture.expect(try fixture.client.request(method: "GET", path: "/v1/kv/bench/get"))
    } setup: {
        jsonAgent.value = try AgentFixture(preload: ["bench/get"])
    } teardown: {
        jsonAgent.value = nil
    }

    let listAgent = FixtureSlot<AgentFixture>()
    Benchmark("HTTP KV GET ?recurse, 100 keys x 256 B") { _ in
        let fixture = listAgent.fixture
        fixture.expect(try fixture.client.request(method: "GET", path: "/v1/kv/bench/list/?recurse"))
    } setup: {
        listAgent.value = try AgentFixture(preload: (0..<100).map { "bench/list/key-\($0)" })
    } teardown: {
        listAgent.value = nil
    }

    // MARK: KV PUT from N connections at once (group commit)

    for clients in [16, 64] {
        let crewAgent = FixtureSlot<AgentFixture>()
        let crewSlot = FixtureSlot<PutCrew>()
        Benchmark("HTTP KV PUT, \(clients) concurrent clients (1 iteration = \(clients) PUTs)",
                  configuration: .init(metrics: BenchmarkMetric.default + [putsPerSecond])) { benchmark in
            let started = ContinuousClock.now
            crewSlot.fixture.round()
            let elapsed = ContinuousClock.now - started
            benchmark.measurement(putsPerSecond, perSecond(clients, elapsed))
        } setup: {
            let fixture = try AgentFixture()
            crewAgent.value = fixture
            crewSlot.value = PutCrew(clients: clients, port: fixture.port)
        } teardown: {
            crewSlot.value?.stop()
            crewSlot.value = nil
            crewAgent.value = nil
        }
    }

    // MARK: Micro benchmarks on the request path

    let micro = Benchmark.Configuration(metrics: BenchmarkMetric.default, scalingFactor: .kilo,
                                        maxDuration: .seconds(2), maxIterations: 10_000)
    let command = KVCommand.set(key: "service/web/config", value: value256, flags: 0)
    let encodedCommand = command.encoded()

    Benchmark("KVCommand.set encoded(), 256 B value", configuration: micro) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(command.encoded())
        }
    }

    Benchmark("KVCommand init(decoding:) set, 256 B value", configuration: micro) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try KVCommand(decoding: encodedCommand))
        }
    }

    let getRequest = Array("""
        GET /v1/kv/service/web/config?raw HTTP/1.1\r
        Host: 127.0.0.1:8500\r
        User-Agent: Go-http-client/1.1\r
        Accept-Encoding: gzip\r
        \r

        """.utf8)
    let putRequest = Array("""
        PUT /v1/kv/service/web/config HTTP/1.1\r
        Host: 127.0.0.1:8500\r
        User-Agent: Go-http-client/1.1\r
        Content-Length: 256\r
        Content-Type: application/octet-stream\r
        Accept-Encoding: gzip\r
        \r

        """.utf8) + value256

    // One parser per connection, as the server keeps it: every feed is one whole request.
    for (name, bytes) in [("KV GET ?raw", getRequest), ("KV PUT 256 B body", putRequest)] {
        let parserSlot = FixtureSlot<HTTPRequestParser>()
        Benchmark("HTTPRequestParser.feed \(name), keep-alive connection", configuration: micro) { benchmark in
            let parser = parserSlot.fixture
            for _ in benchmark.scaledIterations {
                let result = parser.feed(bytes)
                precondition(result.requests.count == 1 && result.error == nil, "parser: \(result)")
                blackHole(result)
            }
        } setup: {
            parserSlot.value = HTTPRequestParser()
        } teardown: {
            parserSlot.value = nil
        }
    }

    // What the agent sends for a KV GET: the X-Consul-* headers and one JSON DirEntry.
    var response = HTTPResponse.json(status: 200, Array(#"""
        [{"LockIndex":0,"Key":"service/web/config","Flags":0,"Value":"\#(Base64.encode(value256))","CreateIndex":12,"ModifyIndex":12}]
        """#.utf8))
    response.headers.add("X-Consul-Index", "12")
    response.headers.add("X-Consul-KnownLeader", "true")
    response.headers.add("X-Consul-LastContact", "0")
    response.headers.add("X-Consul-Effective-Consistency", "leader")
    let kvResponse = response

    Benchmark("HTTPResponse.serialize KV GET JSON, into a reused buffer", configuration: micro) { benchmark in
        var out: [UInt8] = []
        for _ in benchmark.scaledIterations {
            out.removeAll(keepingCapacity: true)
            kvResponse.serialize(keepAlive: true, into: &out)
            blackHole(out)
        }
    }
}

let putsPerSecond = BenchmarkMetric.custom("puts/s", polarity: .prefersLarger, useScalingFactor: false)

/// The agent makes its own loggers (replication, HTTP) through the global logging system: keep
/// their per-start info lines out of the benchmark's output. Bootstrapped once per process.
let agentLogsAtErrorLevel: Void = LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .error
    return handler
}

/// A server agent on 127.0.0.1 with an ephemeral HTTP port and a temporary data dir (as
/// Tests/AgentTests/TestAgent.swift), and one kept-alive client. Released → stopped, removed.
final class AgentFixture: @unchecked Sendable {
    let dataDir = NSTemporaryDirectory() + "conclave-bench-agent-" + UUID().uuidString
    let agent: Agent
    var client: HTTPClient
    var putCount = 0
    var port: Int { agent.httpPort }

    /// `preload`: keys written with a 256-byte value before the benchmark starts.
    init(preload: [String] = []) throws {
        _ = agentLogsAtErrorLevel
        var config = AgentConfig()
        config.server = true
        config.bootstrap = true
        config.nodeName = "bench-node"
        config.dataDir = dataDir
        config.clientAddr = "127.0.0.1"
        config.bindAddr = "127.0.0.1"
        config.ports.http = 0
        // Raft and gossip on loopback and kernel-chosen ports, so runs never collide.
        config.ports.server = 0
        config.ports.serfLAN = 0
        config.ports.serfWAN = -1
        var logger = Logger(label: "bench-agent")
        logger.logLevel = .error
        agent = try Agent(config: config, logger: logger)
        try agent.start()
        client = HTTPClient(host: "127.0.0.1", port: agent.httpPort, timeoutSeconds: 30)
        for key in preload {
            expect(try client.request(method: "PUT", path: "/v1/kv/\(key)", body: value256), body: "true")
        }
    }

    deinit {
        client.close()
        agent.shutdown()
        agent.waitUntilStopped()
        try? FileManager.default.removeItem(atPath: dataDir)
    }

    /// A benchmark of a failing request would measure the wrong thing: stop loudly instead.
    func expect(_ response: HTTPClientResponse, body: String? = nil, bodyBytes: Int? = nil) {
        precondition(response.status == 200, "HTTP \(response.status): \(String(decoding: response.body, as: UTF8.self))")
        if let body { precondition(response.body.elementsEqual(body.utf8), "unexpected body") }
        if let bodyBytes { precondition(response.body.count == bodyBytes, "body of \(response.body.count) bytes") }
    }
}

/// `clients` threads, each with its own kept-alive connection, that each send one PUT of a
/// unique key per `round()`. The caller's thread starts a round and waits for all of it.
final class PutCrew: @unchecked Sendable {
    private let starts: [DispatchSemaphore]
    private let finished = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var stopping = false   // under `lock`
    private var failure: String?   // under `lock`

    init(clients: Int, port: Int) {
        starts = (0..<clients).map { _ in DispatchSemaphore(value: 0) }
        for (thread, start) in starts.enumerated() {
            Thread { [self] in run(thread: thread, port: port, start: start) }.start()
        }
    }

    func round() {
        for start in starts { start.signal() }
        for _ in starts { finished.wait() }
        lock.lock(); defer { lock.unlock() }
        if let failure { preconditionFailure("concurrent PUT failed: \(failure)") }
    }

    /// Ends every thread and waits until each has closed its connection.
    func stop() {
        lock.lock(); stopping = true; lock.unlock()
        round()
    }

    private func run(thread: Int, port: Int, start: DispatchSemaphore) {
        var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 30)
        var sent = 0
        while true {
            start.wait()
            lock.lock(); let stop = stopping; lock.unlock()
            if stop { break }
            sent += 1
            do {
                let response = try client.request(method: "PUT", path: "/v1/kv/bench/crew/\(thread)/\(sent)",
                                                  body: value256)
                if response.status != 200 { record("HTTP \(response.status)") }
            } catch {
                record("\(error)")
            }
            finished.signal()
        }
        client.close()
        finished.signal()
    }

    private func record(_ message: String) {
        lock.lock(); defer { lock.unlock() }
        failure = failure ?? message
    }
}
