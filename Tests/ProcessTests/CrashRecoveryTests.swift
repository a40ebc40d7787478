// The promise of a durable store: an acknowledged write survives `kill -9` and restart.
import Foundation
import HTTP
import Testing

@Suite("Agent process: durability", .serialized)
struct CrashRecoveryTests {
    @Test func acknowledgedWritesSurviveKill9() throws {
        let dir = temporaryDataDir("kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let record = Acknowledged()
        do {
            let agent = try AgentProcess(dataDir: dir)
            let port = agent.httpPort
            // Several concurrent writers so batches (group commit) hold many commands.
            DispatchQueue.concurrentPerform(iterations: 8) { writer in
                var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 30)
                for i in 0..<60 {
                    let key = "crash/\(writer)/\(i)", value = "v-\(writer)-\(i)"
                    if let r = try? client.request(method: "PUT", path: "/v1/kv/\(key)", body: Array(value.utf8)),
                       r.status == 200, String(decoding: r.body, as: UTF8.self) == "true" {
                        record.add(key, value)
                    }
                }
            }
            agent.kill9()
        }
        let acknowledged = record.snapshot
        #expect(acknowledged.count == 480)
        let restarted = try AgentProcess(dataDir: dir)
        defer { _ = restarted.terminate() }
        var client = restarted.client()
        for (key, value) in acknowledged {
            let r = try client.request(method: "GET", path: "/v1/kv/\(key)?raw")
            #expect(r.status == 200, "lost \(key)")
            #expect(String(decoding: r.body, as: UTF8.self) == value)
        }
        let list = try client.request(method: "GET", path: "/v1/kv/crash/?keys")
        #expect((try JSONSerialization.jsonObject(with: Data(list.body)) as? [String])?.count == 480)
    }

    @Test func killDuringWriteLoadKeepsEveryAcknowledgedWrite() throws {
        let dir = temporaryDataDir("kill9-load")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        let record = Acknowledged()
        let port = agent.httpPort
        let writers = DispatchGroup()
        for writer in 0..<4 {
            DispatchQueue.global().async(group: writers) {
                var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 5)
                for i in 0..<100_000 {
                    let key = "load/\(writer)/\(i)"
                    guard let r = try? client.request(method: "PUT", path: "/v1/kv/\(key)", body: Array(key.utf8)) else { return }
                    if r.status == 200 { record.add(key, key) }
                }
            }
        }
        // Kill while writes are in flight, once some have been acknowledged.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, record.snapshot.count < 400 { usleep(10_000) }
        agent.kill9()
        writers.wait()
        let snapshot = record.snapshot
        #expect(snapshot.count >= 400)

        let restarted = try AgentProcess(dataDir: dir)
        defer { _ = restarted.terminate() }
        var client = restarted.client()
        let list = try client.request(method: "GET", path: "/v1/kv/load/?keys")
        let stored = Set((try JSONSerialization.jsonObject(with: Data(list.body)) as? [String]) ?? [])
        let lost = snapshot.keys.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "acknowledged but lost after kill -9: \(lost.prefix(5))")
    }

    @Test func sigtermShutsDownCleanlyAndDataRemains() throws {
        let dir = temporaryDataDir("sigterm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        var client = agent.client()
        _ = try client.request(method: "PUT", path: "/v1/kv/term", body: Array("kept".utf8))
        #expect(agent.terminate() == 0)
        // The last lines may still be in the pipe when the process has exited.
        try poll("the shutdown log line", seconds: 5) { agent.output.text.contains("shutdown complete") }
        let again = try AgentProcess(dataDir: dir)
        defer { _ = again.terminate() }
        var second = again.client()
        #expect(String(decoding: try second.request(method: "GET", path: "/v1/kv/term?raw").body, as: UTF8.self) == "kept")
    }
}

/// Writes acknowledged by the agent, recorded from several writer threads.
final class Acknowledged: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [String: String] = [:]
    func add(_ key: String, _ value: String) { lock.lock(); values[key] = value; lock.unlock() }
    var snapshot: [String: String] { lock.lock(); defer { lock.unlock() }; return values }
}

@Suite("Agent process: hostile clients", .serialized)
struct HostileClientTests {
    /// A client that resets the connection while a large answer is being written must not
    /// take the agent down (a write to a reset socket raises SIGPIPE unless it is ignored).
    @Test func clientsResettingMidResponseDoNotKillTheAgent() throws {
        let dir = temporaryDataDir("sigpipe")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        defer { _ = agent.terminate() }
        var client = agent.client()
        _ = try client.request(method: "PUT", path: "/v1/kv/big", body: [UInt8](repeating: 42, count: 512 * 1024))
        for attempt in 0..<80 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(agent.httpPort).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            let request = Array(String(repeating: "GET /v1/kv/big?raw HTTP/1.1\r\n\r\n", count: 8).utf8)
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            usleep(2_000)
            if attempt % 2 == 0 {
                var reset = linger(l_onoff: 1, l_linger: 0)   // close with RST, not FIN
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
            }
            // A normal close with unread data makes our kernel answer the agent's next
            // segments with RST; the agent's write after that fails with EPIPE.
            close(fd)
        }
        usleep(200_000)
        #expect(agent.process.isRunning, "agent died: \(agent.output.text.suffix(2000))")
        var after = agent.client()
        #expect(try after.request(method: "GET", path: "/v1/status/leader").status == 200)
    }
}
