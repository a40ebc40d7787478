// Test helpers: a StateStore in a temporary environment, and a driver that applies one
// command per log index.
import Foundation
import StateStore
import Storage

func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("conclave-statestore-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: url) }
    return try body(url.path)
}

/// Applies commands at consecutive log indexes, starting at 1.
final class KVDriver {
    let environment: Environment
    let store: StateStore
    private(set) var index: UInt64 = 0
    private(set) var lastChangedKeys: [String] = []

    init(_ environment: Environment) throws {
        self.environment = environment
        store = try StateStore(environment: environment)
    }

    @discardableResult
    func run(_ command: KVCommand) throws -> ApplyResult {
        index += 1
        let batch = try store.apply([(index: index, command: command.encoded())])
        lastChangedKeys = batch.changedKeys
        return batch.results[0]
    }

    func entry(_ key: String) throws -> KVEntry? { try store.get(key).entry }
    func tableIndex() throws -> UInt64 { try store.get("").index }
}

func withDriver<T>(initialMapSizeBytes: Int = 1 << 20, _ body: (KVDriver) throws -> T) throws -> T {
    try withTemporaryDirectory { path throws in
        let environment = try Environment(directory: path, initialMapSizeBytes: initialMapSizeBytes,
                                          durability: .noMetaSync)
        defer { environment.close() }
        return try body(try KVDriver(environment))
    }
}

func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }

