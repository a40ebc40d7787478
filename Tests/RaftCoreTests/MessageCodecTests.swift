// The wire codec: every valid message round-trips, and the decoder is total on any bytes
// (random, mutated, forged lengths). Seeded; a failure names its seed.

import RaftCore
import Testing
import TestSupport

func randomMessage(_ g: inout SeededGenerator) -> Message {
    func u64() -> UInt64 { g.next() % 4 == 0 ? g.next() : g.next() % 1000 }
    func bytes(_ max: UInt64) -> [UInt8] { (0 ..< g.next() % max).map { _ in UInt8(truncatingIfNeeded: g.next()) } }
    func bool() -> Bool { g.next() % 2 == 0 }
    let body: MessageBody
    switch g.next() % 9 {
    case 0:
        let entries = (0 ..< g.next() % 5).map { _ in
            Entry(index: u64(), term: u64(), kind: [EntryKind.normal, .noop, .configuration][Int(g.next() % 3)], data: bytes(40))
        }
        body = .appendEntries(AppendEntries(prevLogIndex: u64(), prevLogTerm: u64(), entries: entries, leaderCommit: u64()))
    case 1: body = .appendEntriesResponse(AppendEntriesResponse(success: bool(), index: u64(), hintTerm: u64(), hintIndex: u64()))
    case 2: body = .requestVote(VoteRequest(lastLogIndex: u64(), lastLogTerm: u64(), preVote: bool(), leadershipTransfer: bool()))
    case 3: body = .requestVoteResponse(VoteResponse(granted: bool(), preVote: bool()))
    case 4: body = .heartbeat(Heartbeat(commit: u64(), readRound: u64()))
    case 5: body = .heartbeatResponse(HeartbeatResponse(readRound: u64()))
    case 6:
        let c = Configuration(voters: (0 ..< g.next() % 5).map { _ in u64() }, nonVoters: (0 ..< g.next() % 3).map { _ in u64() })
        body = .installSnapshot(InstallSnapshot(snapshot: Snapshot(metadata: SnapshotMetadata(index: u64(), term: u64(), configuration: c), data: bytes(64))))
    case 7: body = .installSnapshotResponse(InstallSnapshotResponse(lastIndex: u64()))
    default: body = .timeoutNow
    }
    return Message(from: u64(), to: u64(), term: u64(), body: body)
}

@Suite struct MessageCodecTests {
    static let cases: UInt64 = 3000

    @Test func everyValidMessageRoundTrips() {
        for seed in 0 ..< Self.cases {
            var g = SeededGenerator(seed: seed)
            let m = randomMessage(&g)
            let decoded = try? Message.decode(m.encoded())
            #expect(decoded == m, "seed=\(seed)")
            if decoded != m { return }
        }
    }

    @Test func randomBytesDecodeToAMessageOrAnError() {
        for seed in 0 ..< Self.cases {
            var g = SeededGenerator(seed: 10_000 + seed)
            var bytes = (0 ..< Int(g.next() % 120)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            if !bytes.isEmpty { bytes[0] = UInt8(1 + g.next() % 9) } // mostly a known kind, to get past the first byte
            do {
                let m = try Message.decode(bytes)
                #expect(try Message.decode(m.encoded()) == m, "seed=\(seed)")
            } catch {
                // An error is a fine answer; crashing or hanging is not.
            }
        }
    }

    @Test func mutatedEncodingsDecodeToAMessageOrAnError() {
        for seed in 0 ..< Self.cases {
            var g = SeededGenerator(seed: 20_000 + seed)
            var bytes = randomMessage(&g).encoded()
            switch g.next() % 4 {
            case 0: bytes[Int(g.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: 1 | g.next())
            case 1: bytes.removeLast(Int(g.next() % UInt64(bytes.count)) + 1)
            case 2: bytes += (0 ..< 1 + g.next() % 8).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            default:
                // Overwrite four bytes with a huge big-endian length.
                let at = Int(g.next() % UInt64(bytes.count))
                for i in at ..< min(at + 4, bytes.count) { bytes[i] = 0xFF }
            }
            _ = try? Message.decode(bytes)
        }
    }

    @Test func forgedEntryCountIsRejectedWithoutAllocating() {
        var bytes = Message(from: 1, to: 2, term: 3, body: .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit: 0))).encoded()
        bytes.replaceSubrange(bytes.count - 4 ..< bytes.count, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: MessageDecodingError.countExceedsInput(count: UInt32.max, remaining: 0)) { try Message.decode(bytes) }
    }

    @Test func forgedDataLengthIsRejected() {
        let m = Message(from: 1, to: 2, term: 3, body: .installSnapshot(InstallSnapshot(snapshot: Snapshot(
            metadata: SnapshotMetadata(index: 1, term: 1, configuration: Configuration(voters: [1])), data: [1, 2]))))
        var bytes = m.encoded()
        bytes.replaceSubrange(bytes.count - 6 ..< bytes.count - 2, with: [0x7F, 0xFF, 0xFF, 0xFF])
        #expect(throws: MessageDecodingError.self) { try Message.decode(bytes) }
    }

    @Test func unknownKindAndTrailingBytesAreErrors() {
        #expect(throws: MessageDecodingError.unknownMessageKind(0)) { try Message.decode([0] + [UInt8](repeating: 0, count: 24)) }
        #expect(throws: MessageDecodingError.truncated(needed: 1, remaining: 0)) { try Message.decode([]) }
        let bytes = Message(from: 1, to: 2, term: 3, body: .timeoutNow).encoded() + [0]
        #expect(throws: MessageDecodingError.trailingBytes(1)) { try Message.decode(bytes) }
    }

    @Test func configurationRoundTrips() throws {
        let c = Configuration(voters: [3, 1, 2], nonVoters: [9])
        #expect(try Configuration.decode(c.encoded()) == c)
    }
}
