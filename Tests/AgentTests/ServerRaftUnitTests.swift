// The pure parts of a server's Raft wiring: the Raft server ID taken from the node ID, and
// Consul's -bootstrap-expect decision from the servers alive in the LAN pool.
@testable import Agent
import Testing

@Suite("Server Raft wiring")
struct ServerRaftUnitTests {
    @Test(arguments: [
        ("01020304-0506-0708-090a-0b0c0d0e0f10", UInt64(0x0102_0304_0506_0708)),
        ("FFFFFFFF-FFFF-FFFF-0000-000000000000", UInt64.max),
        ("00000000-0000-0000-1234-567890abcdef", UInt64(1)),   // all-zero prefix: 0 is reserved
        ("not-a-uuid", nil),
    ] as [(String, UInt64?)])
    func raftIDIsTheFirstEightBytesOfTheNodeIDBigEndian(nodeID: String, expected: UInt64?) {
        #expect(RaftServerID.from(nodeID: nodeID) == expected)
    }

    private func server(_ name: String, _ idPrefix: String, expect: Int = 3, bootstrap: Bool = false,
                        dc: String = "dc1", port: Int = 8300) -> KnownServer {
        KnownServer(name: name, id: "\(idPrefix)-0000-000000000000", datacenter: dc,
                    gossipAddress: "10.0.0.\(name.last!):8301", serverPort: port, bootstrapExpect: expect, bootstrap: bootstrap)
    }

    @Test func bootstrapWaitsUntilTheExpectedServersAreAlive() {
        let two = [server("s1", "00000000-0000-0001"), server("s2", "00000000-0000-0002")]
        #expect(BootstrapDecision.decide(expect: 3, datacenter: "dc1", servers: two) == .wait(found: 2))
    }

    @Test func bootstrapUsesEveryExpectedServerAtItsGossipHostAndPortTag() {
        let three = [server("s1", "00000000-0000-0001"), server("s2", "00000000-0000-0002"),
                     server("s3", "00000000-0000-0003", port: 9300)]
        #expect(BootstrapDecision.decide(expect: 3, datacenter: "dc1", servers: three)
                == .bootstrap([1: "10.0.0.1:8300", 2: "10.0.0.2:8300", 3: "10.0.0.3:9300"]))
    }

    @Test func bootstrapIsRefusedOnAConflictingExpectOrABootstrapServer() {
        let conflicting = [server("s1", "00000000-0000-0001"), server("s2", "00000000-0000-0002", expect: 5),
                           server("s3", "00000000-0000-0003")]
        #expect(BootstrapDecision.decide(expect: 3, datacenter: "dc1", servers: conflicting)
                == .refuse("Member s2 has a conflicting expect value. All nodes should expect the same number."))
        let withBootstrap = [server("s1", "00000000-0000-0001", bootstrap: true)]
        #expect(BootstrapDecision.decide(expect: 3, datacenter: "dc1", servers: withBootstrap)
                == .refuse("Member s1 has bootstrap mode. Expect disabled."))
    }

    @Test func serversOfAnotherDatacenterDoNotCount() {
        let mixed = [server("s1", "00000000-0000-0001"), server("s2", "00000000-0000-0002"),
                     server("s3", "00000000-0000-0003", dc: "dc2")]
        #expect(BootstrapDecision.decide(expect: 3, datacenter: "dc1", servers: mixed) == .wait(found: 2))
    }
}
