// The state machine's snapshot for Raft's InstallSnapshot (§7): a consistent dump of EVERY
// named database of the state environment (found by listing LMDB's main database, so tables
// added later are carried without changes here), and its load into another environment.
//
// Format (all integers big-endian), version 1:
//   "CNSD" | version u8 = 1 | appliedIndex u64 | databaseCount u32
//   databaseCount × ( nameLength u16 | name UTF-8 | recordCount u64
//                     recordCount × ( keyLength u32 | key | valueLength u32 | value ) )
// Names are unique and non-empty; within a database keys are 1...maxKeySize bytes and strictly
// increasing (LMDB's order), so a dump has exactly one encoding. No trailing bytes.
// The appliedIndex is the state store's own ("meta"/"appliedIndex"), read in the same
// transaction: the dump holds exactly the state after applying the log through it.
#if canImport(Glibc)
import Glibc
#endif
import Storage

public enum StateSnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    /// Reading a dump file failed.
    case io(String)

    public var description: String {
        switch self {
        case let .malformed(reason): return "malformed state snapshot: \(reason)"
        case let .io(reason): return "reading a state snapshot: \(reason)"
        }
    }
}

public enum StateSnapshot {
    static let magic: [UInt8] = Array("CNSD".utf8)
    static let version: UInt8 = 1
    /// Where StateStore keeps its applied index (StateStore.swift: the "meta" database).
    static let metaDatabase = "meta"
    static let appliedIndexKey = Array("appliedIndex".utf8)

    public struct Summary: Sendable, Equatable {
        public var appliedIndex: UInt64
        public var databases: [String]
        public var records: Int
    }

    public enum LoadOutcome: Sendable, Equatable {
        /// The dump replaced the state; the state's applied index is now `appliedIndex`.
        case loaded(appliedIndex: UInt64)
        /// The local state is already at or past the dump (never move state backwards).
        case skipped(localAppliedIndex: UInt64)
    }

    /// One read transaction over every named database: a consistent dump, handed to `sink`
    /// in pieces of about `pieceBytes` (so a large state never sits in memory whole). Runs on
    /// any thread but the loop's (it reads the whole state). Returns the applied index and
    /// the number of bytes produced.
    public static func dump(_ environment: Environment, pieceBytes: Int = 1 << 20,
                            into sink: ([UInt8]) throws -> Void) throws -> (appliedIndex: UInt64, size: Int) {
        while true {
            // Handles must exist before the read transaction (a read transaction cannot create
            // them for later use); retry if a table appeared in between.
            let names = try environment.read { try $0.databaseNames() }
            let databases = try environment.write { txn in try names.map { try txn.openOrCreateDatabase($0) } }
            let result: (UInt64, Int)? = try environment.read { txn in
                guard try txn.databaseNames() == names else { return nil }
                var applied: UInt64 = 0
                if let meta = databases.first(where: { $0.name == metaDatabase }),
                   let stored = try txn.get(meta, appliedIndexKey) {
                    guard let index = UInt64(bigEndianBytes: stored) else {
                        throw StateStoreError.corrupt("meta appliedIndex: \(stored.count) bytes")
                    }
                    applied = index
                }
                var out = magic
                out.append(version)
                out += applied.bigEndianBytes
                appendU32(&out, UInt32(databases.count))
                var size = 0
                func flush(_ force: Bool) throws {
                    guard force || out.count >= pieceBytes, !out.isEmpty else { return }
                    size += out.count
                    try sink(out)
                    out.removeAll(keepingCapacity: true)
                }
                for db in databases {
                    let name = Array(db.name.utf8)
                    out.append(UInt8(truncatingIfNeeded: name.count >> 8))
                    out.append(UInt8(truncatingIfNeeded: name.count))
                    out += name
                    out += UInt64(try txn.count(db)).bigEndianBytes
                    let cursor = try txn.cursor(db)
                    var record = try cursor.first()
                    while let (key, value) = record {
                        appendU32(&out, UInt32(key.count))
                        out += key
                        appendU32(&out, UInt32(value.count))
                        out += value
                        try flush(false)
                        record = try cursor.next()
                    }
                }
                try flush(true)
                return (applied, size)
            }
            if let result { return result }
        }
    }

    /// The whole dump in memory (tests, small states).
    public static func dump(_ environment: Environment) throws -> (appliedIndex: UInt64, bytes: [UInt8]) {
        var bytes: [UInt8] = []
        let (applied, _) = try dump(environment) { bytes += $0 }
        return (applied, bytes)
    }

    /// Checks a whole dump without touching any environment.
    public static func validate(_ bytes: [UInt8], maxKeySize: Int) throws(StateSnapshotError) -> Summary {
        var source = ArraySource(bytes: bytes)
        return try parse(&source, maxKeySize: maxKeySize, database: { _ in }, record: { _, _ in })
    }

