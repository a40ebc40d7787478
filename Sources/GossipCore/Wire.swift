// The gossip wire format: one type byte per message, compound packets that frame several
// messages, varint lengths and counts, big-endian fixed integers. The decoder is total:
// any bytes give messages or a `GossipWireError`, and no length is trusted before it is
// checked against the bytes that remain.

public enum WireLimits {
    public static let maxStringBytes = 512
    public static let maxTagsBytes = 4_096
    public static let maxTagPairs = 128
    public static let maxPushPullMembers = 16_384
    public static let maxCompoundParts = 255
    public static let maxStreamBytes = 8 * 1024 * 1024
    /// User event / query / query response payloads (each also fits in one datagram).
    public static let maxPayloadBytes = 65_000
    /// Node names a query may be filtered to.
    public static let maxQueryFilterNodes = 1_024
}

public enum MemberState: UInt8, Sendable, Equatable {
    case alive = 0, suspect = 1, dead = 2, left = 3
    public var isDeadOrLeft: Bool { self == .dead || self == .left }
}

/// One member as exchanged by push-pull.
public struct MemberSnapshot: Sendable, Equatable {
    public var name: String
    public var address: String
    public var incarnation: UInt32
    public var state: MemberState
    public var tags: [String: String]
    public init(name: String, address: String, incarnation: UInt32, state: MemberState, tags: [String: String]) {
        self.name = name; self.address = address; self.incarnation = incarnation; self.state = state; self.tags = tags
    }
}

public enum GossipMessage: Sendable, Equatable {
    /// SWIM ping; `target` lets a receiver reject pings meant for a previous owner of its address.
    case ping(seq: UInt32, target: String, source: String, sourceAddress: String)
    /// SWIM ping-req: probe `target` for us and relay its ack (and a nack if it stays silent).
    case indirectPing(seq: UInt32, target: String, targetAddress: String, source: String, sourceAddress: String, wantNack: Bool)
    case ack(seq: UInt32)
    /// Lifeguard: the relay could not reach the target (but the relay itself is alive).
    case nack(seq: UInt32)
    case suspect(incarnation: UInt32, node: String, from: String)
    case alive(incarnation: UInt32, node: String, address: String, tags: [String: String])
    /// `from == node` means a graceful leave.
    case dead(incarnation: UInt32, node: String, from: String)
    case pushPull(join: Bool, members: [MemberSnapshot])
    /// Serf user event, gossiped; de-duplicated by (ltime, name, payload).
    case userEvent(ltime: UInt64, name: String, payload: [UInt8], coalesce: Bool)
    /// Serf query, gossiped; de-duplicated by (ltime, id). Responses go straight to `fromAddress`.
    case query(ltime: UInt64, id: UInt32, from: String, fromAddress: String, filterNodes: [String],
               requestAck: Bool, timeoutMs: UInt64, name: String, payload: [UInt8])
    /// Serf query response (or ack when `ack` is set), sent directly to the asker, never gossiped.
    case queryResponse(ltime: UInt64, id: UInt32, from: String, ack: Bool, payload: [UInt8])

    var typeByte: UInt8 {
        switch self {
        case .ping: 1
        case .indirectPing: 2
        case .ack: 3
        case .nack: 4
        case .suspect: 5
        case .alive: 6
        case .dead: 7
        case .pushPull: 8
        case .userEvent: 10
        case .query: 11
        case .queryResponse: 12
        }
    }
}

public enum GossipWireError: Error, Equatable, Sendable {
    case empty
    case truncated(needed: Int, remaining: Int)
    case unknownMessageType(UInt8)
    case varintOverflow
    case tooLarge(field: String, size: Int, limit: Int)
    case invalidUTF8(field: String)
    case invalidState(UInt8)
    case invalidBool(UInt8)
    case nestedCompound
    case trailingBytes(Int)
}

let compoundTypeByte: UInt8 = 9

public enum GossipWire {
    public static func encode(_ message: GossipMessage) -> [UInt8] {
        var w = ByteWriter()
        w.write(message)
        return w.bytes
    }

    /// Frames already-encoded messages as one compound packet.
    public static func encodeCompound(_ parts: [[UInt8]]) -> [UInt8] {
        precondition(parts.count <= WireLimits.maxCompoundParts, "compound packet over \(WireLimits.maxCompoundParts) parts")
        var w = ByteWriter()
        w.byte(compoundTypeByte)
        w.varint(UInt64(parts.count))
        for p in parts { w.varint(UInt64(p.count)); w.bytes.append(contentsOf: p) }
        return w.bytes
    }

