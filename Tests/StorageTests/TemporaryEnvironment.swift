// Test helper: an environment in a fresh temporary directory, removed afterwards.
import Foundation
import Storage

func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("conclave-storage-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: url) }
    return try body(url.path)
}

func withEnvironment<T>(initialMapSizeBytes: Int = 1 << 20,
                        _ body: (Environment) throws -> T) throws -> T {
    try withTemporaryDirectory { path throws in
        let environment = try Environment(directory: path, initialMapSizeBytes: initialMapSizeBytes,
                                          durability: .noMetaSync)
        defer { environment.close() }
        return try body(environment)
    }
}

func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }

struct TestFailure: Error {}