    /// Checks a dump file without touching any environment.
    public static func validate(file path: String, maxKeySize: Int) throws(StateSnapshotError) -> Summary {
        var source = try FileSource(path: path)
        return try parse(&source, maxKeySize: maxKeySize, database: { _ in }, record: { _, _ in })
    }

    /// Replaces the state in `environment` by the dump, in ONE write transaction: every named
    /// database is cleared, the dump's records inserted (its tables created if missing). Only
    /// when the dump's applied index is above the local one. The dump is validated first, so a
    /// bad dump never touches the environment. Runs on the state's writer thread.
    public static func load(_ bytes: [UInt8], into environment: Environment) throws -> LoadOutcome {
        try load(into: environment) { () throws(StateSnapshotError) in ArraySource(bytes: bytes) }
    }

    /// `load` from a dump file (read twice: validated, then loaded), so a large dump is never
    /// held in memory whole.
    public static func load(file path: String, into environment: Environment) throws -> LoadOutcome {
        try load(into: environment) { () throws(StateSnapshotError) in try FileSource(path: path) }
    }

    /// A user restore (PUT /v1/snapshot): replaces the state by the dump unconditionally, in ONE
    /// write transaction, as if every table had changed at `restoreIndex`: every 8-byte value
    /// of the "meta" database under a key ending in "Index" (the applied index, the table
    /// indexes such as "kvIndex") becomes `restoreIndex`, so the applied index matches the
    /// leader's new log point and X-Consul-Index never goes backwards. Validated first; a bad
    /// dump never touches the environment. `restoreIndex` must be at least the dump's own.
    public static func restore(_ bytes: [UInt8], into environment: Environment, restoreIndex: UInt64) throws -> LoadOutcome {
        try load(into: environment, restoreIndex: restoreIndex) { () throws(StateSnapshotError) in ArraySource(bytes: bytes) }
    }

    private static func load<Source: DumpSource>(into environment: Environment, restoreIndex: UInt64? = nil,
                                                 _ open: () throws(StateSnapshotError) -> Source) throws -> LoadOutcome {
        var checked = try open()
        let summary = try parse(&checked, maxKeySize: environment.maxKeySize, database: { _ in }, record: { _, _ in })
        if let restoreIndex, restoreIndex < summary.appliedIndex {
            throw StateSnapshotError.malformed("restore index \(restoreIndex) below the dump's applied index \(summary.appliedIndex)")
        }
        return try environment.write { txn -> LoadOutcome in
            let meta = try txn.openOrCreateDatabase(metaDatabase)
            let local = try txn.get(meta, appliedIndexKey).flatMap { UInt64(bigEndianBytes: $0) } ?? 0
            guard restoreIndex != nil || summary.appliedIndex > local else { return .skipped(localAppliedIndex: local) }
            for name in try txn.databaseNames() {
                try txn.clear(try txn.openOrCreateDatabase(name))
            }
            var current: Database?
            var failure: StorageError?
            var source = try open()
            // Validated above; a file changed in between fails here and aborts the transaction.
            _ = try parse(&source, maxKeySize: environment.maxKeySize, database: { name in
                guard failure == nil else { return }
                do throws(StorageError) { current = try txn.openOrCreateDatabase(name) } catch { failure = error }
            }, record: { key, value in
                guard failure == nil, let db = current else { return }
                do throws(StorageError) { _ = try txn.put(db, key: key, value: value) } catch { failure = error }
            })
            if let failure { throw failure }
            if let restoreIndex {
                let meta = try txn.openOrCreateDatabase(metaDatabase)
                var indexKeys: [[UInt8]] = [appliedIndexKey]
                let cursor = try txn.cursor(meta)
                var record = try cursor.first()
                while let (key, value) = record {
                    if value.count == 8, key.count > 5, Array(key.suffix(5)) == Array("Index".utf8) { indexKeys.append(key) }
                    record = try cursor.next()
                }
                for key in indexKeys { _ = try txn.put(meta, key: key, value: restoreIndex.bigEndianBytes) }
                return .loaded(appliedIndex: restoreIndex)
            }
            return .loaded(appliedIndex: summary.appliedIndex)
        }
    }

    // MARK: Decoding

