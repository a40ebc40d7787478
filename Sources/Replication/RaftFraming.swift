// The wire framing between Raft servers: each frame is a u32 big-endian payload length and
// the payload. A payload whose first byte is below `controlKindBase` is a Raft
// `Message.encoded()`; higher first bytes carry the replicator's own frames (forwarding).
// The decoder is total and bounded by `maxFrameBytes`.

public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case frameTooLarge(size: Int, limit: Int)
    case emptyFrame

    public var description: String {
        switch self {
        case let .frameTooLarge(size, limit): return "frame of \(size) bytes exceeds the limit of \(limit)"
        case .emptyFrame: return "empty frame"
        }
    }
}

/// First bytes of the first frame of an inbound connection that is not a Raft stream
/// (see `RaftTransport.streamHandlers`).
public enum StreamKind {
    public static let range: ClosedRange<UInt8> = 0xE0 ... 0xEF
    /// A leader streaming a snapshot to a follower.
    public static let snapshot: UInt8 = 0xE0
    /// A client agent's RPC connection to a server.
    public static let clientRPC: UInt8 = 0xE1
}

public enum Framing {
    /// First payload bytes at or above this are not Raft messages (whose kinds are 1...9).
    static let controlKindBase: UInt8 = 0x80

    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        precondition(payload.count <= Int(UInt32.max), "frame payload too large")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 + payload.count)
        let n = UInt32(payload.count)
        bytes.append(UInt8(truncatingIfNeeded: n >> 24))
        bytes.append(UInt8(truncatingIfNeeded: n >> 16))
        bytes.append(UInt8(truncatingIfNeeded: n >> 8))
        bytes.append(UInt8(truncatingIfNeeded: n))
        bytes.append(contentsOf: payload)
        return bytes
    }
}

/// Splits a byte stream into frame payloads. Holds at most one partial frame (bounded by the
/// limit) plus whatever one read delivered.
public struct FrameDecoder: Sendable {
    public let maxFrameBytes: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxFrameBytes: Int) { self.maxFrameBytes = maxFrameBytes }

    public mutating func feed(_ bytes: [UInt8]) {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete payload, nil when more bytes are needed, or an error (after which the
    /// stream is unusable).
    public mutating func next() throws(FrameError) -> [UInt8]? {
        let available = buffer.count - start
        guard available >= 4 else { return nil }
        let length = Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16
            | Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
        if length > maxFrameBytes { throw .frameTooLarge(size: length, limit: maxFrameBytes) }
        if length == 0 { throw .emptyFrame }
        guard available >= 4 + length else { return nil }
        let payload = Array(buffer[(start + 4) ..< (start + 4 + length)])
        start += 4 + length
        if start > 64 << 10 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
        return payload
    }
}
