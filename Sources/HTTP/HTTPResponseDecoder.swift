// Decodes one HTTP/1.1 response at a time over http-parser in response mode, for the blocking
// client. Handles Content-Length, chunked and read-until-close bodies, and HEAD responses.

import CHTTPParser

public struct HTTPClientResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// False when the server will close the connection after this response.
    public var keepAlive: Bool

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], keepAlive: Bool = true) {
        self.status = status
        self.headers = headers
        self.body = body
        self.keepAlive = keepAlive
    }
}

/// Not Sendable: owned by one client on one thread.
public final class HTTPResponseDecoder {
    public let maxBodyBytes: Int
    /// Keep only the first `maxBodyBytes` of the body and drop the rest instead of failing
    /// (health checks capture a bounded prefix of whatever a service answers).
    public var truncatesBody = false
    /// Set before the response to a HEAD request: it has headers only.
    public var expectsNoBody = false

    private let parser: UnsafeMutablePointer<http_parser>
    private var failure: String?
    private var field: [UInt8] = []
    private var value: [UInt8] = []
    private var lastWasValue = false
    private var headers = HTTPHeaders()
    private var body: [UInt8] = []
    private var complete: HTTPClientResponse?

    public init(maxBodyBytes: Int) {
        self.maxBodyBytes = maxBodyBytes
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_RESPONSE)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit { parser.deallocate() }

    /// Starts over for a new connection.
    public func reset() {
        http_parser_init(parser, HTTP_RESPONSE)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        failure = nil
        complete = nil
        beginMessage()
    }

    public enum Outcome {
        case needMore
        case response(HTTPClientResponse, leftover: Int)
        case failed(String)
    }

    /// Feeds bytes; at most one response is returned, with the count of bytes after it.
    public func feed(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        if let failure { return .failed(failure) }
        if bytes.isEmpty { return .needMore }  // an empty execute would mean EOF
        let consumed = withUnsafePointer(to: responseDecoderSettings) { settings in
            http_parser_execute(parser, settings, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        return outcome(leftover: bytes.count - consumed)
    }

    public func feedEOF() -> Outcome {
        if let failure { return .failed(failure) }
        _ = withUnsafePointer(to: responseDecoderSettings) { settings in
            http_parser_execute(parser, settings, nil, 0)
        }
        // outcome() hands a completed response out once: ask it once.
        let result = outcome(leftover: 0)
        if case .needMore = result { return .failed("connection closed before the response ended") }
        return result
    }

    private func outcome(leftover: Int) -> Outcome {
        let errno = http_errno(rawValue: parser.pointee.http_errno)
        if errno == HPE_PAUSED {
            http_parser_pause(parser, 0)
        } else if errno != HPE_OK {
            failure = failure ?? "malformed response: \(String(cString: http_errno_description(errno)))"
            return .failed(failure!)
        }
        if let response = complete {
            complete = nil
            return .response(response, leftover: leftover)
        }
        return .needMore
    }

    private func beginMessage() {
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        lastWasValue = false
        headers = HTTPHeaders()
        body = []
    }

    private func flushHeader() {
        var v = value[...]
        while let last = v.last, last == 0x20 || last == 0x09 { v = v.dropLast() }
        headers.add(String(decoding: field, as: UTF8.self), String(decoding: v, as: UTF8.self))
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        lastWasValue = false
    }

    fileprivate func messageBegin() -> Int32 { beginMessage(); return 0 }

    fileprivate func headerField(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        if lastWasValue { flushHeader() }
        field.append(contentsOf: p)
        return 0
    }

    fileprivate func headerValue(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        lastWasValue = true
        value.append(contentsOf: p)
        return 0
    }

    fileprivate func headersComplete() -> Int32 {
        if lastWasValue || !field.isEmpty { flushHeader() }
        let length = parser.pointee.content_length
        if length != UInt64.max, length > UInt64(maxBodyBytes), !expectsNoBody, !truncatesBody {
            failure = "response body of \(length) bytes exceeds the client limit of \(maxBodyBytes) bytes"
            return -1
        }
        // 1 tells http-parser the response has no body (RFC 9110 §9.3.2).
        return expectsNoBody ? 1 : 0
    }

    fileprivate func bodyBytes(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        if body.count + p.count > maxBodyBytes {
            if truncatesBody {
                body.append(contentsOf: p.prefix(max(0, maxBodyBytes - body.count)))
                return 0
            }
            failure = "response body exceeds the client limit of \(maxBodyBytes) bytes"
            return 1
        }
        body.append(contentsOf: p)
        return 0
    }

    fileprivate func messageComplete() -> Int32 {
        let status = Int(parser.pointee.status_code)
        if status >= 100 && status < 200 {
            beginMessage()  // interim response (100 Continue): wait for the final one
            return 0
        }
        complete = HTTPClientResponse(status: status, headers: headers, body: body,
                                      keepAlive: http_should_keep_alive(parser) != 0)
        body = []
        http_parser_pause(parser, 1)
        return 0
    }
}

/// Decodes one complete serialized response (for tests and tools); nil if incomplete or malformed.
func decodeResponse(_ bytes: [UInt8], maxBodyBytes: Int = 1 << 26) throws -> HTTPClientResponse? {
    let decoder = HTTPResponseDecoder(maxBodyBytes: maxBodyBytes)
    var outcome = bytes.withUnsafeBytes { decoder.feed($0) }
    if case .needMore = outcome { outcome = decoder.feedEOF() }
    if case .response(let r, _) = outcome { return r }
    return nil
}

private func decoderOwner(_ p: UnsafeMutablePointer<http_parser>?) -> HTTPResponseDecoder {
    Unmanaged<HTTPResponseDecoder>.fromOpaque(p!.pointee.data).takeUnretainedValue()
}

private func dataBuffer(_ at: UnsafePointer<CChar>?, _ length: Int) -> UnsafeBufferPointer<UInt8> {
    UnsafeBufferPointer(start: UnsafeRawPointer(at)?.assumingMemoryBound(to: UInt8.self), count: at == nil ? 0 : length)
}

private let responseDecoderSettings: http_parser_settings = {
    var s = http_parser_settings()
    s.on_message_begin = { p in decoderOwner(p).messageBegin() }
    s.on_header_field = { p, at, n in decoderOwner(p).headerField(dataBuffer(at, n)) }
    s.on_header_value = { p, at, n in decoderOwner(p).headerValue(dataBuffer(at, n)) }
    s.on_headers_complete = { p in decoderOwner(p).headersComplete() }
    s.on_body = { p, at, n in decoderOwner(p).bodyBytes(dataBuffer(at, n)) }
    s.on_message_complete = { p in decoderOwner(p).messageComplete() }
    return s
}()