    /// Bytes added by compound framing: type + count + a length per part.
    static func compoundOverhead(partSizes: [Int]) -> Int {
        2 + partSizes.reduce(0) { $0 + varintSize(UInt64($1)) }
    }
    static func varintSize(_ v: UInt64) -> Int {
        var v = v, n = 1
        while v >= 0x80 { v >>= 7; n += 1 }
        return n
    }

    /// A UDP packet: one message or a compound of messages.
    public static func decodePacket(_ bytes: [UInt8]) throws(GossipWireError) -> [GossipMessage] {
        guard let first = bytes.first else { throw .empty }
        if first != compoundTypeByte { return [try decodeMessage(bytes)] }
        var r = ByteReader(bytes)
        _ = try r.byte()
        let count = try r.count(field: "compound parts", limit: WireLimits.maxCompoundParts, minBytesEach: 2)
        var out: [GossipMessage] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let len = try r.count(field: "compound part", limit: r.remaining, minBytesEach: 1)
            let part = Array(try r.slice(len))
            if part.first == compoundTypeByte { throw .nestedCompound }
            out.append(try decodeMessage(part))
        }
        if r.remaining != 0 { throw .trailingBytes(r.remaining) }
        return out
    }

    /// Exactly one message (streams carry one message each way).
    public static func decodeMessage(_ bytes: [UInt8]) throws(GossipWireError) -> GossipMessage {
        var r = ByteReader(bytes)
        let m = try r.message()
        if r.remaining != 0 { throw .trailingBytes(r.remaining) }
        return m
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func byte(_ b: UInt8) { bytes.append(b) }
    mutating func u32(_ v: UInt32) {
        bytes.append(UInt8(truncatingIfNeeded: v >> 24)); bytes.append(UInt8(truncatingIfNeeded: v >> 16))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v))
    }
    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func string(_ s: String) { varint(UInt64(s.utf8.count)); bytes.append(contentsOf: s.utf8) }
    mutating func tags(_ t: [String: String]) {
        varint(UInt64(t.count))
        for k in t.keys.sorted() { string(k); string(t[k]!) }
    }
    mutating func payload(_ p: [UInt8]) { varint(UInt64(p.count)); bytes.append(contentsOf: p) }
    mutating func write(_ m: GossipMessage) {
        byte(m.typeByte)
        switch m {
        case let .ping(seq, target, source, sourceAddress):
            u32(seq); string(target); string(source); string(sourceAddress)
        case let .indirectPing(seq, target, targetAddress, source, sourceAddress, wantNack):
            u32(seq); string(target); string(targetAddress); string(source); string(sourceAddress); byte(wantNack ? 1 : 0)
        case let .ack(seq), let .nack(seq):
            u32(seq)
        case let .suspect(inc, node, from), let .dead(inc, node, from):
            u32(inc); string(node); string(from)
        case let .alive(inc, node, address, t):
            u32(inc); string(node); string(address); tags(t)
        case let .pushPull(join, members):
            byte(join ? 1 : 0); varint(UInt64(members.count))
            for s in members { string(s.name); string(s.address); u32(s.incarnation); byte(s.state.rawValue); tags(s.tags) }
        case let .userEvent(ltime, name, p, coalesce):
            varint(ltime); string(name); payload(p); byte(coalesce ? 1 : 0)
        case let .query(ltime, id, from, fromAddress, filterNodes, requestAck, timeoutMs, name, p):
            varint(ltime); u32(id); string(from); string(fromAddress)
            varint(UInt64(filterNodes.count)); for n in filterNodes { string(n) }
            byte(requestAck ? 1 : 0); varint(timeoutMs); string(name); payload(p)
        case let .queryResponse(ltime, id, from, ack, p):
            varint(ltime); u32(id); string(from); byte(ack ? 1 : 0); payload(p)
        }
    }
}

struct ByteReader {
    let bytes: [UInt8]
    var pos = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var remaining: Int { bytes.count - pos }

