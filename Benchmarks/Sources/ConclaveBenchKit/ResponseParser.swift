// An incremental HTTP/1.1 response parser for the load generator: status, Content-Length or
// chunked bodies, Connection: close, and the one header a workload needs. The project's
// HTTPResponseDecoder is internal to the HTTP module (only the blocking HTTPClient is public), and
// this package may not change the root package, so the bench carries this small one. It is total:
// any bytes give responses, "need more" or an error, never a crash (see ResponseParserTests).

public struct ParsedResponse: Equatable, Sendable {
    public var status: Int
    public var body: [UInt8]
    public var keepAlive: Bool
    /// The value of `X-Consul-Index`, when present (CAS reads use the body's ModifyIndex instead).
    public var consulIndex: UInt64?

    public init(status: Int, body: [UInt8], keepAlive: Bool, consulIndex: UInt64?) {
        self.status = status
        self.body = body
        self.keepAlive = keepAlive
        self.consulIndex = consulIndex
    }
}

public struct ResponseParseError: Error, Equatable, CustomStringConvertible {
    public let description: String
}

public struct ResponseParser {
    /// Bodies above this are an error: no benchmark response is near it.
    public static let maxBodyBytes = 16 << 20
    static let maxHeaderBytes = 64 << 10

    private enum State {
        case head
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailer
    }

    private var buffer: [UInt8] = []
    private var position = 0
    private var state = State.head
    private var current = ParsedResponse(status: 0, body: [], keepAlive: true, consulIndex: nil)

    public init() {}

    /// Appends `bytes` and returns every response they complete, in order.
    public mutating func feed(_ bytes: [UInt8]) throws(ResponseParseError) -> [ParsedResponse] {
        if position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        } else if position > 64 << 10 {
            buffer.removeFirst(position)
            position = 0
        }
        buffer.append(contentsOf: bytes)
        var done: [ParsedResponse] = []
        while let response = try step() {
            done.append(response)
        }
        return done
    }

    /// Runs the state machine until it needs more bytes (nil) or completes a response.
    private mutating func step() throws(ResponseParseError) -> ParsedResponse? {
        while true {
            switch state {
            case .head:
                guard let end = find(crlfcrlf, from: position) else {
                    if buffer.count - position > Self.maxHeaderBytes { throw ResponseParseError(description: "response head over 64 KiB") }
                    return nil
                }
                let contentLength = try parseHead(buffer[position..<end])
                position = end + 4
                if let chunked = contentLength.chunked, chunked {
                    state = .chunkSize
                } else {
                    let length = contentLength.length ?? 0
                    guard length <= Self.maxBodyBytes else { throw ResponseParseError(description: "response body of \(length) bytes") }
                    state = .body(remaining: length)
                }
            case .body(let remaining):
                let take = min(remaining, buffer.count - position)
                current.body.append(contentsOf: buffer[position..<position + take])
                position += take
                if take < remaining {
                    state = .body(remaining: remaining - take)
                    return nil
                }
                return finish()
            case .chunkSize:
                guard let end = find(crlf, from: position) else { return nil }
                var line = buffer[position..<end]
                if let semicolon = line.firstIndex(of: UInt8(ascii: ";")) { line = line[..<semicolon] }
                guard let size = parseHex(line) else { throw ResponseParseError(description: "bad chunk size") }
                position = end + 2
                guard current.body.count + size <= Self.maxBodyBytes else { throw ResponseParseError(description: "chunked body too large") }
                state = size == 0 ? .trailer : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let take = min(remaining, buffer.count - position)
                current.body.append(contentsOf: buffer[position..<position + take])
                position += take
                if take < remaining {
                    state = .chunkData(remaining: remaining - take)
                    return nil
                }
                state = .chunkDataEnd
            case .chunkDataEnd:
                guard buffer.count - position >= 2 else { return nil }
                guard buffer[position] == 13, buffer[position + 1] == 10 else { throw ResponseParseError(description: "chunk without CRLF") }
                position += 2
                state = .chunkSize
            case .trailer:
                // Trailer fields end with an empty line; benchmarks never need them.
                guard let end = find(crlf, from: position) else { return nil }
                let empty = end == position
                position = end + 2
                if empty { return finish() }
            }
        }
    }

    private mutating func finish() -> ParsedResponse {
        let response = current
        current = ParsedResponse(status: 0, body: [], keepAlive: true, consulIndex: nil)
        state = .head
        return response
    }

    private mutating func parseHead(_ head: ArraySlice<UInt8>) throws(ResponseParseError) -> (length: Int?, chunked: Bool?) {
        let lines = head.split(separator: 10, omittingEmptySubsequences: false).map { line -> ArraySlice<UInt8> in
            line.last == 13 ? line.dropLast() : line
        }
        guard let statusLine = lines.first else { throw ResponseParseError(description: "empty response head") }
        // "HTTP/1.1 200 OK"
        let parts = statusLine.split(separator: 32, maxSplits: 2, omittingEmptySubsequences: true)
        guard parts.count >= 2, parts[0].starts(with: Array("HTTP/1.".utf8)), parts[1].count == 3,
              let status = Int(String(decoding: parts[1], as: UTF8.self)), (100...999).contains(status) else {
            throw ResponseParseError(description: "bad status line")
        }
        current.status = status
        current.keepAlive = !parts[0].elementsEqual(Array("HTTP/1.0".utf8))
        var length: Int?
        var chunked: Bool?
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw ResponseParseError(description: "header without colon") }
            let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
            let value = String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingSpaces()
            switch name {
            case "content-length":
                guard let n = Int(value), n >= 0 else { throw ResponseParseError(description: "bad Content-Length") }
                length = n
            case "transfer-encoding":
                chunked = value.lowercased().hasSuffix("chunked")
            case "connection":
                let v = value.lowercased()
                if v.contains("close") { current.keepAlive = false } else if v.contains("keep-alive") { current.keepAlive = true }
            case "x-consul-index":
                current.consulIndex = UInt64(value)
            default:
                break
            }
        }
        // 1xx, 204 and 304 have no body (RFC 9112 §6.3); a 1xx is skipped as interim by the caller's status check.
        if status < 200 || status == 204 || status == 304 { return (0, false) }
        if chunked != true && length == nil && !current.keepAlive {
            throw ResponseParseError(description: "read-until-close bodies are not supported")
        }
        return (length, chunked)
    }

    private func find(_ needle: [UInt8], from start: Int) -> Int? {
        guard buffer.count - start >= needle.count else { return nil }
        var i = start
        let last = buffer.count - needle.count
        while i <= last {
            if buffer[i] == needle[0] {
                var match = true
                for j in 1..<needle.count where buffer[i + j] != needle[j] { match = false; break }
                if match { return i }
            }
            i += 1
        }
        return nil
    }

    private func parseHex(_ digits: ArraySlice<UInt8>) -> Int? {
        let trimmed = digits.filter { $0 != 32 && $0 != 9 }
        guard !trimmed.isEmpty, trimmed.count <= 8 else { return nil }
        var value = 0
        for d in trimmed {
            switch d {
            case 48...57: value = value * 16 + Int(d - 48)
            case 97...102: value = value * 16 + Int(d - 87)
            case 65...70: value = value * 16 + Int(d - 55)
            default: return nil
            }
        }
        return value
    }
}

private let crlf: [UInt8] = [13, 10]
private let crlfcrlf: [UInt8] = [13, 10, 13, 10]

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
