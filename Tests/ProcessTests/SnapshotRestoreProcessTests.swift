// `conclave snapshot save` / `snapshot restore` against three real server agents: the restore
// is sent to a follower (which forwards it to the leader) and every server ends up with the
// saved state, read back from its own state with ?stale.
import Foundation
import HTTP
import Testing

@Suite("Snapshot restore with agents", .serialized)
struct SnapshotRestoreProcessTests {
    @Test func restoreThroughAFollowerReplacesTheStateOnEveryServer() throws {
        let first = try AgentProcess(node: "rs1", server: true, extra: ["-bootstrap-expect", "3"])
        let join = ["-bootstrap-expect", "3", "-retry-join", "127.0.0.1:\(try first.serfLANPort())", "-retry-interval", "1s"]
        let servers = [first, try AgentProcess(node: "rs2", server: true, extra: join),
                       try AgentProcess(node: "rs3", server: true, extra: join)]
        defer { servers.forEach { $0.stop() } }
        var leaderAddress = ""
        try poll("3 servers to agree on one leader", seconds: 60) {
            let leaders = Set(servers.map(\.leader))
            guard leaders.count == 1, let leader = leaders.first, !leader.isEmpty,
                  servers.allSatisfy({ Set($0.peers).count == 3 }) else { return false }
            leaderAddress = leader
            return true
        }
        let leader = try #require(try servers.first { try $0.raftAddress() == leaderAddress })
        let follower = try #require(try servers.first { try $0.raftAddress() != leaderAddress })

        for i in 0 ..< 10 {
            try poll("write a/\(i)", seconds: 30) { try leader.http("PUT", "/v1/kv/a/\(i)", body: "a\(i)").status == 200 }
        }
        // Past the 512 KiB body limit of other requests: the archive is about 800 KB.
        let big = String(repeating: "x", count: 100_000)
        for i in 0 ..< 8 {
            try poll("write big/\(i)", seconds: 30) { try leader.http("PUT", "/v1/kv/big/\(i)", body: big).status == 200 }
        }
        let file = NSTemporaryDirectory() + "/conclave-restore-\(UUID().uuidString).snap"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let save = try runCLI(["snapshot", "save", "-http-addr", "127.0.0.1:\(leader.httpPort)", file])
        #expect(save.status == 0, "\(save.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)).count > 512 << 10)

        // Change the data: new keys, a changed key, a deleted key.
        for i in 0 ..< 10 {
            try poll("write b/\(i)", seconds: 30) { try leader.http("PUT", "/v1/kv/b/\(i)", body: "b\(i)").status == 200 }
        }
        #expect(try leader.http("PUT", "/v1/kv/a/0", body: "changed").status == 200)
        #expect(try leader.http("DELETE", "/v1/kv/a/1").status == 200)
        #expect(try leader.http("DELETE", "/v1/kv/big?recurse").status == 200)
        let indexBefore = try #require(try leader.http("GET", "/v1/kv/a/2").headers["X-Consul-Index"].flatMap { UInt64($0) })

        // A damaged archive is refused with 400 and changes nothing.
        var damaged = try Data(contentsOf: URL(fileURLWithPath: file))
        damaged[damaged.count / 2] ^= 0x5A
        let refused = try leader.http("PUT", "/v1/snapshot", body: String(decoding: damaged, as: UTF8.self))
        #expect(refused.status == 400)
        // Archives past one server-port RPC frame (~7.9 MiB) go to the leader directly: the
        // leader reads a 9 MiB body (and refuses it as no archive), a follower answers 413.
        let huge = String(repeating: "z", count: 9 << 20)
        #expect(try leader.http("PUT", "/v1/snapshot", body: huge).status == 400)
        let tooBigToForward = try follower.http("PUT", "/v1/snapshot", body: huge)
        #expect(tooBigToForward.status == 413)
        #expect(String(decoding: tooBigToForward.body, as: UTF8.self).contains("send it to the leader"))
        let damagedFile = file + ".bad"
        defer { try? FileManager.default.removeItem(atPath: damagedFile) }
        try damaged.write(to: URL(fileURLWithPath: damagedFile))
        let badRestore = try runCLI(["snapshot", "restore", "-http-addr", "127.0.0.1:\(leader.httpPort)", damagedFile])
        #expect(badRestore.status == 1)
        #expect(badRestore.stderr.contains("Error restoring snapshot"))
        #expect(try leader.staleValue("a/0") == "changed")
        #expect(try leader.staleValue("b/3") == "b3")

        let restore = try runCLI(["snapshot", "restore", "-http-addr", "127.0.0.1:\(follower.httpPort)", file])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(restore.stdout == "Restored snapshot\n")
        // The follower forwarded the restore: the leader restored and replicated it.
        try poll("the restore in the leader's log", seconds: 10) { leader.output.text.contains("raft: user snapshot restored") }
        #expect(!follower.output.text.contains("raft: user snapshot restored"))

        for (n, server) in servers.enumerated() {
            try poll("the restored state on server \(n)", seconds: 60) {
                try (0 ..< 10).allSatisfy { try server.staleValue("a/\($0)") == "a\($0)" }
                    && (0 ..< 10).allSatisfy { try server.http("GET", "/v1/kv/b/\($0)?stale").status == 404 }
                    && (0 ..< 8).allSatisfy { try server.staleValue("big/\($0)") == big }
            }
        }
        let indexAfter = try #require(try leader.http("GET", "/v1/kv/a/2").headers["X-Consul-Index"].flatMap { UInt64($0) })
        #expect(indexAfter >= indexBefore)

        // Writes go on after the restore, everywhere.
        try poll("a write after the restore", seconds: 30) { try leader.http("PUT", "/v1/kv/after", body: "x").status == 200 }
        for (n, server) in servers.enumerated() {
            try poll("the later write on server \(n)", seconds: 30) { try server.staleValue("after") == "x" }
        }
    }
}
