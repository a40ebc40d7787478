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
        #expect(agent.output.text.contains("shutdown complete"))
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
