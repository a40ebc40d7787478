// Stream framing for gossip's TCP side: each message is a u32 big-endian length followed by
// that many bytes, bounded by a maximum frame size. The decoder is total: any bytes give a
// frame, "need more", or an error, never an allocation beyond the limit.

public enum StreamFrameError: Error, Equatable, Sendable {
    case frameTooLarge(size: Int, limit: Int)
}

/// Accumulates bytes read from a connection and yields the first complete frame.
struct StreamFrameDecoder {
    let maxFrameBytes: Int
    private var buffer: [UInt8] = []

    init(maxFrameBytes: Int) { self.maxFrameBytes = maxFrameBytes }

    /// Appends `bytes`; returns the frame once complete, nil while more is needed.
    mutating func append(_ bytes: [UInt8]) throws(StreamFrameError) -> [UInt8]? {
        buffer += bytes
        guard buffer.count >= 4 else { return nil }
        let length = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
        if length > maxFrameBytes { throw .frameTooLarge(size: length, limit: maxFrameBytes) }
        guard buffer.count >= 4 + length else { return nil }
        return Array(buffer[4..<(4 + length)])
    }

    static func frame(_ payload: [UInt8]) -> [UInt8] {
        let n = UInt32(payload.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + payload
    }
}

/// "127.0.0.1:8301" / "[::1]:8301" → host and port; nil for anything else.
public func parseHostPort(_ text: String) -> (host: String, port: Int)? {
    guard let colon = text.lastIndex(of: ":") else { return nil }
    var host = String(text[..<colon])
    guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port), !host.isEmpty else { return nil }
    if host.hasPrefix("[") && host.hasSuffix("]") {
        host = String(host.dropFirst().dropLast())
    } else if host.contains(":") {
        return nil  // a bare IPv6 address ("::1") has no port
    }
    return (host, port)
}
