// The KV commands carried in the replicated log and their binary encoding:
//   tag u8, then per case: key (varint length + UTF-8), value (varint length + bytes),
//   flags and modify index (u64 big-endian). Lengths are unsigned LEB128 varints.
// Decoding is total and canonical: any bytes give a command or an error, a forged length is
// checked against the bytes present before anything is allocated, and every accepted input
// re-encodes to exactly the same bytes (no padding, no non-minimal varints, no trailing bytes).

public enum KVCommand: Sendable, Equatable {
    /// PUT /v1/kv/:key
    case set(key: String, value: [UInt8], flags: UInt64)
    /// PUT /v1/kv/:key?cas=N: 0 = only if absent; N = only if present with ModifyIndex == N.
    case checkAndSet(key: String, value: [UInt8], flags: UInt64, modifyIndex: UInt64)
    /// DELETE /v1/kv/:key
    case delete(key: String)
    /// DELETE /v1/kv/:key?cas=N: a missing key answers true; another ModifyIndex answers false.
    case deleteCAS(key: String, modifyIndex: UInt64)
    /// DELETE /v1/kv/:prefix?recurse
    case deleteTree(prefix: String)

    private enum Tag: UInt8 {
        case set = 1, checkAndSet = 2, delete = 3, deleteCAS = 4, deleteTree = 5
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case let .set(key, value, flags):
            writer.byte(Tag.set.rawValue)
            writer.lengthPrefixed(Array(key.utf8))
            writer.lengthPrefixed(value)
            writer.uint64(flags)
        case let .checkAndSet(key, value, flags, modifyIndex):
            writer.byte(Tag.checkAndSet.rawValue)
            writer.lengthPrefixed(Array(key.utf8))
            writer.lengthPrefixed(value)
            writer.uint64(flags)
            writer.uint64(modifyIndex)
        case let .delete(key):
            writer.byte(Tag.delete.rawValue)
            writer.lengthPrefixed(Array(key.utf8))
        case let .deleteCAS(key, modifyIndex):
            writer.byte(Tag.deleteCAS.rawValue)
            writer.lengthPrefixed(Array(key.utf8))
            writer.uint64(modifyIndex)
        case let .deleteTree(prefix):
            writer.byte(Tag.deleteTree.rawValue)
            writer.lengthPrefixed(Array(prefix.utf8))
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(StateStoreError) {
        var reader = ByteReader(bytes)
        let tagByte = try reader.byte("tag")
        guard let tag = Tag(rawValue: tagByte) else {
            throw StateStoreError.malformedCommand("unknown tag \(tagByte)")
        }
        switch tag {
        case .set:
            self = .set(key: try reader.string("key"), value: try reader.lengthPrefixed("value"),
                        flags: try reader.uint64("flags"))
        case .checkAndSet:
            self = .checkAndSet(key: try reader.string("key"), value: try reader.lengthPrefixed("value"),
                                flags: try reader.uint64("flags"), modifyIndex: try reader.uint64("modify index"))
        case .delete:
            self = .delete(key: try reader.string("key"))
        case .deleteCAS:
            self = .deleteCAS(key: try reader.string("key"), modifyIndex: try reader.uint64("modify index"))
        case .deleteTree:
            self = .deleteTree(prefix: try reader.string("prefix"))
        }
        guard reader.remaining == 0 else {
            throw StateStoreError.malformedCommand("\(reader.remaining) trailing bytes")
        }
    }
}

struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func uint64(_ value: UInt64) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func varint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    mutating func lengthPrefixed(_ data: [UInt8]) {
        varint(UInt64(data.count))
        bytes.append(contentsOf: data)
    }
}

struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func byte(_ field: String) throws(StateStoreError) -> UInt8 {
        guard remaining >= 1 else { throw StateStoreError.malformedCommand("missing \(field)") }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func uint64(_ field: String) throws(StateStoreError) -> UInt64 {
        guard remaining >= 8 else {
            throw StateStoreError.malformedCommand("\(field): \(remaining) of 8 bytes")
        }
        var value: UInt64 = 0
        for byte in bytes[offset..<offset + 8] { value = value << 8 | UInt64(byte) }
        offset += 8
        return value
    }

    /// Unsigned LEB128, at most 10 bytes, minimal (no trailing zero groups).
    mutating func varint(_ field: String) throws(StateStoreError) -> UInt64 {
        var value: UInt64 = 0
        for group in 0..<10 {
            let byte = try self.byte(field)
            let bits = UInt64(byte & 0x7f)
            if group == 9 && bits > 1 {
                throw StateStoreError.malformedCommand("\(field): varint overflows 64 bits")
            }
            value |= bits << (7 * UInt64(group))
            if byte & 0x80 == 0 {
                if byte == 0 && group > 0 {
                    throw StateStoreError.malformedCommand("\(field): non-minimal varint")
                }
                return value
            }
        }
        throw StateStoreError.malformedCommand("\(field): varint longer than 10 bytes")
    }

    /// A varint length, then that many bytes; the length is checked against the bytes present
    /// before anything is copied.
    mutating func lengthPrefixed(_ field: String) throws(StateStoreError) -> [UInt8] {
        let length = try varint("\(field) length")
        guard length <= UInt64(remaining) else {
            throw StateStoreError.malformedCommand("\(field) length \(length) exceeds the \(remaining) bytes left")
        }
        let count = Int(length)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    mutating func string(_ field: String) throws(StateStoreError) -> String {
        let raw = try lengthPrefixed(field)
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw StateStoreError.malformedCommand("\(field) is not valid UTF-8")
        }
        return string
    }
}
