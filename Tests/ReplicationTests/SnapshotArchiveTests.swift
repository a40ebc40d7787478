// The snapshot archive (GET /v1/snapshot, `conclave snapshot`): a round trip, and a total
// decoder that refuses any damage (checksum, sizes, the dump inside).
import Foundation
@testable import Replication
import StateStore
import Storage
import Testing

@Suite("Snapshot archive")
struct SnapshotArchiveTests {
    func sampleDump() throws -> [UInt8] {
        let dir = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = try Environment(directory: dir, durability: .noMetaSync)
        defer { env.close() }
        let store = try StateStore(environment: env)
        _ = try store.apply((1 ... 5).map { (index: UInt64($0), command: KVCommand.set(key: "k\($0)", value: [1, 2], flags: 0).encoded()) })
        return try StateSnapshot.dump(env).bytes
    }

    @Test func anArchiveRoundTripsAndDescribesItself() throws {
        let dump = try sampleDump()
        let archive = SnapshotArchive.encode(index: 5, term: 2, createdMilliseconds: 1_477_944_140_022, dump: dump)
        let info = try SnapshotArchive.inspect(archive)
        #expect(info.id == "2-5-1477944140022")
        #expect(info.size == archive.count)
        #expect(info.index == 5)
        #expect(info.records > 5)
        // The header's index must be the state's.
        #expect(throws: SnapshotArchive.DecodingError.self) {
            try SnapshotArchive.inspect(SnapshotArchive.encode(index: 6, term: 2, createdMilliseconds: 0, dump: dump))
        }
    }

    @Test(arguments: [1, 2, UInt64.random(in: 3 ... UInt64.max)])
    func anyDamageIsRefused(seed: UInt64) throws {
        var random = FaultRandom(seed: seed)
        let archive = SnapshotArchive.encode(index: 5, term: 2, createdMilliseconds: 9, dump: try sampleDump())
        for round in 0 ..< 2_000 {
            var input = archive
            switch random.next() % 3 {
            case 0: input[Int(random.next() % UInt64(input.count))] ^= UInt8(1 + random.next() % 255)
            case 1: input.removeSubrange(Int(random.next() % UInt64(input.count))...)
            default: input = (0 ..< Int(random.next() % 100)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            }
            if (try? SnapshotArchive.inspect(input)) != nil {
                Issue.record("seed \(seed) round \(round): a damaged archive was accepted")
                return
            }
        }
    }
}
