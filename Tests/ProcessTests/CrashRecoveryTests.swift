// The promise of a durable store: an acknowledged write survives `kill -9` and restart.
import Foundation
import HTTP
import Testing

@Suite("Agent process: durability", .serialized)
struct CrashRecoveryTests {
    @Test func acknowledgedWritesSurviveKill9() throws {
        let dir = temporaryDataDir("kill9")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var acknowledged: [String: String] = [:]
        do {
            let agent = try AgentProcess(dataDir: dir)
            // Several concurrent writers so batches (group commit) hold many commands.
            let lock = NSLock()
            DispatchQueue.concurrentPerform(iterations: 8) { writer in
                var client = agent.client()
                for i in 0..<60 {
                    let key = "crash/\(writer)/\(i)", value = "v-\(writer)-\(i)"
                    if let r = try? client.request(method: "PUT", path: "/v1/kv/\(key)", body: Array(value.utf8)),
                       r.status == 200, String(decoding: r.body, as: UTF8.self) == "true" {
                        lock.lock(); acknowledged[key] = value; lock.unlock()
                    }
                }
            }
            agent.kill9()
        }
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
        let lock = NSLock()
        var acknowledged: [String: String] = [:]
        let port = agent.httpPort
        let writers = DispatchGroup()
        for writer in 0..<4 {
            DispatchQueue.global().async(group: writers) {
                var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 5)
                for i in 0..<100_000 {
                    let key = "load/\(writer)/\(i)"
                    guard let r = try? client.request(method: "PUT", path: "/v1/kv/\(key)", body: Array(key.utf8)) else { return }
                    if r.status == 200 { lock.lock(); acknowledged[key] = key; lock.unlock() }
                }
            }
        }
        // Kill while writes are in flight, once some have been acknowledged.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline { lock.lock(); let n = acknowledged.count; lock.unlock(); if n >= 400 { break }; usleep(10_000) }
        agent.kill9()
        writers.wait()
        lock.lock(); let snapshot = acknowledged; lock.unlock()
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
