// The replicator's operator surface and default-consistency read point: leadership transfer
// (picked or named, asked on the leader or forwarded by a follower), removal forwarded by a
// follower, the leader's commit index as a read point, and the frames they travel in.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

/// Runs an asynchronous call on `server`'s loop and waits (bounded) for its completion.
private func waitFor<T>(_ cluster: TestCluster, on server: NodeID, seconds: Double = 20,
                      _ call: @escaping (RaftReplicator, @escaping (T) -> Void) -> Void) throws -> T? {
    let result = Unsafe<T?>(nil)
    let lock = NSLock()
    try cluster.servers[server]!.run { r in call(r) { value in lock.lock(); result.value = value; lock.unlock() } }
    _ = eventually(seconds) { lock.lock(); defer { lock.unlock() }; return result.value != nil }
    lock.lock(); defer { lock.unlock() }
    return result.value
}

@Suite("Raft replicator operator calls", .serialized)
struct RaftOperatorTests {
    @Test func transferLeadershipHandsOverToTheNamedVoter() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let target = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let result: Result<NodeID, RaftCommitError>? = try waitFor(cluster, on: leader) { r, done in
            r.transferLeadership(to: target, completion: done)
        }
        #expect(try result?.get() == target)
        #expect(try cluster.waitForLeader() == target)
        #expect(try cluster.write(on: target, prefix: "after", count: 5).acknowledgedKeys.count == 5)
    }

    @Test func transferAskedOnAFollowerIsForwardedAndWithoutTargetPicksAnotherVoter() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let result: Result<NodeID, RaftCommitError>? = try waitFor(cluster, on: follower) { r, done in
            r.transferLeadership(to: nil, completion: done)
        }
        let chosen = try #require(try result?.get())
        #expect(chosen != leader)
        #expect(try cluster.waitForLeader() == chosen)
    }

    @Test func transferToANonMemberIsRejected() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let result: Result<NodeID, RaftCommitError>? = try waitFor(cluster, on: leader) { r, done in
            r.transferLeadership(to: 99, completion: done)
        }
        #expect(throws: RaftCommitError.rejected("server 99 is not a voter of the configuration")) { try result?.get() }
        #expect(try cluster.servers[leader]!.run { $0.isLeader })
    }

    @Test func removePeerAskedOnAFollowerIsForwardedToTheLeader() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let others = ([1, 2, 3] as [NodeID]).filter { $0 != leader }
        try cluster.stop(others[1])
        let result: Result<Void, RaftCommitError>? = try waitFor(cluster, on: others[0]) { r, done in
            r.removePeer(others[1], completion: done)
        }
        #expect(throws: Never.self) { try result?.get() }
        let expected = Configuration(voters: [leader, others[0]])
        #expect(try eventually { try cluster.servers[others[0]]!.run { $0.configuration } == expected })
        #expect(try cluster.servers[leader]!.run { $0.servers.map(\.id) } == expected.voters)
        #expect(try cluster.write(on: others[0], prefix: "two", count: 5).acknowledgedKeys.count == 5)
    }

    @Test func serversAndFollowerProgressDescribeTheConfiguration() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "p", count: 10).acknowledgedKeys.count == 10)
        let servers = try cluster.servers[leader]!.run { $0.servers }
        #expect(servers.map(\.id) == [1, 2, 3])
        #expect(servers.map(\.address) == [1, 2, 3].map { cluster.addresses[$0]! })
        #expect(servers.filter(\.leader).map(\.id) == [leader])
        let allVoters = servers.allSatisfy { $0.voter }
        #expect(allVoters)
        let caughtUp = try eventually {
            let progress = try cluster.servers[leader]!.run { ($0.followerProgress, $0.commitIndex) }
            return Set(progress.0.keys) == Set([1, 2, 3].filter { $0 != leader }) && progress.0.values.allSatisfy { $0.match == progress.1 }
        }
        #expect(caughtUp)
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        #expect(try cluster.servers[follower]!.run { $0.followerProgress }.isEmpty)
    }

    @Test func followerDefaultReadWaitsForTheLeadersCommitIndex() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        for round in 0..<10 {
            let written = try cluster.write(on: leader, prefix: "r\(round)-", count: 20)
            let highest = written.all.compactMap { try? $0.result.get().index }.max() ?? 0
            #expect(highest > 0)
            // Asked right after the leader acknowledged: the read point is at least the highest
            // acknowledged index, and once it completes the follower has applied that far.
            let point: Result<(UInt64, UInt64, Bool), RaftCommitError>? = try waitFor(cluster, on: follower) { r, done in
                r.leaderReadIndex { result in
                    done(result.map { index in
                        (index, r.lastAppliedIndex, (try? r.reader.get("r\(round)-19").1) != nil)
                    })
                }
            }
            let (index, applied, found) = try #require(try point?.get())
            #expect(index >= highest)
            #expect(applied >= index)
            #expect(found)
        }
        // On the leader the read point is its own commit index.
        let onLeader: Result<UInt64, RaftCommitError>? = try waitFor(cluster, on: leader) { r, done in r.leaderReadIndex(completion: done) }
        let commit = try cluster.servers[leader]!.run { $0.commitIndex }
        let leaderPoint = try #require(try onLeader?.get())
        #expect(leaderPoint > 0 && leaderPoint <= commit)
    }

    @Test func writesAreAnsweredBeforeTheyAreVisibleAndAReadMakesThemVisible() throws {
        var config = RaftReplicatorConfig.fastForTests()
        // Held for good unless a read needs them.
        config.stateCommitDelayMilliseconds = 3_600_000
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let followers = ([1, 2, 3] as [NodeID]).filter { $0 != leader }
        let written = try cluster.write(on: leader, prefix: "h", count: 30)
        #expect(written.acknowledgedKeys.count == 30)
        #expect(written.all.allSatisfy { (try? $0.result.get().result) == .success(true) })
        let highest = written.all.compactMap { try? $0.result.get().index }.max() ?? 0
        // Everyone knows the writes are committed; no reader sees them yet.
        for server in [leader] + followers {
            #expect(try eventually { try cluster.servers[server]!.run { $0.commitIndex } >= highest })
        }
        usleep(100_000)
        for server in [leader] + followers {
            #expect(try cluster.contents(server, committedOnly: true).isEmpty)
            #expect(try cluster.servers[server]!.run { $0.lastAppliedIndex } < highest)
        }
        // A default read on the leader waits for its index: the held write commits at once.
        let onLeader: Result<Bool, RaftCommitError>? = try waitFor(cluster, on: leader, seconds: 5) { r, done in
            r.leaderReadIndex { result in done(result.map { _ in (try? r.reader.get("h29").1) != nil }) }
        }
        #expect(try onLeader?.get() == true)
        let expected = try cluster.contents(leader, committedOnly: true)
        #expect(expected.count == 30)
        // The same on a follower, and only there.
        let onFollower: Result<Bool, RaftCommitError>? = try waitFor(cluster, on: followers[0], seconds: 5) { r, done in
            r.leaderReadIndex { result in done(result.map { _ in (try? r.reader.get("h29").1) != nil }) }
        }
        #expect(try onFollower?.get() == true)
        #expect(try cluster.contents(followers[0], committedOnly: true) == expected)
        #expect(try cluster.contents(followers[1], committedOnly: true).isEmpty)
        // Closing commits the held write: the other follower, restarted, has them all.
        try cluster.stop(followers[1])
        try cluster.restart(followers[1])
        #expect(try eventually(10) { try cluster.servers[followers[1]]!.run { $0.leaderID != nil } })
        let afterRestart: Result<Bool, RaftCommitError>? = try waitFor(cluster, on: followers[1], seconds: 10) { r, done in
            r.leaderReadIndex { result in done(result.map { _ in (try? r.reader.get("h29").1) != nil }) }
        }
        #expect(try afterRestart?.get() == true)
        #expect(try cluster.contents(followers[1]) == expected)
    }

    @Test func followerWithoutForwardingOrLeaderFailsTheReadPoint() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let result: Result<UInt64, RaftCommitError>? = try waitFor(cluster, on: follower) { r, done in
            r.leaderReadIndex(forwardToLeader: false, completion: done)
        }
        #expect(throws: RaftCommitError.notLeader(leaderAddress: cluster.addresses[leader])) { try result?.get() }
    }

    @Test func operatorAndCommitIndexFramesRoundTrip() {
        let frames: [ForwardFrame] = [
            .commitIndexRequest(id: 7, origin: 3),
            .operatorRequest(id: 8, origin: 2, operation: .removeServer, target: 0xDEAD_BEEF),
            .operatorRequest(id: 9, origin: 1, operation: .transferLeadership, target: 0),
        ]
        for frame in frames { #expect(ForwardFrame.decode(frame.encoded()) == frame) }
        // Wrong lengths and unknown operations decode to nil.
        #expect(ForwardFrame.decode([0xF5] + [UInt8](repeating: 0, count: 15)) == nil)
        #expect(ForwardFrame.decode([0xF5] + [UInt8](repeating: 0, count: 17)) == nil)
        var badOperation = ForwardFrame.operatorRequest(id: 1, origin: 1, operation: .removeServer, target: 1).encoded()
        badOperation[17] = 9
        #expect(ForwardFrame.decode(badOperation) == nil)
        #expect(ForwardFrame.decode(Array(badOperation.dropLast())) == nil)
    }

    /// Decoding is total: random payloads behind every control kind give a frame or nil.
    @Test func forwardFrameDecodingIsTotalOnRandomBytes() {
        var state: UInt64 = 0x5EED_0F0F
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var decoded = 0
        for _ in 0..<20_000 {
            let length = Int(next() % 40)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: next()) }
            if !bytes.isEmpty { bytes[0] = 0xF0 + UInt8(next() % 8) }
            if let frame = ForwardFrame.decode(bytes) {
                decoded += 1
                #expect(ForwardFrame.decode(frame.encoded()) == frame)
            }
        }
        #expect(decoded > 0)
    }
}
