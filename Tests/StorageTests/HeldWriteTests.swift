import Foundation
import Storage
import Testing

/// `Environment.writeHeld`: bodies that share one transaction until `commitHeld`.
@Suite struct HeldWriteTests {
    @Test func heldBodiesAreInvisibleUntilTheCommitAndThenAllVisible() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            let answers = try (0..<5).map { i in
                try env.writeHeld { txn throws -> Bool in
                    // Each body sees the earlier ones: they share the transaction.
                    let seen = try txn.count(db)
                    try txn.put(db, key: bytes("k\(i)"), value: bytes("v\(i)"))
                    return seen == i
                }
            }
            #expect(answers == [true, true, true, true, true])
            #expect(env.holdsWrite)
            #expect(try env.read { try $0.count(db) } == 0)
            try env.commitHeld()
            #expect(!env.holdsWrite)
            #expect(try env.read { try $0.count(db) } == 5)
            #expect(try env.read { try $0.get(db, bytes("k4")) } == bytes("v4"))
            try env.commitHeld()  // nothing held: no-op
        }
    }

    @Test func aThrowingBodyLeavesNoTraceAndKeepsTheEarlierOnes() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.writeHeld { txn throws in try txn.put(db, key: bytes("a"), value: bytes("1")) }
            #expect(throws: TestFailure.self) {
                try env.writeHeld { txn throws in
                    try txn.put(db, key: bytes("b"), value: bytes("2"))
                    _ = try txn.delete(db, key: bytes("a"))
                    throw TestFailure()
                }
            }
            try env.writeHeld { txn throws in
                #expect(try txn.get(db, bytes("a")) == bytes("1"))
                #expect(try txn.get(db, bytes("b")) == nil)
                try txn.put(db, key: bytes("c"), value: bytes("3"))
            }
            try env.commitHeld()
            try env.read { txn throws in
                #expect(try txn.get(db, bytes("a")) == bytes("1"))
                #expect(try txn.get(db, bytes("b")) == nil)
                #expect(try txn.get(db, bytes("c")) == bytes("3"))
            }
        }
    }

    @Test func theMapGrowsUnderAHeldWriteAndEveryBodyRunsAgain() throws {
        try withEnvironment(initialMapSizeBytes: 64 << 10) { env throws in
            let db = try env.openDatabase("t")
            let before = env.mapSizeBytes
            var runs = 0
            // 40 bodies of 250 keys: far more than 64 KiB, so the map fills partway.
            for chunk in UInt64(0)..<40 {
                try env.writeHeld { txn throws in
                    runs += 1
                    for i in chunk * 250..<(chunk + 1) * 250 {
                        try txn.put(db, key: i.bigEndianBytes, value: [UInt8](repeating: UInt8(i & 0xff), count: 32))
                    }
                }
            }
            try env.commitHeld()
            #expect(env.mapSizeBytes > before)
            #expect(runs > 40, "earlier bodies ran again in the grown map")
            try env.read { txn throws in
                #expect(try txn.count(db) == 10_000)
                for i in UInt64(0)..<10_000 {
                    #expect(try txn.get(db, i.bigEndianBytes) == [UInt8](repeating: UInt8(i & 0xff), count: 32))
                }
            }
        }
    }

    @Test func anotherThreadsWriteWaitsForTheCommit() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.writeHeld { txn throws in try txn.put(db, key: bytes("held"), value: bytes("1")) }
            let done = DispatchSemaphore(value: 0)
            let sawHeld = LockedBox(false)
            Thread {
                // Runs after the commit below: the held write owns the writer lock until then.
                try? env.write { txn in sawHeld.set(try txn.get(db, bytes("held")) != nil) }
                done.signal()
            }.start()
            #expect(done.wait(timeout: .now() + .milliseconds(200)) == .timedOut)
            try env.commitHeld()
            #expect(done.wait(timeout: .now() + .seconds(5)) == .success)
            #expect(sawHeld.get())
        }
    }
}

private final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func set(_ new: T) { lock.lock(); value = new; lock.unlock() }
    func get() -> T { lock.lock(); defer { lock.unlock() }; return value }
}
