// Binary encoding of Message and Configuration: big-endian integers, length-prefixed byte
// fields and counted lists. The decoder is total: any bytes give a value or an error, and no
// length read from the input allocates more than the input itself could fill.

public enum MessageDecodingError: Error, Sendable, Equatable {
    case truncated(needed: Int, remaining: Int)
    case unknownMessageKind(UInt8)
    case unknownEntryKind(UInt8)
    case invalidBool(UInt8)
    case countExceedsInput(count: UInt32, remaining: Int)
    case trailingBytes(Int)
}

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    mutating func u32(_ v: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
    }
    mutating func u64(_ v: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }
    mutating func blob(_ v: [UInt8]) {
        precondition(v.count <= Int(UInt32.max), "field too large to encode")
        u32(UInt32(v.count))
        bytes.append(contentsOf: v)
    }
}

struct ByteReader {
    let bytes: [UInt8]
    var offset = 0
    var remaining: Int { bytes.count - offset }

    mutating func take(_ n: Int) throws(MessageDecodingError) -> ArraySlice<UInt8> {
        guard n <= remaining else { throw .truncated(needed: n, remaining: remaining) }
        defer { offset += n }
        return bytes[offset ..< offset + n]
    }
    mutating func u8() throws(MessageDecodingError) -> UInt8 { try take(1).first! }
    mutating func bool() throws(MessageDecodingError) -> Bool {
        let v = try u8()
        guard v <= 1 else { throw .invalidBool(v) }
        return v == 1
    }
    mutating func u32() throws(MessageDecodingError) -> UInt32 {
        try take(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws(MessageDecodingError) -> UInt64 {
        try take(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
    mutating func blob() throws(MessageDecodingError) -> [UInt8] {
        let n = try u32()
        guard Int(n) <= remaining else { throw .truncated(needed: Int(n), remaining: remaining) }
        return Array(try take(Int(n)))
    }
    /// A list count, checked against the bytes left: each element needs at least `minSize`.
    mutating func count(minElementSize: Int) throws(MessageDecodingError) -> Int {
        let n = try u32()
        guard UInt64(n) * UInt64(minElementSize) <= UInt64(remaining) else {
            throw .countExceedsInput(count: n, remaining: remaining)
        }
        return Int(n)
    }
}

extension Configuration {
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        encode(into: &w)
        return w.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(MessageDecodingError) -> Configuration {
        var r = ByteReader(bytes: bytes)
        let c = try decode(from: &r)
        guard r.remaining == 0 else { throw .trailingBytes(r.remaining) }
        return c
    }

    func encode(into w: inout ByteWriter) {
        w.u32(UInt32(voters.count))
        for v in voters { w.u64(v) }
        w.u32(UInt32(nonVoters.count))
        for v in nonVoters { w.u64(v) }
    }

    static func decode(from r: inout ByteReader) throws(MessageDecodingError) -> Configuration {
        var voters: [NodeID] = []
        for _ in 0 ..< (try r.count(minElementSize: 8)) { voters.append(try r.u64()) }
        var nonVoters: [NodeID] = []
        for _ in 0 ..< (try r.count(minElementSize: 8)) { nonVoters.append(try r.u64()) }
        return Configuration(voters: voters, nonVoters: nonVoters)
    }
}

extension Message {
    private enum Kind: UInt8 {
        case appendEntries = 1, appendEntriesResponse, requestVote, requestVoteResponse
        case heartbeat, heartbeatResponse, installSnapshot, installSnapshotResponse, timeoutNow
    }

    /// Bytes of an entry with empty data: index, term, kind, data length.
    private static let minEntrySize = 8 + 8 + 1 + 4

    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        switch body {
        case .appendEntries: w.u8(Kind.appendEntries.rawValue)
        case .appendEntriesResponse: w.u8(Kind.appendEntriesResponse.rawValue)
        case .requestVote: w.u8(Kind.requestVote.rawValue)
        case .requestVoteResponse: w.u8(Kind.requestVoteResponse.rawValue)
        case .heartbeat: w.u8(Kind.heartbeat.rawValue)
        case .heartbeatResponse: w.u8(Kind.heartbeatResponse.rawValue)
        case .installSnapshot: w.u8(Kind.installSnapshot.rawValue)
        case .installSnapshotResponse: w.u8(Kind.installSnapshotResponse.rawValue)
        case .timeoutNow: w.u8(Kind.timeoutNow.rawValue)
        }
        w.u64(from)
        w.u64(to)
        w.u64(term)
        switch body {
        case let .appendEntries(a):
            w.u64(a.prevLogIndex)
            w.u64(a.prevLogTerm)
            w.u64(a.leaderCommit)
            w.u32(UInt32(a.entries.count))
            for e in a.entries {
                w.u64(e.index)
                w.u64(e.term)
                w.u8(e.kind.rawValue)
                w.blob(e.data)
            }
        case let .appendEntriesResponse(r):
            w.bool(r.success)
            w.u64(r.index)
            w.u64(r.hintTerm)
            w.u64(r.hintIndex)
        case let .requestVote(v):
            w.u64(v.lastLogIndex)
            w.u64(v.lastLogTerm)
            w.bool(v.preVote)
            w.bool(v.leadershipTransfer)
        case let .requestVoteResponse(v):
            w.bool(v.granted)
            w.bool(v.preVote)
        case let .heartbeat(h):
            w.u64(h.commit)
            w.u64(h.readRound)
        case let .heartbeatResponse(h):
            w.u64(h.readRound)
        case let .installSnapshot(s):
            w.u64(s.snapshot.metadata.index)
            w.u64(s.snapshot.metadata.term)
            s.snapshot.metadata.configuration.encode(into: &w)
            w.blob(s.snapshot.data)
        case let .installSnapshotResponse(s):
            w.u64(s.lastIndex)
        case .timeoutNow:
            break
        }
        return w.bytes
    }

    /// Decodes one whole message; bytes left over are an error.
    public static func decode(_ bytes: [UInt8]) throws(MessageDecodingError) -> Message {
        var r = ByteReader(bytes: bytes)
        let raw = try r.u8()
        guard let kind = Kind(rawValue: raw) else { throw .unknownMessageKind(raw) }
        let from = try r.u64()
        let to = try r.u64()
        let term = try r.u64()
        let body: MessageBody
        switch kind {
        case .appendEntries:
            let prevIndex = try r.u64()
            let prevTerm = try r.u64()
            let commit = try r.u64()
            var entries: [Entry] = []
            for _ in 0 ..< (try r.count(minElementSize: minEntrySize)) {
                let index = try r.u64()
                let entryTerm = try r.u64()
                let rawKind = try r.u8()
                guard let entryKind = EntryKind(rawValue: rawKind) else { throw .unknownEntryKind(rawKind) }
                entries.append(Entry(index: index, term: entryTerm, kind: entryKind, data: try r.blob()))
            }
            body = .appendEntries(AppendEntries(prevLogIndex: prevIndex, prevLogTerm: prevTerm,
                                                entries: entries, leaderCommit: commit))
        case .appendEntriesResponse:
            body = .appendEntriesResponse(AppendEntriesResponse(
                success: try r.bool(), index: try r.u64(), hintTerm: try r.u64(), hintIndex: try r.u64()))
        case .requestVote:
            body = .requestVote(VoteRequest(lastLogIndex: try r.u64(), lastLogTerm: try r.u64(),
                                            preVote: try r.bool(), leadershipTransfer: try r.bool()))
        case .requestVoteResponse:
            body = .requestVoteResponse(VoteResponse(granted: try r.bool(), preVote: try r.bool()))
        case .heartbeat:
            body = .heartbeat(Heartbeat(commit: try r.u64(), readRound: try r.u64()))
        case .heartbeatResponse:
            body = .heartbeatResponse(HeartbeatResponse(readRound: try r.u64()))
        case .installSnapshot:
            let index = try r.u64()
            let snapTerm = try r.u64()
            let configuration = try Configuration.decode(from: &r)
            let data = try r.blob()
            body = .installSnapshot(InstallSnapshot(snapshot: Snapshot(
                metadata: SnapshotMetadata(index: index, term: snapTerm, configuration: configuration), data: data)))
        case .installSnapshotResponse:
            body = .installSnapshotResponse(InstallSnapshotResponse(lastIndex: try r.u64()))
        case .timeoutNow:
            body = .timeoutNow
        }
        guard r.remaining == 0 else { throw .trailingBytes(r.remaining) }
        return Message(from: from, to: to, term: term, body: body)
    }
}
