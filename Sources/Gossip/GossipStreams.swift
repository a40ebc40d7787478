// Gossip's TCP side: each message is a u32 big-endian length followed by that many bytes,
// bounded by a maximum frame size (the decoder is total: any bytes give a frame, "need
// more", or an error), and the outbound request/reply stream with its deadline.
import EventLoop

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

/// One outbound request/reply stream with a deadline. Loop-confined.
final class OutboundStream {
    let loop: Loop
    private var decoder: StreamFrameDecoder
    private var completion: (([UInt8]?) -> Void)?
    private var connection: TCPConnection?
    private let deadline: LoopTimer

    init(loop: Loop, maxFrameBytes: Int, completion: @escaping ([UInt8]?) -> Void) {
        self.loop = loop
        decoder = StreamFrameDecoder(maxFrameBytes: maxFrameBytes)
        self.completion = completion
        deadline = LoopTimer(loop: loop)
    }

    func start(host: String, port: Int, request: [UInt8], timeoutMs: UInt64) {
        deadline.start(afterMilliseconds: timeoutMs) { [self] in finish(nil) }
        TCPConnection.connect(on: loop, host: host, port: port) { [self] result in
            guard completion != nil else {
                if case .success(let c) = result { c.closeNow() }
                return
            }
            switch result {
            case .failure:
                finish(nil)
            case .success(let c):
                connection = c
                c.onRead = { [self] bytes in
                    do {
                        if let frame = try decoder.append(bytes) { finish(frame) }
                    } catch {
                        finish(nil)
                    }
                }
                c.onClose = { [self] _ in finish(nil) }
                c.startReading()
                c.write(StreamFrameDecoder.frame(request))
            }
        }
    }

    /// Exactly once: closes the connection and the deadline, reports the reply (nil: failed).
    func finish(_ reply: [UInt8]?) {
        guard let completion else { return }
        self.completion = nil
        deadline.close()
        connection?.onRead = nil
        connection?.onClose = nil
        connection?.closeNow()
        connection = nil
        completion(reply)
    }
}
