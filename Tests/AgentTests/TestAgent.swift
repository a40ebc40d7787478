// A real agent in this process on an ephemeral port, with a temporary data dir.
import Agent
import Foundation
import HTTP
import Logging

final class TestAgent: @unchecked Sendable {
    let agent: Agent
    let dataDir: String
    var port: Int { agent.httpPort }

    init(dataDir: String? = nil, metrics: MetricsRegistry = MetricsRegistry(),
         configure: (inout AgentConfig) -> Void = { _ in }) throws {
        let dir = dataDir ?? (NSTemporaryDirectory() + "/conclave-agent-test-" + UUID().uuidString)
        self.dataDir = dir
        var config = AgentConfig()
        config.server = true
        config.bootstrap = true
        config.nodeName = "test-node"
        config.dataDir = dir
        config.clientAddr = "127.0.0.1"
        config.ports.http = 0
        config.ports.serfLAN = 0
        config.ports.serfWAN = 0
        config.ports.server = 0
        config.bindAddr = "127.0.0.1"
        configure(&config)
        var logger = Logger(label: "test-agent")
        logger.logLevel = .warning
        agent = try Agent(config: config, logger: logger, metrics: metrics)
        try agent.start()
    }

    func client() -> HTTPClient { HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 30) }

    func request(_ method: String, _ path: String, body: [UInt8] = []) throws -> HTTPClientResponse {
        var client = client()
        return try client.request(method: method, path: path, body: body)
    }

    func stop(removeData: Bool = true) {
        agent.shutdown()
        agent.waitUntilStopped()
        if removeData { try? FileManager.default.removeItem(atPath: dataDir) }
    }
}

extension HTTPClientResponse {
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) }
    var entries: [[String: Any]] { json as? [[String: Any]] ?? [] }
    var consulIndex: UInt64? { headers["X-Consul-Index"].flatMap { UInt64($0) } }
}

func monotonicMilliseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec) / 1_000_000
}