    /// The one decoder: total (any bytes give a summary or an error), allocation bounded by
    /// the input's size. Calls `database` and `record` as it goes.
    static func parse<Source: DumpSource>(_ reader: inout Source, maxKeySize: Int, database: (String) -> Void,
                                          record: ([UInt8], [UInt8]) -> Void) throws(StateSnapshotError) -> Summary {
        guard try reader.take(4) == magic else { throw .malformed("not a state snapshot (bad magic)") }
        let version = try reader.u8()
        guard version == Self.version else { throw .malformed("unsupported version \(version)") }
        let applied = try reader.u64()
        let databaseCount = try reader.u32()
        var names: [String] = []
        var seen = Set<String>()
        var records = 0
        var appliedInMeta: UInt64?
        for _ in 0 ..< databaseCount {
            let nameLength = Int(try reader.u16())
            guard nameLength > 0, nameLength <= maxKeySize else { throw .malformed("database name of \(nameLength) bytes") }
            let nameBytes = try reader.take(nameLength)
            let name = String(decoding: nameBytes, as: UTF8.self)
            guard Array(name.utf8) == nameBytes else { throw .malformed("database name is not UTF-8") }
            guard seen.insert(name).inserted else { throw .malformed("database \(name) appears twice") }
            names.append(name)
            database(name)
            let count = try reader.u64()
            // Each record takes at least 9 bytes: bound the loop by what is left.
            guard count <= UInt64(reader.remaining / 9) else { throw .malformed("database \(name): record count \(count) overruns the dump") }
            var previous: [UInt8]?
            for _ in 0 ..< count {
                let keyLength = Int(try reader.u32())
                guard keyLength > 0, keyLength <= maxKeySize else {
                    throw .malformed("database \(name): key of \(keyLength) bytes (limit 1...\(maxKeySize))")
                }
                let key = try reader.take(keyLength)
                if let previous, !previous.lexicographicallyPrecedes(key) {
                    throw .malformed("database \(name): keys out of order")
                }
                let value = try reader.take(Int(try reader.u32()))
                if name == metaDatabase, key == appliedIndexKey {
                    guard let index = UInt64(bigEndianBytes: value) else { throw .malformed("meta appliedIndex is not 8 bytes") }
                    appliedInMeta = index
                }
                record(key, value)
                previous = key
                records += 1
            }
        }
        guard reader.remaining == 0 else { throw .malformed("\(reader.remaining) trailing bytes") }
        guard (appliedInMeta ?? 0) == applied else {
            throw .malformed("header applied index \(applied) differs from the state's \(appliedInMeta ?? 0)")
        }
        return Summary(appliedIndex: applied, databases: names, records: records)
    }
}

private func appendU32(_ out: inout [UInt8], _ value: UInt32) {
    out.append(UInt8(truncatingIfNeeded: value >> 24))
    out.append(UInt8(truncatingIfNeeded: value >> 16))
    out.append(UInt8(truncatingIfNeeded: value >> 8))
    out.append(UInt8(truncatingIfNeeded: value))
}

/// Where the decoder reads a dump from: bounds-checked, sized up front.
protocol DumpSource {
    var remaining: Int { get }
    mutating func take(_ count: Int) throws(StateSnapshotError) -> [UInt8]
}

extension DumpSource {
    mutating func u8() throws(StateSnapshotError) -> UInt8 { try take(1)[0] }
    mutating func u16() throws(StateSnapshotError) -> UInt16 {
        let b = try take(2)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }
    mutating func u32() throws(StateSnapshotError) -> UInt32 {
        try take(4).reduce(0) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws(StateSnapshotError) -> UInt64 {
        try take(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}

struct ArraySource: DumpSource {
    let bytes: [UInt8]
    var offset = 0

    var remaining: Int { bytes.count - offset }

    mutating func take(_ count: Int) throws(StateSnapshotError) -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw .malformed("truncated at byte \(offset) (wanted \(count), \(remaining) left)")
        }
        defer { offset += count }
        return Array(bytes[offset ..< offset + count])
    }
}

/// A dump file read through a 1 MiB buffer. The size is taken when opened; the handle is
/// closed when the source is released.
struct FileSource: DumpSource {
    private final class Handle {
        let fd: Int32
        init(fd: Int32) { self.fd = fd }
        deinit { close(fd) }
    }
    private let handle: Handle
    private let size: Int
    private var consumed = 0
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    /// Bytes read from the file into buffers so far.
    private var fileRead = 0

    init(path: String) throws(StateSnapshotError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path): errno \(errno)") }
        handle = Handle(fd: fd)
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io("stat \(path): errno \(errno)") }
        size = Int(info.st_size)
    }

    var remaining: Int { size - consumed }

    mutating func take(_ count: Int) throws(StateSnapshotError) -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw .malformed("truncated at byte \(consumed) (wanted \(count), \(remaining) left)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            if bufferStart == buffer.count {
                guard size > fileRead else { throw .io("the file ended early") }
                buffer = [UInt8](repeating: 0, count: min(1 << 20, size - fileRead))
                let fd = handle.fd
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { throw .io("read: \(n < 0 ? "errno \(errno)" : "the file ended early")") }
                buffer.removeSubrange(n...)
                bufferStart = 0
                fileRead += n
            }
            let n = min(count - out.count, buffer.count - bufferStart)
            out += buffer[bufferStart ..< bufferStart + n]
            bufferStart += n
        }
        consumed += count
        return out
    }
}

extension AppliedBatch {
    /// What a loaded snapshot reports: no command results, and the one changed key "" (never a
    /// real key), meaning every key may have changed.
    public init(everythingChangedThrough index: UInt64) {
        self.init(results: [], changedKeys: [""], lastIndex: index)
    }
}
