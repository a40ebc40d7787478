// Membership through the replicator: a fourth server joins as a non-voter, catches up, is
// promoted, and takes part; a server is removed; address records and hello frames decode.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

@Suite("Raft replicator membership", .serialized)
struct RaftMembershipTests {
    @Test func aFourthServerIsAddedCaughtUpAndPromotedToVoter() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "old", count: 100).acknowledgedKeys.count == 100)
        let address = try cluster.startJoiningServer(4)
        let added = try cluster.membershipChange(on: leader) { r, done in r.addServer(4, address: address, completion: done) }
        #expect(throws: Never.self) { try added?.get() }
        #expect(try cluster.servers[leader]!.run { $0.configuration } == Configuration(voters: [1, 2, 3, 4]))
        #expect(try eventually { try cluster.servers[4]!.run { $0.configuration.voters } == [1, 2, 3, 4] })
        #expect(try cluster.write(on: leader, prefix: "new", count: 20).acknowledgedKeys.count == 20)
        let expected = try cluster.contents(leader)
        #expect(expected.count == 120)
        #expect(try eventually { try cluster.contents(4) == expected })
        // Every server learned the new address from the log.
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually { try cluster.servers[id]!.run { $0.peers[4] } == address }, "server \(id)")
        }
        // The new voter takes part: with the leader stopped, 3 of 4 voters remain, a quorum,
        // and server 4 knows every member's address from the log.
        #expect(try cluster.servers[4]!.run { $0.peers } == cluster.addresses)
        try cluster.stop(leader)
        let next = try #require(try cluster.waitForLeader(excluding: leader))
        #expect(try cluster.write(on: next, prefix: "after", count: 10).acknowledgedKeys.count == 10)
        #expect(try eventually { try cluster.contents(4).count == 130 })
    }

    @Test func aRemovedServerLeavesTheConfiguration() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let victim = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let removed = try cluster.membershipChange(on: leader) { r, done in r.removeServer(victim, completion: done) }
        #expect(throws: Never.self) { try removed?.get() }
        let remaining = ([1, 2, 3] as [NodeID]).filter { $0 != victim }
        #expect(try cluster.servers[leader]!.run { $0.configuration } == Configuration(voters: remaining))
        try cluster.stop(victim)
        #expect(try cluster.write(on: leader, prefix: "k", count: 10).acknowledgedKeys.count == 10)
    }

    @Test func membershipChangesOnAFollowerFailWithTheLeaderAddress() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let result = try cluster.membershipChange(on: follower) { r, done in r.removeServer(leader, completion: done) }
        #expect(throws: RaftCommitError.notLeader(leaderAddress: cluster.addresses[leader])) { try result?.get() }
    }

    @Test func reservedFramesAndRecordsRoundTrip() {
        let record = AddressRecord.encode(id: 42, address: "10.0.0.1:8300")
        #expect(AddressRecord.decode(record)! == (42, "10.0.0.1:8300"))
        #expect(AddressRecord.decode([0xFF, 0x01, 0]) == nil)
        #expect(HelloFrame.decode(HelloFrame(id: 7, address: "a:1").encoded()) == HelloFrame(id: 7, address: "a:1"))
        #expect(HelloFrame.decode([0xF2, 1]) == nil)
        let response = ForwardFrame.response(id: 9, outcome: .failed(.notLeader(leaderAddress: "b:2")))
        #expect(ForwardFrame.decode(response.encoded()) == response)
        let request = ForwardFrame.request(id: 1, origin: 2, command: [1, 2, 3])
        #expect(ForwardFrame.decode(request.encoded()) == request)
        #expect(ForwardFrame.decode([0xF1, 0, 0]) == nil)
        let readResponse = ForwardFrame.readResponse(id: 3, outcome: .committed(CommitOutcome(index: 77, result: .success(true))))
        #expect(ForwardFrame.decode(readResponse.encoded()) == readResponse)
        #expect(ForwardFrame.decode(ForwardFrame.readRequest(id: 4, origin: 5).encoded()) == .readRequest(id: 4, origin: 5))
    }
}
