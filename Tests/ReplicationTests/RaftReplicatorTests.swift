// Three RaftReplicators on 127.0.0.1: election, replication of writes to every state store,
// leader failure, follower catch-up after restart, durability of acknowledged writes, and
// how followers answer writes.
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

@Suite("Raft replicator cluster", .serialized)
struct RaftReplicatorTests {
    @Test func threeServersElectExactlyOneLeader() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let terms = try cluster.running.map { s in try s.run { $0.term } }
        #expect(Set(terms).count == 1)
        let address = try cluster.servers[1]!.run { $0.leaderAddress }
        #expect(address == cluster.addresses[leader])
        #expect(try cluster.servers[leader]!.run { $0.peers } == cluster.addresses)
    }

    @Test func writesThroughTheLeaderAreAppliedOnAllThree() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let outcomes = try cluster.write(on: leader, prefix: "k", count: 200)
        #expect(outcomes.acknowledgedKeys.count == 200)
        let indexes = outcomes.all.compactMap { try? $0.result.get().index }
        #expect(Set(indexes).count == 200)
        #expect(outcomes.all.allSatisfy { (try? $0.result.get().result) == .success(true) })
        let expected = try cluster.contents(leader)
        #expect(expected.count == 200)
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually { try cluster.contents(id) == expected }, "server \(id)")
        }
    }

    @Test func writesArrivingDuringADiskJobShareTheNextOne() throws {
        // 2,000 proposals land on the leader's loop in one burst; in a debug build on a busy
        // machine that can starve the followers' loops past the 100–200 ms election timeouts of
        // the fast test config, and a new election (correct Raft) fails the burst. The test is
        // about group commit, so it runs with Consul-like 1–2 s timeouts.
        var config = RaftReplicatorConfig.fastForTests()
        config.tickIntervalMilliseconds = 100
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let batches = Unsafe(0)
        try cluster.servers[leader]!.run { r in r.onApplied = { _ in batches.value += 1 } }
        let started = Date()
        let outcomes = try cluster.write(on: leader, prefix: "g", count: 2000)
        let seconds = Date().timeIntervalSince(started)
        #expect(outcomes.acknowledgedKeys.count == 2000, "\(Set(outcomes.all.compactMap { if case let .failure(e) = $0.result { return "\(e)" } else { return nil } }))")
        let applyBatches = try cluster.servers[leader]!.run { _ in batches.value }
        // Group commit: far fewer fsync+apply jobs than writes.
        #expect(applyBatches < 200, "\(applyBatches) apply batches for 2000 writes in \(seconds) s")
        let indexes = outcomes.all.compactMap { try? $0.result.get().index }
        #expect(indexes == indexes.sorted())
    }

    @Test func aFollowerReportsTimeSinceItsLeaderLastSpoke() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let followers = ([1, 2, 3] as [NodeID]).filter { $0 != leader }
        #expect(try cluster.servers[leader]!.run { $0.millisecondsSinceLeaderContact } == 0)
        // Heartbeats every 10 ms keep a follower's figure small while the leader runs.
        #expect(try eventually { try cluster.servers[followers[0]]!.run { ($0.millisecondsSinceLeaderContact ?? .max) < 1_000 } })
        // Without a quorum no new leader can arise, so the figure only grows.
        try cluster.stop(leader)
        try cluster.stop(followers[1])
        usleep(400_000)
        let silent = try cluster.servers[followers[0]]!.run { $0.millisecondsSinceLeaderContact }
        #expect((silent ?? 0) >= 350, "\(String(describing: silent)) ms")
    }

    @Test func stoppingTheLeaderElectsAnotherAndWritesContinue() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let first = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: first, prefix: "before", count: 20).acknowledgedKeys.count == 20)
        try cluster.stop(first)
        let second = try #require(try cluster.waitForLeader(excluding: first))
        #expect(second != first)
        #expect(try cluster.write(on: second, prefix: "after", count: 20).acknowledgedKeys.count == 20)
        let contents = try cluster.contents(second)
        #expect(contents.count == 40)
        let other = try #require(cluster.running.map(\.id).first { $0 != second })
        #expect(try eventually { try cluster.contents(other) == contents })
    }

    @Test func stoppedFollowerRestartedFromItsDataDirCatchesUp() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        #expect(try cluster.write(on: leader, prefix: "a", count: 30).acknowledgedKeys.count == 30)
        #expect(try eventually { try cluster.contents(follower).count == 30 })
        try cluster.stop(follower)
        #expect(try cluster.write(on: leader, prefix: "b", count: 50).acknowledgedKeys.count == 50)
        try cluster.restart(follower)
        let expected = try cluster.contents(leader)
        #expect(expected.count == 80)
        #expect(try eventually { try cluster.contents(follower) == expected })
        // It recovered term and log rather than starting over.
        #expect(try cluster.servers[follower]!.run { $0.term } >= 1)
    }

    /// Keeps `concurrency` writes in flight on one replicator: each answer submits the next.
    final class WritePump {
        let replicator: RaftReplicator
        let outcomes: Outcomes
        var next = 0
        init(_ replicator: RaftReplicator, outcomes: Outcomes) { self.replicator = replicator; self.outcomes = outcomes }
        func submitNext() {
            let key = "w\(next)"
            next += 1
            replicator.submit(KVCommand.set(key: key, value: [1], flags: 0).encoded(), forwardToLeader: false) { [self] result in
                outcomes.add(key, result)
                if case .success = result { submitNext() }
            }
        }
    }

    @Test func everyAcknowledgedWriteSurvivesALeaderStopUnderConcurrentWrites() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let first = try #require(try cluster.waitForLeader())
        let outcomes = Outcomes()
        try cluster.servers[first]!.run { r in
            let pump = WritePump(r, outcomes: outcomes)
            for _ in 0 ..< 32 { pump.submitNext() }
        }
        _ = eventually(10) { outcomes.count >= 300 }
        try cluster.stop(first)
        // close() answered the 32 writes still in flight.
        let answered = outcomes.all
        let acknowledged = outcomes.acknowledgedKeys
        #expect(answered.count - acknowledged.count == 32)
        #expect(acknowledged.count >= 300)
        let second = try #require(try cluster.waitForLeader(excluding: first))
        #expect(try cluster.write(on: second, prefix: "later", count: 10).acknowledgedKeys.count == 10)
        let contents = try cluster.contents(second)
        let missing = acknowledged.filter { contents[$0] == nil }
        #expect(missing.isEmpty, "acknowledged but lost: \(missing.prefix(10))")
    }

    @Test func anIsolatedLeadersUncommittedWritesFailWithLeadershipLostAndAreReplaced() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let old = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: old, prefix: "a", count: 5).acknowledgedKeys.count == 5)
        // Cut the leader off, then give it writes it can append but never commit.
        let stranded = Outcomes()
        try cluster.servers[old]!.run { r in
            r.transport.partitioned = true
            for i in 0 ..< 10 {
                let key = "stranded\(i)"
                r.submit(KVCommand.set(key: key, value: [1], flags: 0).encoded(), forwardToLeader: false) { stranded.add(key, $0) }
            }
        }
        let others = ([1, 2, 3] as [NodeID]).filter { $0 != old }
        let new = try #require(try cluster.waitForLeader(among: others))
        #expect(try cluster.write(on: new, prefix: "b", count: 10).acknowledgedKeys.count == 10)
        #expect(stranded.count == 0)
        try cluster.servers[old]!.run { $0.transport.partitioned = false }
        // The new leader overwrites the stranded suffix (truncated on disk in the same
        // transaction as the new entries); each stranded write fails, none is applied.
        #expect(eventually { stranded.count == 10 })
        for outcome in stranded.all {
            guard case .failure(.leadershipLost) = outcome.result else {
                Issue.record("\(outcome.key): expected leadership lost, got \(outcome.result)")
                continue
            }
        }
        let expected = try cluster.contents(new)
        #expect(expected.count == 15)
        #expect(try eventually { try cluster.contents(old) == expected })
    }

    @Test func writeToAFollowerFailsWithTheLeaderAddress() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let outcomes = try cluster.write(on: follower, prefix: "f", count: 1, forward: false)
        let result = try #require(outcomes.all.first?.result)
        #expect(throws: RaftCommitError.notLeader(leaderAddress: cluster.addresses[leader])) { try result.get() }
    }

    @Test func followerForwardsWritesToTheLeader() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let outcomes = try cluster.write(on: follower, prefix: "fw", count: 50)
        #expect(outcomes.acknowledgedKeys.count == 50)
        #expect(outcomes.all.allSatisfy { (try? $0.result.get().result) == .success(true) })
        let expected = try cluster.contents(leader)
        #expect(expected.count == 50)
        #expect(try eventually { try cluster.contents(follower) == expected })
    }

    @Test func wholeClusterRestartRecoversTermLogAndState() throws {
        // Small apply batches: the restart's replay of the committed log goes in many jobs.
        var config = RaftReplicatorConfig.fastForTests()
        config.raft.maxApplyEntriesPerReady = 4
        config.maxApplyEntriesPerBatch = 8
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "k", count: 40).acknowledgedKeys.count == 40)
        let expected = try cluster.contents(leader)
        let termBefore = try cluster.servers[leader]!.run { $0.term }
        for id in [1, 2, 3] as [NodeID] { #expect(try eventually { try cluster.contents(id) == expected }) }
        for id in [1, 2, 3] as [NodeID] { try cluster.stop(id) }
        for id in [1, 2, 3] as [NodeID] { try cluster.restart(id) }
        // The applied state is there before any election: it was durable.
        for id in [1, 2, 3] as [NodeID] { #expect(try cluster.contents(id) == expected) }
        let next = try #require(try cluster.waitForLeader())
        #expect(try cluster.servers[next]!.run { $0.term } > termBefore)
        #expect(try cluster.write(on: next, prefix: "more", count: 10).acknowledgedKeys.count == 10)
        #expect(try cluster.contents(next).count == 50)
    }

    @Test func restartDoesNotHandAppliedEntriesToTheStateStoreAgain() throws {
        // After a restart the core hands out the whole committed log again; only entries past
        // the state's applied index may reach the state store. A replayed entry would show up
        // as an "already applied" result (or a changed key) in an applied batch.
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: leader, prefix: "old", count: 40).acknowledgedKeys.count == 40)
        let expected = try cluster.contents(leader)
        for id in [1, 2, 3] as [NodeID] { #expect(try eventually { try cluster.contents(id) == expected }) }
        for id in [1, 2, 3] as [NodeID] { try cluster.stop(id) }
        var seen: [NodeID: Unsafe<[AppliedBatch]>] = [:]
        for id in [1, 2, 3] as [NodeID] {
            try cluster.restart(id)
            // Installed before the first election can finish (it needs several ticks), so
            // before anything committed is handed out again.
            let batches = Unsafe<[AppliedBatch]>([])
            try cluster.servers[id]!.run { r in r.onApplied = { batches.value.append($0) } }
            seen[id] = batches
        }
        let next = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: next, prefix: "new", count: 5).acknowledgedKeys.count == 5)
        for id in [1, 2, 3] as [NodeID] {
            #expect(try eventually { try cluster.contents(id).count == 45 }, "server \(id)")
            let collector = seen[id]!
            let batches = try cluster.servers[id]!.run { _ in collector.value }
            let results = batches.flatMap(\.results)
            #expect(results == Array(repeating: .success(true), count: 5), "server \(id): \(results)")
            #expect(Set(batches.flatMap(\.changedKeys)) == Set((0 ..< 5).map { "new\($0)" }), "server \(id)")
        }
    }

    @Test func forwardsBeyondTheOutstandingLimitFailFast() throws {
        var config = RaftReplicatorConfig.fastForTests()
        config.maxOutstandingForwards = 2
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        // Five submitted in one loop turn: two go out, three are refused at once.
        let outcomes = try cluster.write(on: follower, prefix: "x", count: 5)
        #expect(outcomes.acknowledgedKeys.count == 2)
        let refused = outcomes.all.filter { if case .failure(.overloaded(_, 2)) = $0.result { return true } else { return false } }
        #expect(refused.count == 3)
    }

    @Test func forwardToAStoppedLeaderTimesOut() throws {
        var config = RaftReplicatorConfig.fastForTests()
        config.forwardTimeoutMilliseconds = 300
        config.raft.electionTicks = 50  // 0.5–1 s: the followers still name the old leader
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        try cluster.stop(leader)
        let outcomes = try cluster.write(on: follower, prefix: "lost", count: 1)
        let result = try #require(outcomes.all.first?.result)
        guard case .failure(.timeout) = result else {
            Issue.record("expected a timeout, got \(result)")
            return
        }
    }

    @Test func aWriteForwardedToADeadLeaderFailsOnceANewLeaderIsKnown() throws {
        var config = RaftReplicatorConfig.fastForTests()
        config.forwardTimeoutMilliseconds = 60_000  // far beyond the test: only the leader change can end it
        config.raft.electionTicks = 30  // 0.3–0.6 s: the followers still name the old leader for a while
        let cluster = try TestCluster(size: 3, config: config)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        try cluster.stop(leader)
        let started = Date()
        let outcomes = try cluster.write(on: follower, prefix: "orphan", count: 1, seconds: 20)
        let elapsed = Date().timeIntervalSince(started)
        let result = try #require(outcomes.all.first?.result)
        guard case let .failure(.timeout(reason)) = result else {
            Issue.record("expected the write to fail as of unknown outcome, got \(result)")
            return
        }
        #expect(reason.contains("replaced"), "\(reason)")
        #expect(elapsed < 20, "failed after \(elapsed) s, not at the forward timeout")
        // The new leader takes writes again.
        let next = try #require(try cluster.waitForLeader(excluding: leader))
        #expect(try cluster.write(on: next, prefix: "after", count: 1).acknowledgedKeys.count == 1)
    }

    @Test func consistentReadIndexOnTheLeaderCoversAcknowledgedWrites() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let outcomes = try cluster.write(on: leader, prefix: "r", count: 5)
        let lastWrite = try #require(outcomes.all.compactMap { try? $0.result.get().index }.max())
        let read = Unsafe<Result<UInt64, RaftCommitError>?>(nil)
        let lock = NSLock()
        try cluster.servers[leader]!.run { r in r.readIndex { res in lock.lock(); read.value = res; lock.unlock() } }
        #expect(eventually { lock.lock(); defer { lock.unlock() }; return read.value != nil })
        lock.lock(); let index = try read.value?.get(); lock.unlock()
        #expect(index ?? 0 >= lastWrite)
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let followerRead = Unsafe<Result<UInt64, RaftCommitError>?>(nil)
        try cluster.servers[follower]!.run { r in r.readIndex(forwardToLeader: false) { res in followerRead.value = res } }
        #expect(throws: RaftCommitError.notLeader(leaderAddress: cluster.addresses[leader])) {
            try cluster.servers[follower]!.run { _ in followerRead.value }?.get()
        }
    }

    @Test func aFollowerReadWaitsForTheLeadersReadIndexToBeAppliedLocally() throws {
        let cluster = try TestCluster(size: 3)
        defer { cluster.shutdown() }
        let leader = try #require(try cluster.waitForLeader())
        let follower = try #require(([1, 2, 3] as [NodeID]).first { $0 != leader })
        let outcomes = try cluster.write(on: leader, prefix: "fr", count: 20)
        let lastWrite = try #require(outcomes.all.compactMap { try? $0.result.get().index }.max())
        // What the follower's state store holds at the moment its read completes.
        let seen = Unsafe<(Result<UInt64, RaftCommitError>, Int)?>(nil)
        let lock = NSLock()
        try cluster.servers[follower]!.run { r in
            r.readIndex { result in
                let keys = (try? r.reader.list(prefix: "fr").entries.count) ?? -1
                lock.lock(); seen.value = (result, keys); lock.unlock()
            }
        }
        #expect(eventually { lock.lock(); defer { lock.unlock() }; return seen.value != nil })
        lock.lock(); let (result, keys) = seen.value!; lock.unlock()
        #expect(try result.get() >= lastWrite)
        #expect(keys == 20)
    }

    @Test func invalidConfigIsRejectedWithTheFieldName() {
        var config = RaftReplicatorConfig()
        config.tickIntervalMilliseconds = 0
        let error = #expect(throws: ReplicationConfigError.self) { try config.validate() }
        #expect(error?.description.contains("tickIntervalMilliseconds") == true)
        config = RaftReplicatorConfig()
        config.raft.heartbeatTicks = 20
        #expect(throws: ReplicationConfigError.self) { try config.validate() }
    }
}
