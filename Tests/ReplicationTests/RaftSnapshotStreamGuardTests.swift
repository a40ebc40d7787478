// A follower's defences on the snapshot stream: a dump whose checksum does not match, a
// stream that stalls, a second stream at once and an oversized announcement are dropped
// without touching the state.
import EventLoop
import Foundation
import RaftCore
@testable import Replication
import StateStore
import Testing

@Suite("Raft snapshot stream guards", .serialized)
struct RaftSnapshotStreamGuardTests {
    static var config: RaftReplicatorConfig {
        var config = RaftReplicatorConfig.fastForTests()
        config.snapshotStallTimeoutMilliseconds = 300
        config.maxSnapshotBytes = 1 << 20
        return config
    }

    func header(size: UInt64) -> [UInt8] {
        SnapshotStreamHeader(leader: 99, term: 50,
                             metadata: SnapshotMetadata(index: 1_000, term: 50, configuration: Configuration(voters: [1, 99])),
                             addressBook: [:], dumpSize: size, appliedIndex: 1_000).encoded()
    }

    /// Opens a connection to `port`, writes `frames`, and reports when the server closes it.
    func stream(_ loop: Loop, port: Int, _ frames: [[UInt8]]) throws -> Unsafe<Bool> {
        let closed = Unsafe(false)
        let lock = NSLock()
        try onLoop(loop) {
            TCPConnection.connect(on: loop, host: "127.0.0.1", port: port) { result in
                guard case let .success(connection) = result else { lock.lock(); closed.value = true; lock.unlock(); return }
                connection.onRead = { _ in }
                connection.onClose = { _ in lock.lock(); closed.value = true; lock.unlock() }
                connection.startReading()
                for frame in frames { connection.write(Framing.frame(frame)) }
            }
        }
        return closed
    }

    func failedStreams(_ cluster: TestCluster) throws -> Int { try cluster.servers[1]!.run { $0.snapshots.failedStreams } }

    @Test func forgedOrStalledStreamsAreDroppedAndTheStateIsUntouched() throws {
        let cluster = try TestCluster(size: 1, config: Self.config)
        defer { cluster.shutdown() }
        _ = try #require(try cluster.waitForLeader())
        #expect(try cluster.write(on: 1, prefix: "k", count: 5).acknowledgedKeys.count == 5)
        let before = try cluster.contents(1)
        let port = cluster.servers[1]!.port
        let clientLoop = try Loop(name: "forger")
        clientLoop.start()
        defer { clientLoop.shutdown() }

        // A wrong checksum: the dump is never loaded.
        let dump: [UInt8] = Array(repeating: 7, count: 100)
        let bad = try stream(clientLoop, port: port, [header(size: 100), [SnapshotFrameKind.chunk] + dump,
                                                      [SnapshotFrameKind.trailer] + Array(repeating: 0, count: 32)])
        #expect(eventually { bad.value })
        #expect(try eventually { try failedStreams(cluster) == 1 })

        // More than maxSnapshotBytes announced: refused at the header.
        let huge = try stream(clientLoop, port: port, [header(size: 2 << 20)])
        #expect(eventually { huge.value })
        #expect(try eventually { try failedStreams(cluster) == 2 })

        // A stalled stream holds the one slot; a second stream meanwhile is refused at once;
        // the stalled one is dropped after the stall timeout.
        let stalled = try stream(clientLoop, port: port, [header(size: 100), [SnapshotFrameKind.chunk, 1, 2, 3]])
        #expect(try eventually { try cluster.servers[1]!.run { $0.snapshots.incoming != nil } })
        let second = try stream(clientLoop, port: port, [header(size: 100)])
        #expect(eventually { second.value })
        #expect(!stalled.value)
        #expect(eventually(10) { stalled.value })
        #expect(try failedStreams(cluster) == 3)

        #expect(try cluster.contents(1) == before)
        #expect(try cluster.servers[1]!.run { $0.snapshotsInstalled } == 0)
        // Every refused stream's temporary file was removed.
        let directory = DataLayout.snapshotTempDirectory(cluster.servers[1]!.dataDirectory)
        #expect(eventually { ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? ["?"]).isEmpty })
    }
}
