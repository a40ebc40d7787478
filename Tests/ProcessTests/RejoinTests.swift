// Restarts rejoin the pool from the member snapshot (serf/local.snapshot), as Consul does:
// after a crash always, after a graceful leave only with -rejoin.
import Foundation
import Glibc
import HTTP
import Testing

/// A port free for both TCP and UDP right now (the agent binds both on one number).
func freeGossipPort() throws -> Int {
    for _ in 0..<20 {
        let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(tcp, $0, length) == 0 && getsockname(tcp, $0, &length) == 0 }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        close(tcp)
        guard bound, port > 0 else { continue }
        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        let udpOK = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(udp, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        close(udp)
        if udpOK { return port }
    }
    throw ProcessTestError(description: "no free port")
}

@Suite("Gossip rejoin from the member snapshot", .serialized)
struct RejoinTests {
    func client(_ name: String, dir: String, port: Int, extra: [String]) throws -> AgentProcess {
        try AgentProcess(dataDir: dir, arguments: [
            "agent", "-node", name, "-data-dir", dir, "-client", "127.0.0.1", "-bind", "127.0.0.1",
            "-http-port", "0", "-dns-port", "-1", "-serf-lan-port", String(port), "-log-level", "info"] + extra)
    }

    @Test func aCrashedAgentRejoinsWithoutJoinFlagsButALeftOneOnlyWithRejoin() throws {
        let server = try AgentProcess(node: "rj-server", server: true, extra: ["-bootstrap"])
        defer { _ = server.terminate(); try? FileManager.default.removeItem(atPath: server.dataDir) }
        let seed = "127.0.0.1:\(try server.serfLANPort())"
        let dir = temporaryDataDir("rj-client")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = try freeGossipPort()

        do {
            let first = try client("rj-client", dir: dir, port: port, extra: ["-retry-join", seed, "-retry-interval", "1s"])
            try poll("both alive", seconds: 15) { try server.members() == ["rj-server": "alive", "rj-client": "alive"] }
            try poll("the snapshot to record the server", seconds: 10) {
                (try? String(contentsOfFile: dir + "/serf/local.snapshot", encoding: .utf8))?.contains("rj-server") == true
            }
            first.kill9()
        }
        // No -join, no -retry-join: the snapshot brings it back.
        do {
            let restarted = try client("rj-client", dir: dir, port: port, extra: [])
            try poll("the restarted agent back in the pool", seconds: 20) {
                try restarted.members()["rj-server"] == "alive" && server.members()["rj-client"] == "alive"
            }
            #expect(restarted.output.text.contains("Attempting re-join to previously known node"))
            // A graceful leave marks the snapshot.
            #expect(try runCLI(["leave"] + restarted.httpAddr).status == 0)
            restarted.process.waitUntilExit()
            try poll("the server to see it left", seconds: 10) { try server.members()["rj-client"] == "left" }
        }
        do {
            let afterLeave = try client("rj-client", dir: dir, port: port, extra: [])
            try poll("it to say it is not rejoining", seconds: 10) { afterLeave.output.text.contains("Ignoring previous leave") }
            #expect(try afterLeave.members() == ["rj-client": "alive"])
            #expect(afterLeave.terminate() == 0)
        }
        let withRejoin = try client("rj-client", dir: dir, port: port, extra: ["-rejoin"])
        defer { _ = withRejoin.terminate() }
        try poll("-rejoin to bring it back", seconds: 20) { try server.members()["rj-client"] == "alive" }
    }
}
