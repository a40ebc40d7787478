// The snapshot archive of `GET /v1/snapshot` and `conclave snapshot save|inspect`: our own
// documented format (Consul's gzipped tar is not reproduced), the state dump plus metadata.
// Format, integers big-endian:
//   "CNSA" | version u8 = 1 | index u64 | term u64 | created (Unix ms) u64 | dump size u64
//   | dump (StateSnapshot format) | SHA-256 of every byte before it (32 bytes)
// `index` is the Raft index the state was applied through, `term` that entry's term.
import Crypto
import StateStore

public enum SnapshotArchive {
    static let magic: [UInt8] = Array("CNSA".utf8)
    public static let version: UInt8 = 1
    static let headerBytes = 4 + 1 + 8 * 4
    /// LMDB 0.9's key limit (mdb_env_get_maxkeysize): an archive is checked without opening LMDB.
    static let maxKeySize = 511

    public struct Info: Sendable, Equatable {
        public var index: UInt64
        public var term: UInt64
        public var createdMilliseconds: UInt64
        public var size: Int
        public var version: UInt8
        public var databases: [String]
        public var records: Int
        /// Consul's snapshot ID shape: term-index-created.
        public var id: String { "\(term)-\(index)-\(createdMilliseconds)" }
    }

    public enum DecodingError: Error, Equatable, Sendable, CustomStringConvertible {
        case malformed(String)
        public var description: String {
            switch self { case let .malformed(reason): return "invalid snapshot archive: \(reason)" }
        }
    }

    public static func encode(index: UInt64, term: UInt64, createdMilliseconds: UInt64, dump: [UInt8]) -> [UInt8] {
        var out = magic
        out.append(version)
        out += index.bigEndianBytesForArchive
        out += term.bigEndianBytesForArchive
        out += createdMilliseconds.bigEndianBytesForArchive
        out += UInt64(dump.count).bigEndianBytesForArchive
        out += dump
        out += Array(SHA256.hash(data: out))
        return out
    }

    /// Checks the checksum, the header and the whole dump; total on any input.
    public static func inspect(_ bytes: [UInt8]) throws(DecodingError) -> Info {
        guard bytes.count >= headerBytes + 32 else { throw .malformed("\(bytes.count) bytes is too short") }
        guard Array(bytes[0 ..< 4]) == magic else { throw .malformed("not a Conclave snapshot (bad magic)") }
        guard bytes[4] == version else { throw .malformed("unsupported version \(bytes[4])") }
        func u64(_ at: Int) -> UInt64 { bytes[at ..< at + 8].reduce(0) { $0 << 8 | UInt64($1) } }
        let (index, term, created, size) = (u64(5), u64(13), u64(21), u64(29))
        guard size == UInt64(bytes.count - headerBytes - 32) else {
            throw .malformed("the dump is \(bytes.count - headerBytes - 32) bytes, the header says \(size)")
        }
        let body = bytes[0 ..< bytes.count - 32]
        guard Array(SHA256.hash(data: body)) == Array(bytes[(bytes.count - 32)...]) else {
            throw .malformed("checksum mismatch")
        }
        let summary: StateSnapshot.Summary
        do throws(StateSnapshotError) {
            summary = try StateSnapshot.validate(Array(bytes[headerBytes ..< bytes.count - 32]), maxKeySize: maxKeySize)
        } catch {
            throw .malformed("\(error)")
        }
        guard summary.appliedIndex == index else {
            throw .malformed("header index \(index) differs from the state's \(summary.appliedIndex)")
        }
        return Info(index: index, term: term, createdMilliseconds: created, size: bytes.count, version: version,
                    databases: summary.databases, records: summary.records)
    }
}

extension UInt64 {
    fileprivate var bigEndianBytesForArchive: [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: self >> (56 - 8 * UInt64($0))) } }
}
