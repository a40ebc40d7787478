// Node names are unique in a pool: another address cannot take over a live member's name.
import GossipCore
import Testing

@Suite("Name conflicts")
struct NameConflictTests {
    @Test func anotherAddressClaimingALiveMembersNameIsRefused() {
        let h = Harness(others: ["b"])
        h.clear()
        h.receive([.alive(incarnation: 5, node: "b", address: "10.0.0.99:7946", tags: [:])], from: "c")
        #expect(h.node.member(named: "b")?.address == Harness.address("b"))
        #expect(h.node.stats.nameConflicts == 1)
        #expect(h.events.contains { if case .conflict(let existing, let claimant) = $0 { existing.name == "b" && claimant == "10.0.0.99:7946" } else { false } })
        // The rightful holder's own update still goes through.
        h.receive([.alive(incarnation: 6, node: "b", address: Harness.address("b"), tags: ["x": "1"])], from: "b")
        #expect(h.node.member(named: "b")?.tags == ["x": "1"])
    }

    @Test func aLeftMembersNameCanBeReclaimed() {
        let h = Harness(others: ["b"])
        h.receive([.dead(incarnation: 1, node: "b", from: "b")], from: "b")
        #expect(h.node.member(named: "b")?.state == .left)
        h.receive([.alive(incarnation: 2, node: "b", address: "10.0.0.99:7946", tags: [:])], from: "b")
        #expect(h.node.member(named: "b")?.address == "10.0.0.99:7946")
        #expect(h.node.member(named: "b")?.state == .alive)
    }

    @Test func aDeadMembersNameIsReclaimableOnlyAfterTheReclaimTime() {
        let h = Harness(others: ["b"]) { $0.deadNodeReclaimTimeMs = 30_000 }
        h.receive([.dead(incarnation: 1, node: "b", from: "c")], from: "c")
        #expect(h.node.member(named: "b")?.state == .dead)
        h.receive([.alive(incarnation: 2, node: "b", address: "10.0.0.99:7946", tags: [:])], from: "b")
        #expect(h.node.member(named: "b")?.address == Harness.address("b"), "too early to reclaim")
        h.advance(by: 30_000)
        h.receive([.alive(incarnation: 3, node: "b", address: "10.0.0.99:7946", tags: [:])], from: "b")
        #expect(h.node.member(named: "b")?.address == "10.0.0.99:7946")
    }
}
