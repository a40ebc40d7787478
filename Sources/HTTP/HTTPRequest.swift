// A decoded HTTP/1.1 request and its query string, with the percent-decoding rules of Go's
// net/url that Consul's handlers see: `+` is a space in the query, a literal `+` in the path.

public struct HTTPRequest: Sendable {
    /// "GET", "PUT", … as http-parser names them.
    public var method: String
    /// The raw request-target as sent, e.g. `/v1/kv/a%2Fb?recurse`.
    public var target: String
    /// The percent-decoded path (`/v1/kv/a/b`); fragment and query removed.
    public var path: String
    public var query: QueryParameters
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// http-parser's should_keep_alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`.
    public var keepAlive: Bool
    public var versionMajor: Int
    public var versionMinor: Int

    public init(method: String, target: String, path: String, query: QueryParameters = QueryParameters(),
                headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], keepAlive: Bool = true,
                versionMajor: Int = 1, versionMinor: Int = 1) {
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keepAlive = keepAlive
        self.versionMajor = versionMajor
        self.versionMinor = versionMinor
    }
}

extension HTTPRequest {
    /// A request built from a raw request-target (`/v1/kv/a%2Fb?recurse`), decoded exactly as
    /// the parser decodes one from the wire: for requests that arrive another way (RPC from a
    /// client agent, the agent's internal calls). Errors are the parser's 400s.
    public static func make(method: String, target: String, headers: HTTPHeaders = HTTPHeaders(),
                            body: [UInt8] = []) -> Result<HTTPRequest, HTTPParseError> {
        switch RequestTarget.decode(Array(target.utf8)) {
        case let .success((path, query)):
            return .success(HTTPRequest(method: method, target: target, path: path, query: query,
                                        headers: headers, body: body))
        case let .failure(error):
            return .failure(error)
        }
    }
}

/// Query parameters in the order sent. A flag without `=` (`?recurse`) is present with value "".
public struct QueryParameters: Sendable, Equatable {
    public struct Parameter: Sendable, Equatable {
        public var name: String
        public var value: String
    }

    public private(set) var parameters: [Parameter] = []

    public init() {}

    public init(_ pairs: [(String, String)]) {
        parameters = pairs.map { Parameter(name: $0.0, value: $0.1) }
    }

    public var isEmpty: Bool { parameters.isEmpty }
    public var count: Int { parameters.count }

    public func has(_ name: String) -> Bool { parameters.contains { $0.name == name } }
    public func first(_ name: String) -> String? { parameters.first { $0.name == name }?.value }
    public func all(_ name: String) -> [String] { parameters.filter { $0.name == name }.map(\.value) }

    /// Parses a raw query string (without `?`) like Go's url.ParseQuery: pairs split on `&`,
    /// empty pairs skipped, name and value percent-decoded with `+` as space. Unlike Go (which
    /// drops a pair with a bad escape), a bad escape is an error: the request is malformed.
    public static func parse(_ raw: some Collection<UInt8>) -> Result<QueryParameters, HTTPParseError> {
        var result = QueryParameters()
        for pair in raw.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let eq = pair.firstIndex(of: UInt8(ascii: "="))
            let rawName = eq.map { pair[pair.startIndex..<$0] } ?? pair[...]
            let rawValue = eq.map { pair[pair.index(after: $0)...] } ?? pair[pair.endIndex...]
            switch (PercentDecoding.decode(rawName, plusAsSpace: true),
                    PercentDecoding.decode(rawValue, plusAsSpace: true)) {
            case let (.success(n), .success(v)):
                result.parameters.append(Parameter(name: String(decoding: n, as: UTF8.self),
                                                   value: String(decoding: v, as: UTF8.self)))
            case let (.failure(e), _), let (_, .failure(e)):
                return .failure(e)
            }
        }
        return .success(result)
    }
}

enum PercentDecoding {
    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Decodes `%XX` escapes (and `+` when `plusAsSpace`). A `%` not followed by two hex digits
    /// is an error worded like Go's `invalid URL escape "%zz"`.
    static func decode(_ bytes: some Collection<UInt8>, plusAsSpace: Bool) -> Result<[UInt8], HTTPParseError> {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i != bytes.endIndex {
            let c = bytes[i]
            if c == UInt8(ascii: "%") {
                let h = bytes.index(after: i)
                let l = h == bytes.endIndex ? h : bytes.index(after: h)
                guard h != bytes.endIndex, l != bytes.endIndex,
                      let hi = hexValue(bytes[h]), let lo = hexValue(bytes[l]) else {
                    let end = l == bytes.endIndex ? l : bytes.index(after: l)
                    let shown = String(decoding: bytes[i..<end], as: UTF8.self)
                    return .failure(.badRequest("invalid URL escape \"\(shown)\""))
                }
                out.append(hi << 4 | lo)
                i = bytes.index(after: l)
            } else {
                out.append(plusAsSpace && c == UInt8(ascii: "+") ? UInt8(ascii: " ") : c)
                i = bytes.index(after: i)
            }
        }
        return .success(out)
    }
}

enum RequestTarget {
    /// Splits a request-target into decoded path and parsed query. Origin-form (`/a?b`) is the
    /// norm; absolute-form (`http://h/a?b`) is reduced to its path as Go's server does; `*` stays.
    static func decode(_ target: [UInt8]) -> Result<(path: String, query: QueryParameters), HTTPParseError> {
        var t = target[...]
        if let hash = t.firstIndex(of: UInt8(ascii: "#")) { t = t[..<hash] }
        var rawQuery = t[t.endIndex...]
        if let q = t.firstIndex(of: UInt8(ascii: "?")) {
            rawQuery = t[t.index(after: q)...]
            t = t[..<q]
        }
        if t.first != UInt8(ascii: "/"), t.first != UInt8(ascii: "*") {
            // absolute-form: skip "scheme://authority"
            if let colon = t.firstIndex(of: UInt8(ascii: ":")),
               t[colon...].starts(with: [UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "/")]) {
                let authorityStart = colon + 3
                t = t[authorityStart...]
                t = t.firstIndex(of: UInt8(ascii: "/")).map { t[$0...] } ?? t[t.endIndex...]
            }
        }
        let path: [UInt8]
        switch PercentDecoding.decode(t, plusAsSpace: false) {
        case .success(let p): path = p.isEmpty ? [UInt8(ascii: "/")] : p
        case .failure(let e): return .failure(e)
        }
        switch QueryParameters.parse(rawQuery) {
        case .success(let q): return .success((String(decoding: path, as: UTF8.self), q))
        case .failure(let e): return .failure(e)
        }
    }
}
