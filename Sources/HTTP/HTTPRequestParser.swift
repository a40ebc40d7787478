// Incremental HTTP/1.1 request decoder over http-parser 2.9.4. Owns the C parser and its
// callbacks; no I/O. Bytes go in, completed requests (or one terminal error) come out.

import CHTTPParser

/// Decodes requests from a byte stream. One per connection, used from one thread (the loop
/// thread that owns the connection); not Sendable.
///
/// After an error the parser stays failed: every later `feed` returns the same error. After a
/// request that does not keep the connection alive, later bytes are ignored (the server closes).
public final class HTTPRequestParser {
    public let limits: HTTPLimits

    private let parser: UnsafeMutablePointer<http_parser>
    private var failure: HTTPParseError?
    /// Set by a callback that rejects the request; becomes `failure` when execute returns.
    private var callbackError: HTTPParseError?
    /// A request without keep-alive completed; nothing more is parsed on this connection.
    private var finished = false
    private var completed: [HTTPRequest] = []

    // The message being decoded.
    private var url: [UInt8] = []
    private var headers = HTTPHeaders()
    private var field: [UInt8] = []
    private var value: [UInt8] = []
    private var lastWasValue = false
    private var headBytes = 0
    private var requestLineCounted = false
    private var inHead = false
    private var body: [UInt8] = []
    /// The current request's body limit (HTTPLimits.maxBodyBytes(forTarget:)).
    private var bodyLimit = 0
    private var pending: HTTPRequest?

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_REQUEST)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        parser.deallocate()
    }

    /// True once a terminal error was returned.
    public var hasFailed: Bool { failure != nil }

    /// Feeds the next bytes read from the connection.
    public func feed(_ bytes: [UInt8]) -> HTTPParseResult {
        if let failure { return HTTPParseResult(error: failure) }
        if finished || bytes.isEmpty { return HTTPParseResult() }
        bytes.withUnsafeBytes { raw in
            let base = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
            var offset = 0
            while offset < raw.count, failure == nil, !finished {
                let consumed = withUnsafePointer(to: requestParserSettings) { settings in
                    http_parser_execute(parser, settings, base + offset, raw.count - offset)
                }
                offset += consumed
                if !checkAfterExecute(consumed: consumed, remaining: raw.count - offset) { break }
            }
        }
        return takeResult()
    }

    /// Signals that the peer closed its side. A request cut short is an error.
    @discardableResult
    public func feedEOF() -> HTTPParseResult {
        if let failure { return HTTPParseResult(error: failure) }
        if finished { return HTTPParseResult() }
        let consumed = withUnsafePointer(to: requestParserSettings) { settings in
            http_parser_execute(parser, settings, nil, 0)
        }
        _ = checkAfterExecute(consumed: consumed, remaining: 0)
        if failure == nil { finished = true }
        return takeResult()
    }

    private func takeResult() -> HTTPParseResult {
        defer { completed.removeAll(keepingCapacity: false) }
        return HTTPParseResult(requests: completed, error: failure)
    }

    /// Interprets http-parser's state after one execute. Returns false to stop the feed loop.
    private func checkAfterExecute(consumed: Int, remaining: Int) -> Bool {
        let errno = http_errno(rawValue: parser.pointee.http_errno)
        if errno == HPE_PAUSED {
            // on_message_complete paused at a message boundary
            http_parser_pause(parser, 0)
            return true
        }
        if errno != HPE_OK {
            failure = callbackError ?? Self.map(errno)
            return false
        }
        // http-parser's own count covers whitespace our canonical count leaves out.
        if inHead, Int(parser.pointee.nread) > limits.maxHeaderBytes {
            failure = Self.headerTooLarge
            return false
        }
        if consumed == 0 && remaining > 0 {
            // Cannot happen with 2.9.4 (it consumes or errors); guard against a hang anyway.
            failure = .badRequest("parser made no progress")
            return false
        }
        return true
    }

    static let headerTooLarge = HTTPParseError(status: 431, message: "Request Header Fields Too Large")

    private static func map(_ errno: http_errno) -> HTTPParseError {
        if errno == HPE_HEADER_OVERFLOW { return headerTooLarge }
        return .badRequest(String(cString: http_errno_description(errno)))
    }

    // MARK: callbacks (each returns 0 to continue, 1 to reject with `callbackError`)

    fileprivate func messageBegin() -> Int32 {
        url.removeAll(keepingCapacity: true)
        headers = HTTPHeaders()
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        lastWasValue = false
        headBytes = 0
        requestLineCounted = false
        inHead = true
        body = []
        pending = nil
        return 0
    }

    fileprivate func urlBytes(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        if url.count + p.count > limits.maxURLBytes {
            return reject(HTTPParseError(status: 414, message: "URI Too Long"))
        }
        url.append(contentsOf: p)
        headBytes += p.count
        return checkHeadBytes()
    }

    fileprivate func headerField(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        countRequestLine()
        if lastWasValue, flushHeader() != 0 { return 1 }
        field.append(contentsOf: p)
        headBytes += p.count
        return checkHeadBytes()
    }

    fileprivate func headerValue(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        lastWasValue = true
        value.append(contentsOf: p)
        headBytes += p.count
        return checkHeadBytes()
    }

    fileprivate func headersComplete() -> Int32 {
        countRequestLine()
        if lastWasValue || !field.isEmpty, flushHeader() != 0 { return 1 }
        headBytes += 2  // blank line
        if checkHeadBytes() != 0 { return 1 }
        inHead = false

        let p = parser.pointee
        if p.http_major != 1 {
            return reject(HTTPParseError(status: 505, message: "HTTP Version Not Supported"))
        }
        let flags = p.flags
        let chunked = flags & F_CHUNKED.rawValue != 0
        bodyLimit = limits.maxBodyBytes(forTarget: url)
        if !chunked, p.content_length != UInt64.max, p.content_length > UInt64(bodyLimit) {
            return reject(.bodyTooLarge(p.content_length, limit: bodyLimit))
        }
        if !chunked, p.content_length != UInt64.max, p.content_length > 0 {
            body.reserveCapacity(Int(p.content_length))
        }
        let target = url
        switch RequestTarget.decode(target) {
        case .failure(let e):
            return reject(e)
        case .success(let (path, query)):
            pending = HTTPRequest(
                method: String(cString: http_method_str(http_method(rawValue: p.method))),
                target: String(decoding: target, as: UTF8.self),
                path: path, query: query, headers: headers, body: [],
                keepAlive: http_should_keep_alive(parser) != 0,
                versionMajor: Int(p.http_major), versionMinor: Int(p.http_minor))
        }
        headers = HTTPHeaders()
        return 0
    }

    fileprivate func chunkHeader() -> Int32 {
        // content_length holds the announced chunk size: refuse before buffering it.
        let size = UInt64(body.count) &+ parser.pointee.content_length
        if size > UInt64(bodyLimit) || size < UInt64(body.count) {
            return reject(.bodyTooLarge(size, limit: bodyLimit))
        }
        return 0
    }

    fileprivate func bodyBytes(_ p: UnsafeBufferPointer<UInt8>) -> Int32 {
        if body.count + p.count > bodyLimit {
            return reject(.bodyTooLarge(UInt64(body.count + p.count), limit: bodyLimit))
        }
        body.append(contentsOf: p)
        return 0
    }

    fileprivate func messageComplete() -> Int32 {
        guard var request = pending else {
            return reject(.badRequest("message completed without headers"))
        }
        request.body = body
        body = []
        pending = nil
        completed.append(request)
        if !request.keepAlive { finished = true }
        http_parser_pause(parser, 1)
        return 0
    }

    private func countRequestLine() {
        if !requestLineCounted {
            requestLineCounted = true
            // "METHOD SP target SP HTTP/x.y CRLF"; the target is counted as it arrives.
            let method = http_method_str(http_method(rawValue: parser.pointee.method))
            headBytes += Int(strlenSafe(method)) + 1 + 1 + 8 + 2
        }
    }

    /// Returns 1 (with a 400) for a field name that is not an RFC 9110 token; http-parser's
    /// non-strict build lets spaces through, Go's server rejects them.
    private func flushHeader() -> Int32 {
        if field.isEmpty || !field.allSatisfy(isTokenByte) {
            return reject(.badRequest("invalid header field name \"\(String(decoding: field, as: UTF8.self))\""))
        }
        var v = value[...]
        while let last = v.last, last == 0x20 || last == 0x09 { v = v.dropLast() }
        headers.add(String(decoding: field, as: UTF8.self), String(decoding: v, as: UTF8.self))
        headBytes += 4  // ": " and CRLF
        field.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        lastWasValue = false
        return 0
    }

    private func checkHeadBytes() -> Int32 {
        headBytes > limits.maxHeaderBytes ? reject(Self.headerTooLarge) : 0
    }

    private func reject(_ error: HTTPParseError) -> Int32 {
        if callbackError == nil { callbackError = error }
        return 1
    }
}

/// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
private func isTokenByte(_ c: UInt8) -> Bool {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(c)
    }
}

@inline(__always)
private func strlenSafe(_ s: UnsafePointer<CChar>?) -> Int {
    guard let s else { return 0 }
    var n = 0
    while s[n] != 0 { n += 1 }
    return n
}

@inline(__always)
private func owner(_ p: UnsafeMutablePointer<http_parser>?) -> HTTPRequestParser {
    Unmanaged<HTTPRequestParser>.fromOpaque(p!.pointee.data).takeUnretainedValue()
}

@inline(__always)
private func buffer(_ at: UnsafePointer<CChar>?, _ length: Int) -> UnsafeBufferPointer<UInt8> {
    UnsafeBufferPointer(start: UnsafeRawPointer(at)?.assumingMemoryBound(to: UInt8.self), count: at == nil ? 0 : length)
}

private let requestParserSettings: http_parser_settings = {
    var s = http_parser_settings()
    s.on_message_begin = { p in owner(p).messageBegin() }
    s.on_url = { p, at, n in owner(p).urlBytes(buffer(at, n)) }
    s.on_header_field = { p, at, n in owner(p).headerField(buffer(at, n)) }
    s.on_header_value = { p, at, n in owner(p).headerValue(buffer(at, n)) }
    s.on_headers_complete = { p in owner(p).headersComplete() }
    s.on_body = { p, at, n in owner(p).bodyBytes(buffer(at, n)) }
    s.on_message_complete = { p in owner(p).messageComplete() }
    s.on_chunk_header = { p in owner(p).chunkHeader() }
    return s
}()
