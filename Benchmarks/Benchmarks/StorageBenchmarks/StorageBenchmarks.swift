// Storage and state-store benchmarks: durable LMDB log appends (one fsync per batch), KV
// command apply on a `.noMetaSync` environment (as the agent's state store), and point reads.
// Every fixture lives in a temporary directory that teardown removes; on-disk size is bounded.
import Benchmark
import BenchmarkSupport
import Foundation
import StateStore
import Storage

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: BenchmarkMetric.default + [entriesPerSecond],
        maxDuration: .seconds(3),
        maxIterations: 10_000
    )

    for batchSize in [1, 64, 1024] {
        let logSlot = FixtureSlot<LogFixture>()
        Benchmark("LogStore.append durable, batch of \(batchSize) x 256 B",
                  configuration: .init(maxIterations: batchSize == 1024 ? 1_000 : 10_000)) { benchmark in
            let log = logSlot.fixture
            let batch = log.nextBatch(count: batchSize)
            benchmark.startMeasurement()
            let started = ContinuousClock.now
            try log.store.append(batch)
            let elapsed = ContinuousClock.now - started
            benchmark.stopMeasurement()
            benchmark.measurement(entriesPerSecond, perSecond(batchSize, elapsed))
            try log.boundSize()
        } setup: {
            logSlot.value = try LogFixture()
        } teardown: {
            logSlot.value = nil
        }

        let stateSlot = FixtureSlot<StateFixture>()
        Benchmark("StateStore.apply set, batch of \(batchSize) x 256 B (noMetaSync)",
                  configuration: .init(maxIterations: batchSize == 1024 ? 1_000 : 10_000)) { benchmark in
            let state = stateSlot.fixture
            let batch = try state.nextBatch(count: batchSize)
            benchmark.startMeasurement()
            let started = ContinuousClock.now
            let applied = try state.store.apply(batch)
            let elapsed = ContinuousClock.now - started
            benchmark.stopMeasurement()
            precondition(applied.results.count == batchSize, "apply answered \(applied.results.count) results")
            benchmark.measurement(entriesPerSecond, perSecond(batchSize, elapsed))
        } setup: {
            stateSlot.value = try StateFixture()
        } teardown: {
            stateSlot.value = nil
        }
    }

    let readsSlot = FixtureSlot<ReadFixture>()
    Benchmark("StateStore.get existing key, 100k-key store",
              configuration: .init(metrics: BenchmarkMetric.default, scalingFactor: .kilo,
                                   maxIterations: 2_000)) { benchmark in
        let reads = readsSlot.fixture
        for _ in benchmark.scaledIterations {
            let (_, entry) = try reads.state.store.get(reads.nextKey())
            precondition(entry != nil, "a key written in setup is missing")
            blackHole(entry)
        }
    } setup: {
        readsSlot.value = try ReadFixture(keyCount: 100_000)
    } teardown: {
        readsSlot.value = nil
    }
}

/// Log entries (or KV commands) per second for one iteration; shown next to the batch time.
let entriesPerSecond = BenchmarkMetric.custom("entries/s", polarity: .prefersLarger, useScalingFactor: false)

func temporaryDirectory(_ label: String) -> String {
    NSTemporaryDirectory() + "conclave-bench-\(label)-" + UUID().uuidString
}

/// A durable log in a temporary directory. Used by one benchmark at a time, from the thread
/// that runs its iterations; never shared, hence `@unchecked Sendable`.
final class LogFixture: @unchecked Sendable {
    /// Above this many entries the oldest are truncated (outside the measurement), keeping the
    /// data file near 4 × 16k × 300 B plus LMDB's free pages.
    static let maxRetainedEntries: UInt64 = 16_384

    let directory = temporaryDirectory("log")
    let environment: Environment
    let store: LogStore

    init() throws {
        environment = try Environment(directory: directory, durability: .full)
        store = try LogStore(environment: environment)
    }

    deinit {
        environment.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func nextBatch(count: Int) -> [LogEntry] {
        let first = store.lastIndex + 1
        return (0..<UInt64(count)).map { LogEntry(index: first + $0, term: 1, kind: 1, data: value256) }
    }

    func boundSize() throws {
        guard store.lastIndex - store.firstIndex + 1 > Self.maxRetainedEntries else { return }
        try store.truncatePrefix(through: store.lastIndex - Self.maxRetainedEntries / 2)
    }
}

/// A state store on a `.noMetaSync` environment, fed unique keys. Confined like `LogFixture`.
final class StateFixture: @unchecked Sendable {
    /// Past this many keys the store is replaced by an empty one (outside the measurement):
    /// about 200k × 330 B ≈ 70 MB on disk at most.
    static let maxKeys: UInt64 = 200_000

    private(set) var directory = temporaryDirectory("state")
    private(set) var store: StateStore
    private var nextIndex: UInt64 = 1

    init() throws {
        store = try StateStore(environment: try Environment(directory: directory, durability: .noMetaSync))
    }

    deinit {
        store.environment.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `count` encoded `.set` commands for keys never written before, with their log indexes.
    func nextBatch(count: Int) throws -> [(index: UInt64, command: [UInt8])] {
        if nextIndex + UInt64(count) > Self.maxKeys { try replaceStore() }
        defer { nextIndex += UInt64(count) }
        return (nextIndex..<nextIndex + UInt64(count)).map { index in
            (index, KVCommand.set(key: benchKey(index), value: value256, flags: 0).encoded())
        }
    }

    private func replaceStore() throws {
        store.environment.close()
        try? FileManager.default.removeItem(atPath: directory)
        directory = temporaryDirectory("state")
        store = try StateStore(environment: try Environment(directory: directory, durability: .noMetaSync))
        nextIndex = 1
    }
}

/// A state store filled with `keyCount` keys in setup, read back in a pseudo-random order.
final class ReadFixture: @unchecked Sendable {
    let state: StateFixture
    let keys: [String]
    private var position: UInt64 = 0

    init(keyCount: Int) throws {
        state = try StateFixture()
        keys = (1...UInt64(keyCount)).map(benchKey)
        var written = 0
        while written < keyCount {
            _ = try state.store.apply(try state.nextBatch(count: min(10_000, keyCount - written)))
            written += 10_000
        }
    }

    /// Walks the keys with a stride coprime to their count, so consecutive reads land on
    /// different LMDB pages instead of the one just read.
    func nextKey() -> String {
        position = (position + 7_919) % UInt64(keys.count)
        return keys[Int(position)]
    }
}

func benchKey(_ index: UInt64) -> String {
    "bench/key-\(index)"
}
