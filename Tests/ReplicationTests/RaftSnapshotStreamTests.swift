// The snapshot stream's frames: a valid stream decodes in order, every ordering or size
// violation is an error, and the decoder is total on random and mutated frames.
import Foundation
import RaftCore
@testable import Replication
import Testing

@Suite("Raft snapshot stream")
struct RaftSnapshotStreamTests {
    let header = SnapshotStreamHeader(
        leader: 7, term: 3,
        metadata: SnapshotMetadata(index: 40, term: 2, configuration: Configuration(voters: [7, 8, 9], nonVoters: [10])),
        addressBook: [7: "127.0.0.1:1", 8: "127.0.0.1:2"], dumpSize: 10, appliedIndex: 44)

    @Test func aValidStreamDecodesInOrder() throws {
        var decoder = SnapshotStreamDecoder(maxSnapshotBytes: 100)
        #expect(try decoder.decode(header.encoded()) == .header(header))
        #expect(try decoder.decode([SnapshotFrameKind.chunk] + Array(repeating: 1, count: 6)) == .chunk(Array(repeating: 1, count: 6)))
        #expect(try decoder.decode([SnapshotFrameKind.chunk, 2, 2, 2, 2]) == .chunk([2, 2, 2, 2]))
        let sum = Array(repeating: UInt8(9), count: 32)
        #expect(try decoder.decode([SnapshotFrameKind.trailer] + sum) == .trailer(checksum: sum))
        #expect(throws: SnapshotStreamError.self) { try decoder.decode([SnapshotFrameKind.chunk, 1]) }
    }

    @Test(arguments: [
        ("chunk before header", [[SnapshotFrameKind.chunk, 1]]),
        ("too many bytes", [[SnapshotFrameKind.chunk] + Array(repeating: 0, count: 11)]),
        ("early trailer", [[SnapshotFrameKind.chunk, 1], [SnapshotFrameKind.trailer] + Array(repeating: 0, count: 32)]),
        ("short trailer", [[SnapshotFrameKind.chunk] + Array(repeating: 0, count: 10), [SnapshotFrameKind.trailer, 1]]),
        ("empty chunk", [[SnapshotFrameKind.chunk]]),
        ("unknown kind", [[0x44, 1]]),
        ("empty frame", [[]]),
    ] as [(String, [[UInt8]])])
    func orderingAndSizeViolationsAreErrors(_ name: String, _ frames: [[UInt8]]) throws {
        var decoder = SnapshotStreamDecoder(maxSnapshotBytes: 100)
        var failed = false
        if name != "chunk before header" { _ = try decoder.decode(header.encoded()) }
        for frame in frames {
            do { _ = try decoder.decode(frame) } catch { failed = true; break }
        }
        #expect(failed, "\(name)")
    }

    @Test func aSnapshotOverTheLimitIsRefusedAtTheHeader() {
        var decoder = SnapshotStreamDecoder(maxSnapshotBytes: 9)
        #expect(throws: SnapshotStreamError.tooLarge(size: 10, limit: 9)) { try decoder.decode(header.encoded()) }
    }

    /// Random frames and mutated headers: the decoder answers with an event or an error,
    /// never a crash; a mutated header that decodes round-trips through its encoding.
    @Test(arguments: [1, 2, UInt64.random(in: 3 ... UInt64.max)])
    func decodingIsTotal(seed: UInt64) {
        var random = FaultRandom(seed: seed)
        func byte() -> UInt8 { UInt8(truncatingIfNeeded: random.next()) }
        let valid = header.encoded()
        for round in 0 ..< 5_000 {
            var decoder = SnapshotStreamDecoder(maxSnapshotBytes: 1 << 20)
            var frame: [UInt8]
            if round % 2 == 0 {
                frame = (0 ..< Int(random.next() % 80)).map { _ in byte() }
                if !frame.isEmpty, random.next() % 2 == 0 { frame[0] = StreamKind.snapshot }
            } else {
                frame = valid
                for _ in 0 ... random.next() % 3 {
                    switch random.next() % 3 {
                    case 0 where !frame.isEmpty: frame[Int(random.next() % UInt64(frame.count))] = byte()
                    case 1 where !frame.isEmpty: frame.removeSubrange(Int(random.next() % UInt64(frame.count))...)
                    default: frame.insert(byte(), at: Int(random.next() % UInt64(frame.count + 1)))
                    }
                }
            }
            if case let .header(decoded)? = try? decoder.decode(frame),
               (try? SnapshotStreamHeader.decode(decoded.encoded())) != decoded {
                Issue.record("seed \(seed) round \(round): \(frame) decoded to a header that does not round-trip")
                return
            }
            // Whatever follows a header is checked too.
            for _ in 0 ..< 3 {
                let next = (0 ..< Int(random.next() % 40)).map { _ in byte() }
                _ = try? decoder.decode(next)
            }
        }
    }
}
