// GET /v1/snapshot and `conclave snapshot save|inspect` against a real single-server agent.
import Foundation
import HTTP
import Testing

@Suite("Snapshot API and CLI")
struct SnapshotCommandTests {
    @Test func saveWritesAVerifiedArchiveAndInspectDescribesIt() throws {
        let dir = temporaryDataDir("snapshot-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = try AgentProcess(dataDir: dir)
        defer { _ = agent.terminate() }
        let addr = ["-http-addr", "127.0.0.1:\(agent.httpPort)"]
        for i in 0 ..< 20 {
            try poll("write \(i)", seconds: 30) { try agent.http("PUT", "/v1/kv/s/k\(i)", body: "v\(i)").status == 200 }
        }

        let api = try agent.http("GET", "/v1/snapshot")
        #expect(api.status == 200)
        let index = try #require(api.headers["X-Consul-Index"].flatMap { UInt64($0) })
        #expect(index >= 20)
        #expect(api.body.starts(with: Array("CNSA".utf8)))
        #expect(try agent.http("GET", "/v1/snapshot?stale").status == 200)
        #expect(try agent.http("PUT", "/v1/snapshot").status == 400)  // an empty body is no archive
        #expect(try agent.http("DELETE", "/v1/snapshot").status == 405)
        #expect(try agent.http("GET", "/v1/snapshot?dc=elsewhere").status == 500)

        let file = dir + "-backup.snap"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let save = try runCLI(["snapshot", "save"] + addr + [file])
        #expect(save.status == 0, "\(save.stderr)")
        #expect(save.stdout.hasPrefix("Saved and verified snapshot to index "))
        let saved = try #require(UInt64(save.stdout.dropFirst("Saved and verified snapshot to index ".count)
            .trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(saved >= index)

        let inspect = try runCLI(["snapshot", "inspect", file])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let lines = inspect.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(lines.map { String($0.first ?? "") } == ["ID", "Size", "Index", "Term", "Version"])
        let fields = Dictionary(uniqueKeysWithValues: lines.map { (String($0[0]), String($0.last ?? "")) })
        #expect(fields["Index"] == "\(saved)")
        #expect(fields["Size"] == "\(try Data(contentsOf: URL(fileURLWithPath: file)).count)")
        #expect(fields["Version"] == "1")
        #expect(fields["ID"]?.hasPrefix("\(fields["Term"] ?? "?")-\(saved)-") == true)

        // A damaged archive is refused with a message and a non-zero exit.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0x5A
        try bytes.write(to: URL(fileURLWithPath: file))
        let damaged = try runCLI(["snapshot", "inspect", file])
        #expect(damaged.status == 1)
        #expect(damaged.stderr.contains("Error inspecting snapshot"))
        let missing = try runCLI(["snapshot", "inspect"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("Missing FILE argument"))
    }
}
