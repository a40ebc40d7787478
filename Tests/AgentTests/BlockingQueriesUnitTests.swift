// Which parked queries a batch of changed keys wakes (an installed snapshot wakes them all).
@testable import Agent
import EventLoop
import Foundation
import Testing

@Suite("Blocking query matching")
struct BlockingQueriesUnitTests {
    @Test(arguments: [
        (["a/b", "c"], "a/", true),
        (["a/b", "c"], "", true),
        (["ab", "b"], "a/", false),
        (["a", "a/", "a/z"], "a/z", true),
        (["a/y"], "a/z", false),
        (["zz"], "z", true),
        (["é/x"], "é/", true),
        (["e\u{301}/x"], "é/", false),   // decomposed bytes differ from the precomposed prefix
    ])
    func prefixMatchingIsOnUTF8Bytes(keys: [String], prefix: String, expected: Bool) {
        let sorted = keys.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(BlockingQueries.anyKey(in: sorted, hasPrefix: Array(prefix.utf8)) == expected)
    }
}

@Suite("Blocking query wake-ups")
struct BlockingQueriesWakeTests {
    /// An installed Raft snapshot replaces the whole state and reports the changed key "":
    /// every parked query wakes, whatever it watches.
    @Test func theEmptyChangedKeyWakesEveryWatcher() throws {
        let loop = try Loop()
        loop.start()
        defer { loop.shutdown() }
        let woken = WokenCounter()
        let done = DispatchSemaphore(value: 0)
        loop.execute {
            let queries = BlockingQueries(loop: loop)
            _ = queries.park(scope: .key("a/b"), timeoutMilliseconds: 60_000) { woken.add() }
            _ = queries.park(scope: .prefix("x/"), timeoutMilliseconds: 60_000) { woken.add() }
            queries.notify(changedKeys: ["unrelated"])
            woken.record(before: true)
            queries.notify(changedKeys: [""])
            woken.record(before: false)
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(woken.beforeSnapshot == 0)
        #expect(woken.afterSnapshot == 2)
    }
}

private final class WokenCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private(set) var beforeSnapshot = -1
    private(set) var afterSnapshot = -1
    func add() { lock.lock(); count += 1; lock.unlock() }
    func record(before: Bool) {
        lock.lock()
        if before { beforeSnapshot = count } else { afterSnapshot = count }
        lock.unlock()
    }
}
