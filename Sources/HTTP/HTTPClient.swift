// A small blocking HTTP/1.1 client over POSIX sockets, for the CLI and tests. One connection,
// kept alive between requests; every wait is bounded by the request's timeout.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Not Sendable: use from one thread. Copies share the connection.
public struct HTTPClient {
    public let host: String
    public let port: Int
    public let timeoutSeconds: Double
    /// Responses larger than this are refused rather than buffered.
    public let maxResponseBodyBytes: Int

    public static let defaultMaxResponseBodyBytes = 64 * 1024 * 1024

    private let connection = Connection()

    public init(host: String, port: Int, timeoutSeconds: Double = 10,
                maxResponseBodyBytes: Int = HTTPClient.defaultMaxResponseBodyBytes) {
        self.host = host
        self.port = port
        self.timeoutSeconds = timeoutSeconds
        self.maxResponseBodyBytes = maxResponseBodyBytes
    }

    /// `host:port` as shown in errors and sent as Host.
    public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Sends one request and waits for its response. `path` includes the query string. A
    /// Content-Length header is added; Host and User-Agent unless given.
    public mutating func request(method: String, path: String, headers: [(String, String)] = [],
                                 body: [UInt8] = []) throws(HTTPClientError) -> HTTPClientResponse {
        let deadline = Deadline(seconds: timeoutSeconds)
        let wire = serializeRequest(method: method, path: path, headers: headers, body: body)
        var attempt = 0
        while true {
            attempt += 1
            let reused = connection.fd >= 0
            if !reused { try connection.open(host: host, port: port, authority: authority, deadline: deadline) }
            do {
                let response = try connection.exchange(wire, isHead: method == "HEAD",
                                                       maxBodyBytes: maxResponseBodyBytes, deadline: deadline,
                                                       what: "\(method) \(path) to \(authority)")
                if !response.keepAlive { connection.close() }
                return response
            } catch let failure {
                connection.close()
                // A kept-alive connection the server closed while idle: reconnect once.
                if reused, attempt == 1, case .closedBeforeResponse = failure.kind { continue }
                throw HTTPClientError(failure.message)
            }
        }
    }

    /// Closes the kept-alive connection, if any.
    public func close() { connection.close() }

    private func serializeRequest(method: String, path: String, headers: [(String, String)], body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 + body.count)
        out.append(contentsOf: "\(method) \(path.isEmpty ? "/" : path) HTTP/1.1\r\n".utf8)
        let names = headers.map { $0.0 }
        if !names.contains(where: { HTTPHeaders.namesEqual($0, "Host") }) {
            out.append(contentsOf: "Host: \(authority)\r\n".utf8)
        }
        if !names.contains(where: { HTTPHeaders.namesEqual($0, "User-Agent") }) {
            out.append(contentsOf: "User-Agent: conclave\r\n".utf8)
        }
        for (name, value) in headers where !HTTPHeaders.namesEqual(name, "Content-Length") {
            out.append(contentsOf: "\(name): \(value)\r\n".utf8)
        }
        if !body.isEmpty || method == "PUT" || method == "POST" {
            out.append(contentsOf: "Content-Length: \(body.count)\r\n".utf8)
        }
        out.append(contentsOf: "\r\n".utf8)
        out.append(contentsOf: body)
        return out
    }

    /// Parses an agent address as CONSUL_HTTP_ADDR allows: `127.0.0.1:8500`,
    /// `http://127.0.0.1:8500`, `localhost:8500`, `[::1]:8500`; no port means 80 as in Go's
    /// net/http. `https://` and other schemes are refused (no TLS here).
    public static func parseAddress(_ s: String) -> (host: String, port: Int)? {
        var rest = Substring(s.trimmingASCIIWhitespace())
        if let colon = rest.firstIndex(of: ":"), rest[colon...].hasPrefix("://") {
            guard rest[..<colon].lowercased() == "http" else { return nil }
            rest = rest[rest.index(colon, offsetBy: 3)...]
        }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        var host: Substring
        var portText: Substring?
        if rest.first == "[" {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { return nil }
                portText = after.dropFirst()
            }
        } else if rest.filter({ $0 == ":" }).count == 1, let colon = rest.firstIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { return nil }
        var port = 80
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p), portText.allSatisfy(\.isASCII) else { return nil }
            port = p
        }
        return (String(host), port)
    }
}

private extension String {
    func trimmingASCIIWhitespace() -> Substring {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s = s.dropLast() }
        return s
    }
}

private struct Deadline {
    let end: Double
    let seconds: Double

