// Big-endian UInt64 keys: LMDB compares keys as bytes (memcmp), so big-endian encoding makes
// byte order equal numeric order (log indexes, modify indexes).

extension UInt64 {
    /// The eight big-endian bytes of this value; they sort like the numbers do.
    public var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }

    /// Decodes exactly eight big-endian bytes; nil for any other length.
    public init?<Bytes: Collection>(bigEndianBytes bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == 8 else { return nil }
        var value: UInt64 = 0
        for byte in bytes { value = value << 8 | UInt64(byte) }
        self = value
    }
}
