// Limits and errors of the HTTP edge: every request the parser accepts fits in these bounds,
// and every input it rejects maps to the status code Consul's Go server would send.

/// Upper bounds on one request. A request over a bound is rejected with the status named per field.
public struct HTTPLimits: Sendable, Equatable {
    /// Request line plus header lines, counted as their canonical bytes (`Name: value\r\n`) plus
    /// the blank line. Over it: 431. Go's net/http allows 1 MiB; Consul requests carry a token and
    /// a few small headers, so 64 KiB is generous while bounding per-connection memory.
    public var maxHeaderBytes: Int
    /// Request body. Over it: 413, decided from Content-Length before the body is read. Consul's
    /// default `limits.http_max_request_body` for KV values is 512 KiB.
    public var maxBodyBytes: Int
    /// Raw request-target. Over it: 414.
    public var maxURLBytes: Int
    /// Exact request paths allowed a larger body than `maxBodyBytes` (PUT /v1/snapshot carries
    /// a whole snapshot archive). Decided from the request-target before the body is read.
    public var largerBodyPaths: [String: Int] = [:]

    /// The body limit for a raw request-target (its path is the part before any "?").
    public func maxBodyBytes(forTarget target: [UInt8]) -> Int {
        guard !largerBodyPaths.isEmpty else { return maxBodyBytes }
        let path = String(decoding: target.prefix { $0 != UInt8(ascii: "?") }, as: UTF8.self)
        return max(maxBodyBytes, largerBodyPaths[path] ?? 0)
    }

    public static let defaultMaxHeaderBytes = 64 * 1024
    public static let defaultMaxBodyBytes = 512 * 1024
    public static let defaultMaxURLBytes = 8 * 1024

    public init(maxHeaderBytes: Int = HTTPLimits.defaultMaxHeaderBytes,
                maxBodyBytes: Int = HTTPLimits.defaultMaxBodyBytes,
                maxURLBytes: Int = HTTPLimits.defaultMaxURLBytes) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.maxURLBytes = maxURLBytes
    }

    /// Rejects nonsense with a message naming the field.
    public func validate() throws(HTTPLimitsError) {
        if maxHeaderBytes < 64 { throw HTTPLimitsError(message: "maxHeaderBytes must be at least 64, got \(maxHeaderBytes)") }
        if maxBodyBytes < 0 { throw HTTPLimitsError(message: "maxBodyBytes must not be negative, got \(maxBodyBytes)") }
        if maxURLBytes < 1 { throw HTTPLimitsError(message: "maxURLBytes must be at least 1, got \(maxURLBytes)") }
    }
}

public struct HTTPLimitsError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// A request the parser rejected. `status` is what the server answers before closing the connection.
public struct HTTPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Int
    public let message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status) \(message)" }

    static func badRequest(_ detail: String) -> HTTPParseError {
        HTTPParseError(status: 400, message: "Bad Request: \(detail)")
    }

    /// Consul's wording (agent/http.go) so clients matching on it keep working.
    static func bodyTooLarge(_ size: UInt64, limit: Int) -> HTTPParseError {
        HTTPParseError(status: 413, message: "Request body(\(size) bytes) too large, max size: \(limit) bytes")
    }
}

/// What one `feed` produced: the requests it completed, in order, then possibly an error. A server
/// answers the requests, then the error, then closes.
public struct HTTPParseResult: Sendable {
    public var requests: [HTTPRequest]
    public var error: HTTPParseError?

    public init(requests: [HTTPRequest] = [], error: HTTPParseError? = nil) {
        self.requests = requests
        self.error = error
    }
}