    mutating func byte() throws(GossipWireError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated(needed: 1, remaining: remaining) }
        defer { pos += 1 }
        return bytes[pos]
    }
    mutating func slice(_ n: Int) throws(GossipWireError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .truncated(needed: n, remaining: remaining) }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }
    mutating func u32() throws(GossipWireError) -> UInt32 {
        let s = try slice(4)
        return s.reduce(0) { ($0 << 8) | UInt32($1) }
    }
    mutating func varint() throws(GossipWireError) -> UInt64 {
        var result: UInt64 = 0, shift: UInt64 = 0
        while true {
            let b = try byte()
            if shift == 63 && b > 1 { throw .varintOverflow }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw .varintOverflow }
        }
    }
    /// A count or length, checked against a limit and against the bytes left (each element
    /// needs at least `minBytesEach`), before anything is allocated for it.
    mutating func count(field: String, limit: Int, minBytesEach: Int) throws(GossipWireError) -> Int {
        let v = try varint()
        guard v <= UInt64(limit) else { throw .tooLarge(field: field, size: v > UInt64(Int.max) ? Int.max : Int(v), limit: limit) }
        let n = Int(v)
        guard n * minBytesEach <= remaining else { throw .truncated(needed: n * minBytesEach, remaining: remaining) }
        return n
    }
    mutating func bool() throws(GossipWireError) -> Bool {
        let b = try byte()
        guard b <= 1 else { throw .invalidBool(b) }
        return b == 1
    }
    mutating func string(_ field: String) throws(GossipWireError) -> String {
        let n = try count(field: field, limit: WireLimits.maxStringBytes, minBytesEach: 1)
        let s = try slice(n)
        guard let str = String(validating: s, as: UTF8.self) else { throw .invalidUTF8(field: field) }
        return str
    }
    mutating func payload(_ field: String) throws(GossipWireError) -> [UInt8] {
        let n = try count(field: field, limit: WireLimits.maxPayloadBytes, minBytesEach: 1)
        return Array(try slice(n))
    }
    mutating func tags() throws(GossipWireError) -> [String: String] {
        let n = try count(field: "tags", limit: WireLimits.maxTagPairs, minBytesEach: 2)
        var t: [String: String] = [:]
        var total = 0
        for _ in 0..<n {
            let k = try string("tag key"), v = try string("tag value")
            total += k.utf8.count + v.utf8.count
            if total > WireLimits.maxTagsBytes { throw .tooLarge(field: "tags", size: total, limit: WireLimits.maxTagsBytes) }
            t[k] = v
        }
        return t
    }
    mutating func message() throws(GossipWireError) -> GossipMessage {
        let type = try byte()
        switch type {
        case 1:
            return .ping(seq: try u32(), target: try string("target"), source: try string("source"), sourceAddress: try string("source address"))
        case 2:
            return .indirectPing(seq: try u32(), target: try string("target"), targetAddress: try string("target address"),
                                 source: try string("source"), sourceAddress: try string("source address"), wantNack: try bool())
        case 3: return .ack(seq: try u32())
        case 4: return .nack(seq: try u32())
        case 5: return .suspect(incarnation: try u32(), node: try string("node"), from: try string("from"))
        case 6: return .alive(incarnation: try u32(), node: try string("node"), address: try string("address"), tags: try tags())
        case 7: return .dead(incarnation: try u32(), node: try string("node"), from: try string("from"))
        case 8:
            let join = try bool()
            // A member needs at least name, address, incarnation, state, tag count: 1+1+4+1+1 bytes.
            let n = try count(field: "push-pull members", limit: WireLimits.maxPushPullMembers, minBytesEach: 8)
            var members: [MemberSnapshot] = []
            members.reserveCapacity(n)
            for _ in 0..<n {
                let name = try string("name"), address = try string("address"), inc = try u32()
                let raw = try byte()
                guard let state = MemberState(rawValue: raw) else { throw .invalidState(raw) }
                members.append(MemberSnapshot(name: name, address: address, incarnation: inc, state: state, tags: try tags()))
            }
            return .pushPull(join: join, members: members)
        case 10:
            return .userEvent(ltime: try varint(), name: try string("event name"), payload: try payload("event payload"), coalesce: try bool())
        case 11:
            let ltime = try varint(), id = try u32(), from = try string("query from"), fromAddress = try string("query from address")
            let n = try count(field: "query filter nodes", limit: WireLimits.maxQueryFilterNodes, minBytesEach: 1)
            var filter: [String] = []
            filter.reserveCapacity(n)
            for _ in 0..<n { filter.append(try string("query filter node")) }
            return .query(ltime: ltime, id: id, from: from, fromAddress: fromAddress, filterNodes: filter, requestAck: try bool(),
                          timeoutMs: try varint(), name: try string("query name"), payload: try payload("query payload"))
        case 12:
            return .queryResponse(ltime: try varint(), id: try u32(), from: try string("response from"), ack: try bool(),
                                  payload: try payload("response payload"))
        default:
            throw .unknownMessageType(type)
        }
    }
}
