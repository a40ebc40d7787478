// A KV entry (Consul's DirEntry) and its stored form in the "kv" database:
//   createIndex, modifyIndex, lockIndex, flags (u64 big-endian each),
//   session length (u16 big-endian) + session UTF-8, then the value.

public struct KVEntry: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public var flags: UInt64
    public var createIndex: UInt64
    public var modifyIndex: UInt64
    public var lockIndex: UInt64
    public var session: String?

    public init(key: String, value: [UInt8], flags: UInt64, createIndex: UInt64, modifyIndex: UInt64,
                lockIndex: UInt64 = 0, session: String? = nil) {
        self.key = key
        self.value = value
        self.flags = flags
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
        self.lockIndex = lockIndex
        self.session = session
    }

    static let headerBytes = 4 * 8 + 2
    /// Session IDs are UUIDs; the u16 length field bounds them anyway.
    static let maxSessionBytes = Int(UInt16.max)

    func storedValue() -> [UInt8] {
        let sessionBytes = Array((session ?? "").utf8)
        precondition(sessionBytes.count <= KVEntry.maxSessionBytes, "session ID longer than \(KVEntry.maxSessionBytes) bytes")
        var writer = ByteWriter()
        writer.uint64(createIndex)
        writer.uint64(modifyIndex)
        writer.uint64(lockIndex)
        writer.uint64(flags)
        writer.byte(UInt8(sessionBytes.count >> 8))
        writer.byte(UInt8(sessionBytes.count & 0xff))
        var bytes = writer.bytes
        bytes.reserveCapacity(bytes.count + sessionBytes.count + value.count)
        bytes.append(contentsOf: sessionBytes)
        bytes.append(contentsOf: value)
        return bytes
    }

    /// Total: any stored bytes give an entry or `StateStoreError.corrupt`.
    init(key: String, storedValue bytes: [UInt8]) throws(StateStoreError) {
        guard bytes.count >= KVEntry.headerBytes else {
            throw StateStoreError.corrupt("\(key): \(bytes.count) bytes, shorter than the \(KVEntry.headerBytes)-byte header")
        }
        let sessionLength = Int(bytes[32]) << 8 | Int(bytes[33])
        guard sessionLength <= bytes.count - KVEntry.headerBytes else {
            throw StateStoreError.corrupt("\(key): session length \(sessionLength) past the end")
        }
        let sessionEnd = KVEntry.headerBytes + sessionLength
        var session: String?
        if sessionLength > 0 {
            guard let decoded = String(validating: bytes[KVEntry.headerBytes..<sessionEnd], as: UTF8.self) else {
                throw StateStoreError.corrupt("\(key): session is not valid UTF-8")
            }
            session = decoded
        }
        self.init(key: key, value: Array(bytes[sessionEnd...]),
                  flags: KVEntry.field(bytes, 3), createIndex: KVEntry.field(bytes, 0),
                  modifyIndex: KVEntry.field(bytes, 1), lockIndex: KVEntry.field(bytes, 2), session: session)
    }

    /// ModifyIndex of a stored entry without copying its value.
    static func storedModifyIndex(key: [UInt8], _ bytes: [UInt8]) throws(StateStoreError) -> UInt64 {
        guard bytes.count >= headerBytes else {
            throw StateStoreError.corrupt("\(String(decoding: key, as: UTF8.self)): \(bytes.count) bytes, shorter than the header")
        }
        return field(bytes, 1)
    }

    private static func field(_ bytes: [UInt8], _ number: Int) -> UInt64 {
        var value: UInt64 = 0
        for byte in bytes[number * 8..<number * 8 + 8] { value = value << 8 | UInt64(byte) }
        return value
    }
}
