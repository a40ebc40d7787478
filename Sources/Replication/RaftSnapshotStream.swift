// The snapshot stream (issue 5: "a separate stream for snapshots"): a leader opens its own TCP
// connection to a follower's Raft port and sends, each as one frame (Framing):
//   header  0xE0 (StreamKind.snapshot) | version u8 = 1 | leader u64 | term u64
//           | snapshot index u64 | snapshot term u64 | configuration (u32 length + bytes)
//           | address book (u32 length + AddressBookCodec) | dump size u64 | dump applied index u64
//   chunk   0x01 | 1...maxSnapshotChunkBytes dump bytes
//   trailer 0x02 | SHA-256 of the dump (32 bytes)
// The follower answers one frame once it has installed (or refused) the dump, then closes:
//   ack     0x03 | status u8 (0 installed, 1 refused)
// `SnapshotStreamDecoder` checks the order, the sizes and the limits; it is total.
import RaftCore

struct SnapshotStreamHeader: Equatable, Sendable {
    static let version: UInt8 = 1
    var leader: NodeID
    var term: UInt64
    var metadata: SnapshotMetadata
    var addressBook: [NodeID: String]
    var dumpSize: UInt64
    /// The state's own applied index in the dump: the last command it applied, which may be
    /// below metadata.index when the entries after it are no-ops or configuration entries.
    var appliedIndex: UInt64

    func encoded() -> [UInt8] {
        var out: [UInt8] = [StreamKind.snapshot, Self.version]
        out += leader.bigEndianBytes
        out += term.bigEndianBytes
        out += metadata.index.bigEndianBytes
        out += metadata.term.bigEndianBytes
        let configuration = metadata.configuration.encoded()
        out += UInt32(configuration.count).bigEndianBytes
        out += configuration
        let book = AddressBookCodec.encode(addressBook)
        out += UInt32(book.count).bigEndianBytes
        out += book
        out += dumpSize.bigEndianBytes
        out += appliedIndex.bigEndianBytes
        return out
    }

    static func decode(_ payload: [UInt8]) throws(SnapshotStreamError) -> SnapshotStreamHeader {
        var r = FrameReader(bytes: payload)
        guard try r.u8() == StreamKind.snapshot else { throw .malformed("not a snapshot stream header") }
        let version = try r.u8()
        guard version == Self.version else { throw .malformed("unsupported snapshot stream version \(version)") }
        let leader = try r.u64()
        let term = try r.u64()
        let index = try r.u64()
        let snapshotTerm = try r.u64()
        let configurationBytes = try r.take(Int(try r.u32()))
        let configuration: Configuration
        do throws(MessageDecodingError) {
            configuration = try Configuration.decode(configurationBytes)
        } catch {
            throw .malformed("configuration: \(error)")
        }
        let bookBytes = try r.take(Int(try r.u32()))
        let book: [NodeID: String]
        do throws(StorageErrorBox) {
            book = try AddressBookCodec.decodeBoxed(bookBytes)
        } catch {
            throw .malformed("address book: \(error.reason)")
        }
        let size = try r.u64()
        let applied = try r.u64()
        guard r.remaining == 0 else { throw .malformed("\(r.remaining) trailing header bytes") }
        guard leader != 0, index > 0 else { throw .malformed("leader \(leader), snapshot index \(index)") }
        return SnapshotStreamHeader(leader: leader, term: term,
                                    metadata: SnapshotMetadata(index: index, term: snapshotTerm, configuration: configuration),
                                    addressBook: book, dumpSize: size, appliedIndex: applied)
    }
}

enum SnapshotFrameKind {
    static let chunk: UInt8 = 0x01
    static let trailer: UInt8 = 0x02
    static let ack: UInt8 = 0x03
}

public enum SnapshotStreamError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    case tooLarge(size: UInt64, limit: Int)

    public var description: String {
        switch self {
        case let .malformed(reason): return "bad snapshot stream: \(reason)"
        case let .tooLarge(size, limit): return "snapshot of \(size) bytes exceeds the limit of \(limit)"
        }
    }
}

/// The follower's view of one snapshot stream: header, chunks, trailer, in that order.
struct SnapshotStreamDecoder {
    enum Event: Equatable {
        case header(SnapshotStreamHeader)
        case chunk([UInt8])
        case trailer(checksum: [UInt8])
    }

    let maxSnapshotBytes: Int
    private(set) var header: SnapshotStreamHeader?
    private(set) var received: UInt64 = 0
    private(set) var finished = false

    init(maxSnapshotBytes: Int) { self.maxSnapshotBytes = maxSnapshotBytes }

    /// The next frame's meaning, or an error after which the stream must be dropped.
    mutating func decode(_ payload: [UInt8]) throws(SnapshotStreamError) -> Event {
        guard !finished else { throw .malformed("frame after the trailer") }
        guard let kind = payload.first else { throw .malformed("empty frame") }
        guard let header else {
            let decoded = try SnapshotStreamHeader.decode(payload)
            guard decoded.dumpSize <= UInt64(maxSnapshotBytes) else {
                throw .tooLarge(size: decoded.dumpSize, limit: maxSnapshotBytes)
            }
            self.header = decoded
            return .header(decoded)
        }
        switch kind {
        case SnapshotFrameKind.chunk:
            let count = UInt64(payload.count - 1)
            guard count > 0 else { throw .malformed("empty chunk") }
            guard count <= header.dumpSize - received else {
                throw .malformed("chunks exceed the announced \(header.dumpSize) bytes")
            }
            received += count
            return .chunk(Array(payload[1...]))
        case SnapshotFrameKind.trailer:
            guard payload.count == 33 else { throw .malformed("trailer of \(payload.count) bytes") }
            guard received == header.dumpSize else {
                throw .malformed("trailer after \(received) of \(header.dumpSize) bytes")
            }
            finished = true
            return .trailer(checksum: Array(payload[1...]))
        default:
            throw .malformed("unknown frame kind \(kind)")
        }
    }
}

struct FrameReader {
    let bytes: [UInt8]
    var offset = 0
    var remaining: Int { bytes.count - offset }

    mutating func take(_ count: Int) throws(SnapshotStreamError) -> [UInt8] {
        guard count >= 0, count <= remaining else { throw .malformed("truncated at byte \(offset)") }
        defer { offset += count }
        return Array(bytes[offset ..< offset + count])
    }
    mutating func u8() throws(SnapshotStreamError) -> UInt8 { try take(1)[0] }
    mutating func u32() throws(SnapshotStreamError) -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws(SnapshotStreamError) -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
}

extension UInt32 {
    var bigEndianBytes: [UInt8] {
        [UInt8(truncatingIfNeeded: self >> 24), UInt8(truncatingIfNeeded: self >> 16),
         UInt8(truncatingIfNeeded: self >> 8), UInt8(truncatingIfNeeded: self)]
    }
}

struct StorageErrorBox: Error { var reason: String }

extension AddressBookCodec {
    static func decodeBoxed(_ bytes: [UInt8]) throws(StorageErrorBox) -> [NodeID: String] {
        do { return try decode(bytes) } catch { throw StorageErrorBox(reason: "\(error)") }
    }
}