    init(seconds: Double) {
        self.seconds = seconds
        end = Deadline.now() + seconds
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Milliseconds left for poll, at least 0.
    var remainingMilliseconds: Int32 {
        let left = (end - Deadline.now()) * 1000
        return left <= 0 ? 0 : Int32(min(left.rounded(.up), Double(Int32.max)))
    }
}

private struct ExchangeFailure: Error {
    enum Kind { case closedBeforeResponse, other }
    let kind: Kind
    let message: String
}

private func closeSocket(_ fd: Int32) { _ = close(fd) }

private func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// The socket and decoder. A class so the descriptor is closed exactly once, in deinit at the latest.
private final class Connection {
    var fd: Int32 = -1
    private var decoder: HTTPResponseDecoder?

    deinit { close() }

    func close() {
        if fd >= 0 {
            closeSocket(fd)
            fd = -1
        }
    }

    func open(host: String, port: Int, authority: String, deadline: Deadline) throws(HTTPClientError) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw HTTPClientError("resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no addresses"
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let s = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if s < 0 { lastError = errnoText(errno); continue }
            var one: Int32 = 1
            _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if connect(s, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 {
                fd = s
                return
            }
            var err = errno
            if err == EINPROGRESS {
                var pfd = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&pfd, 1, deadline.remainingMilliseconds)
                if ready == 0 {
                    closeSocket(s)
                    throw HTTPClientError("connect \(authority): timed out after \(deadline.seconds)s")
                }
                var soError: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(s, SOL_SOCKET, SO_ERROR, &soError, &len)
                err = ready < 0 ? errno : soError
                if err == 0 {
                    fd = s
                    return
                }
            }
            closeSocket(s)
            lastError = errnoText(err)
        }
        throw HTTPClientError("connect \(authority): \(lastError)")
    }

    /// Writes the request and reads one response.
    func exchange(_ wire: [UInt8], isHead: Bool, maxBodyBytes: Int, deadline: Deadline,
                  what: String) throws(ExchangeFailure) -> HTTPClientResponse {
        let decoder: HTTPResponseDecoder
        if let d = self.decoder, d.maxBodyBytes == maxBodyBytes {
            decoder = d
        } else {
            decoder = HTTPResponseDecoder(maxBodyBytes: maxBodyBytes)
            self.decoder = decoder
        }
        decoder.reset()
        decoder.expectsNoBody = isHead

        // Send everything.
        var sent = 0
        while sent < wire.count {
            let n = wire.withUnsafeBytes { send(fd, $0.baseAddress! + sent, wire.count - sent, Int32(MSG_NOSIGNAL)) }
            if n >= 0 { sent += n; continue }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN || err == EWOULDBLOCK {
                try wait(for: Int16(POLLOUT), deadline: deadline, what: what)
                continue
            }
            let kind: ExchangeFailure.Kind = (err == EPIPE || err == ECONNRESET) ? .closedBeforeResponse : .other
            throw ExchangeFailure(kind: kind, message: "\(what): send: \(errnoText(err))")
        }

        // Read until one response is complete.
        var received = 0
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n > 0 {
                received += n
                switch buffer.withUnsafeBytes({ decoder.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) {
                case .needMore: continue
                case .response(let r, _): return r
                case .failed(let message): throw ExchangeFailure(kind: .other, message: "\(what): \(message)")
                }
            }
            if n == 0 {
                if received == 0 {
                    throw ExchangeFailure(kind: .closedBeforeResponse, message: "\(what): connection closed by server before a response")
                }
                switch decoder.feedEOF() {
                case .response(let r, _): return r
                case .needMore, .failed: throw ExchangeFailure(kind: .other, message: "\(what): connection closed mid-response")
                }
            }
            let err = errno
            if err == EINTR { continue }
            if err == EAGAIN || err == EWOULDBLOCK {
                try wait(for: Int16(POLLIN), deadline: deadline, what: what)
                continue
            }
            let kind: ExchangeFailure.Kind = (err == ECONNRESET && received == 0) ? .closedBeforeResponse : .other
            throw ExchangeFailure(kind: kind, message: "\(what): recv: \(errnoText(err))")
        }
    }

    private func wait(for events: Int16, deadline: Deadline, what: String) throws(ExchangeFailure) {
        while true {
            var pfd = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&pfd, 1, deadline.remainingMilliseconds)
            if ready > 0 { return }
            if ready < 0, errno == EINTR { continue }
            if ready < 0 { throw ExchangeFailure(kind: .other, message: "\(what): poll: \(errnoText(errno))") }
            throw ExchangeFailure(kind: .other, message: "\(what): timed out after \(deadline.seconds)s")
        }
    }
}
