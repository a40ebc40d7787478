// The durable command log: group commit, ordering, recovery after a stop between append
// and apply, and that recovery does not re-apply what was applied.
import EventLoop
import Foundation
import Logging
@testable import Replication
import StateStore
import Storage
import Testing

/// Hands loop-confined objects to closures that run on the loop thread.
final class LoopBox<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

final class Collected: @unchecked Sendable {
    let lock = NSLock()
    var outcomes: [Result<CommitOutcome, CommitError>] = []
    var batches: [AppliedBatch] = []
    func add(_ o: Result<CommitOutcome, CommitError>) { lock.lock(); outcomes.append(o); lock.unlock() }
    func add(_ b: AppliedBatch) { lock.lock(); batches.append(b); lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return outcomes.count }
}

func waitFor(_ seconds: Double = 20, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(2_000)
    }
    return condition()
}

@Suite("Single-node durable log")
struct SingleNodeLogTests {
    let logger = Logger(label: "test")

    func withLog(_ dir: String, _ body: (Loop, LoopBox<SingleNodeLog>) throws -> Void) throws {
        let loop = try Loop()
        let log = LoopBox(try SingleNodeLog(loop: loop, dataDirectory: dir, logger: logger))
        loop.start()
        loop.execute { log.value.start() }
        defer {
            let closed = DispatchSemaphore(value: 0)
            loop.execute { log.value.close(); closed.signal() }
            closed.wait()
            loop.shutdown()
        }
        try body(loop, log)
    }

    @Test func commandsSubmittedTogetherShareBatchesAndKeepOrder() throws {
        let dir = NSTemporaryDirectory() + "/conclave-log-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let collected = Collected()
        try withLog(dir) { loop, log throws in
            loop.execute {
                log.value.onApplied = { collected.add($0) }
                for i in 0..<2000 {
                    log.value.submit(KVCommand.set(key: "k\(i)", value: [UInt8(i % 256)], flags: 0).encoded()) { collected.add($0) }
                }
            }
            #expect(waitFor { collected.count == 2000 })
        }
        let indexes = collected.outcomes.compactMap { try? $0.get().index }
        #expect(indexes.count == 2000)
        #expect(indexes == Array(1...2000).map(UInt64.init))
        #expect(collected.outcomes.allSatisfy { (try? $0.get().result) == .success(true) })
        // Group commit: the first command goes alone, the rest arrive during its fsync.
        #expect(collected.batches.count < 100)
        #expect(collected.batches.map(\.results.count).reduce(0, +) == 2000)
    }

    @Test func appliedStateIsReadableAndSurvivesReopen() throws {
        let dir = NSTemporaryDirectory() + "/conclave-log-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let collected = Collected()
        try withLog(dir) { loop, log throws in
            loop.execute {
                log.value.submit(KVCommand.set(key: "a", value: Array("1".utf8), flags: 7).encoded()) { collected.add($0) }
                log.value.submit(KVCommand.checkAndSet(key: "a", value: [2], flags: 0, modifyIndex: 99).encoded()) { collected.add($0) }
            }
            #expect(waitFor { collected.count == 2 })
        }
        #expect((try? collected.outcomes[1].get().result) == .success(false))
        try withLog(dir) { _, log throws in
            let (index, entry) = try log.value.reader.get("a")
            #expect(entry?.value == Array("1".utf8))
            #expect(entry?.flags == 7)
            #expect(index == 1)
            #expect(log.value.lastAppliedIndex == 2)
        }
    }

    @Test func recoveryAppliesOnlyEntriesNotYetApplied() throws {
        let dir = NSTemporaryDirectory() + "/conclave-log-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            // A log of three entries of which the state store applied the first two, each
            // of those with a *different* command than the log holds: a replay of 1...2
            // would be visible.
            let logEnv = try Environment(directory: DataLayout.logDirectory(dir))
            let stateEnv = try Environment(directory: DataLayout.stateDirectory(dir))
            let log = try LogStore(environment: logEnv)
            try log.append([
                LogEntry(index: 1, term: 1, kind: .command, data: KVCommand.set(key: "x", value: Array("log-1".utf8), flags: 0).encoded()),
                LogEntry(index: 2, term: 1, kind: .command, data: KVCommand.set(key: "x", value: Array("log-2".utf8), flags: 0).encoded()),
                LogEntry(index: 3, term: 1, kind: .command, data: KVCommand.set(key: "y", value: Array("log-3".utf8), flags: 0).encoded()),
            ])
            let state = try StateStore(environment: stateEnv)
            _ = try state.apply([
                (index: 1, command: KVCommand.set(key: "x", value: Array("state-1".utf8), flags: 0).encoded()),
                (index: 2, command: KVCommand.set(key: "x", value: Array("state-2".utf8), flags: 0).encoded()),
            ])
            logEnv.close()
            stateEnv.close()
        }
        try withLog(dir) { _, log throws in
            #expect(log.value.lastAppliedIndex == 3)
            #expect(try log.value.reader.get("x").entry?.value == Array("state-2".utf8))
            #expect(try log.value.reader.get("y").entry?.value == Array("log-3".utf8))
            #expect(try log.value.reader.appliedIndex() == 3)
        }
    }

    @Test func submitBeyondThePendingLimitFailsFast() throws {
        let dir = NSTemporaryDirectory() + "/conclave-log-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = ReplicationConfig()
        config.maxBatchCommands = 10
        config.maxPendingCommands = 10
        let loop = try Loop()
        let log = LoopBox(try SingleNodeLog(loop: loop, dataDirectory: dir, config: config, logger: logger))
        loop.start()
        let collected = Collected()
        loop.execute {
            log.value.start()
            // 1 goes to disk at once, 10 wait, the rest are refused.
            for i in 0..<30 {
                log.value.submit(KVCommand.set(key: "k\(i)", value: [], flags: 0).encoded()) { collected.add($0) }
            }
        }
        #expect(waitFor { collected.count == 30 })
        let refused = collected.outcomes.filter { if case .failure(.overloaded) = $0 { return true } else { return false } }
        #expect(refused.count == 19)
        let done = DispatchSemaphore(value: 0)
        loop.execute { log.value.close(); done.signal() }
        done.wait()
        loop.shutdown()
    }

    @Test func invalidConfigIsRejectedWithTheFieldName() {
        var config = ReplicationConfig()
        config.maxBatchCommands = 0
        #expect(throws: ReplicationConfigError.self) { try config.validate() }
    }
}
