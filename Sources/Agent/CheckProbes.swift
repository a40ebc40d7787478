// One run of an HTTP, TCP or script health check, as Consul's checks do it: HTTP and TCP on the
// loop with non-blocking libuv connections, scripts in a child process whose exit is reported
// back to the loop. Each probe reports (status, output) exactly once, on the loop thread.
import EventLoop
import Foundation
import Glibc
import HTTP

/// Consul's check_output_max_size default: check output beyond it is cut.
let checkOutputMaxBytes = 4096

typealias ProbeCompletion = (CheckStatus, String) -> Void

/// Cuts output to the limit on a UTF-8 boundary, as Consul bounds what it stores.
func truncatedCheckOutput(_ bytes: [UInt8], limit: Int = checkOutputMaxBytes) -> String {
    if bytes.count <= limit { return String(decoding: bytes, as: UTF8.self) }
    var end = limit
    while end > 0 && (bytes[end] & 0xC0) == 0x80 { end -= 1 }  // don't split a code point
    return String(decoding: bytes[..<end], as: UTF8.self) + " ... (captured \(limit) of \(bytes.count) bytes)"
}

/// "http://host:port/path?query" split for a raw HTTP/1.1 request.
struct CheckURL: Equatable {
    var host: String
    var port: Int
    var pathAndQuery: String

    /// nil with the reason for anything but a plain http:// URL.
    static func parse(_ text: String) -> Result<CheckURL, DefinitionError> {
        let lower = text.lowercased()
        if lower.hasPrefix("https://") {
            return .failure(DefinitionError("HTTPS checks are not supported by this build (no TLS library); use http://"))
        }
        guard lower.hasPrefix("http://") else { return .failure(DefinitionError("unsupported protocol scheme in \"\(text)\"")) }
        var rest = Substring(text.dropFirst("http://".count))
        var path = "/"
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) {
            path = String(rest[slash...])
            if path.hasPrefix("?") { path = "/" + path }
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }  // userinfo: not sent
        var host = rest
        var port = 80
        if rest.first == "[" {
            guard let close = rest.firstIndex(of: "]") else { return .failure(DefinitionError("invalid host in \"\(text)\"")) }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { return .failure(DefinitionError("invalid port in \"\(text)\"")) }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                return .failure(DefinitionError("invalid port in \"\(text)\""))
            }
            port = p
        }
        guard !host.isEmpty else { return .failure(DefinitionError("missing host in \"\(text)\"")) }
        return .success(CheckURL(host: String(host), port: port, pathAndQuery: path))
    }

    var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

enum CheckProbes {
    // MARK: Connect (numeric addresses on the loop; names resolved off the loop first)

    static func connect(loop: Loop, host: String, port: Int, completion: @escaping (Result<TCPConnection, ProbeFailure>) -> Void) {
        if host == "localhost" || isNumeric(host) {
            TCPConnection.connect(on: loop, host: host, port: port) { result in
                switch result {
                case .success(let connection): completion(.success(connection))
                case .failure(let error): completion(.failure(ProbeFailure(dialError(error, host: host, port: port))))
                }
            }
            return
        }
        // getaddrinfo blocks: resolve on a worker thread and come back to the loop.
        let box = LoopBox(completion)
        DispatchQueue.global().async {
            let resolved = resolveIPv4OrIPv6(host)
            loop.execute {
                let completion = box.value
                guard let address = resolved else { completion(.failure(ProbeFailure("dial tcp: lookup \(host): no such host"))); return }
                connect(loop: loop, host: address, port: port, completion: completion)
            }
        }
    }

    private static func isNumeric(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    private static func resolveIPv4OrIPv6(_ host: String) -> String? {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return nil }
        defer { freeaddrinfo(list) }
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(first.pointee.ai_addr, first.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 else {
            return nil
        }
        return String(cString: buffer)
    }

    /// Go's wording, which Consul's outputs carry: "dial tcp 127.0.0.1:1: connect: connection refused".
    private static func dialError(_ error: LoopError, host: String, port: Int) -> String {
        let authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        return "dial tcp \(authority): connect: \(String(describing: error).split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "\(error)")"
    }

    // MARK: TCP

    /// Consul: a connection that opens is passing ("TCP connect <addr>: Success").
    static func tcp(loop: Loop, address: String, timeoutMilliseconds: UInt64, completion: @escaping ProbeCompletion) {
        guard let (host, port) = splitHostPort(address) else {
            completion(.critical, "address \(address): missing port in address")
            return
        }
        let once = Once(completion)
        let timer = LoopTimer(loop: loop)
        var pending: TCPConnection?
        timer.start(afterMilliseconds: timeoutMilliseconds) {
            timer.close()
            pending?.closeNow()
            once.call(.critical, "dial tcp \(address): i/o timeout")
        }
        connect(loop: loop, host: host, port: port) { result in
            timer.close()
            switch result {
            case .success(let connection):
                pending = connection
                connection.closeNow()
                once.call(.passing, "TCP connect \(address): Success")
            case .failure(let failure):
                once.call(.critical, failure.message)
            }
        }
    }

    static func splitHostPort(_ address: String) -> (String, Int)? {
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            let host = String(address[address.index(after: address.startIndex)..<close])
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port) else { return nil }
            return (host, port)
        }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65535).contains(port), !address[..<colon].isEmpty else { return nil }
        return (String(address[..<colon]), port)
    }

    // MARK: HTTP

    /// Consul's HTTP check: 2xx passing, 429 warning, anything else critical; output
    /// "HTTP GET <url>: <code> <reason> Output: <body prefix>".
    static func http(loop: Loop, url: String, method: String, header: [String: [String]], body: String,
                     timeoutMilliseconds: UInt64, completion: @escaping ProbeCompletion) {
        let target: CheckURL
        switch CheckURL.parse(url) {
        case .success(let parsed): target = parsed
        case .failure(let error):
            completion(.critical, error.message)
            return
        }
        let once = Once(completion)
        let timer = LoopTimer(loop: loop)
        var open: TCPConnection?
        timer.start(afterMilliseconds: timeoutMilliseconds) {
            timer.close()
            open?.closeNow()
            once.call(.critical, "\(goMethod(method)) \"\(url)\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
        }
        connect(loop: loop, host: target.host, port: target.port) { result in
            guard !once.done else {
                if case .success(let connection) = result { connection.closeNow() }
                return
            }
            let connection: TCPConnection
            switch result {
            case .failure(let failure):
                timer.close()
                once.call(.critical, "\(goMethod(method)) \"\(url)\": \(failure.message)")
                return
            case .success(let c): connection = c
            }
            open = connection
            let decoder = HTTPResponseDecoder(maxBodyBytes: checkOutputMaxBytes)
            decoder.truncatesBody = true
            decoder.expectsNoBody = method == "HEAD"
            var finished = false
            func finish(_ outcome: HTTPResponseDecoder.Outcome) {
                switch outcome {
                case .needMore: return
                case .response(let response, _):
                    finished = true
                    timer.close()
                    connection.closeNow()
                    let status: CheckStatus = (200...299).contains(response.status) ? .passing : response.status == 429 ? .warning : .critical
                    let output = "HTTP \(method) \(url): \(response.status) \(HTTPResponse.reasonPhrase(response.status)) Output: "
                        + truncatedCheckOutput(response.body)
                    once.call(status, output)
                case .failed(let message):
                    finished = true
                    timer.close()
                    connection.closeNow()
                    once.call(.critical, "\(goMethod(method)) \"\(url)\": \(message)")
                }
            }
            connection.onRead = { bytes in
                guard !finished else { return }
                finish(bytes.withUnsafeBytes { decoder.feed($0) })
            }
            connection.onClose = { error in
                guard !finished else { return }
                if error == nil {
                    finish(decoder.feedEOF())
                } else {
                    finish(.failed(error.map { "\($0)" } ?? "connection closed"))
                }
            }
            connection.startReading()
            connection.write(requestBytes(target: target, method: method, header: header, body: body))
        }
    }

    private static func goMethod(_ method: String) -> String {
        method.prefix(1).uppercased() + method.dropFirst().lowercased()
    }

    static func requestBytes(target: CheckURL, method: String, header: [String: [String]], body: String) -> [UInt8] {
        // The URL and method come from the definition: no CR/LF or spaces may split the request line.
        let path = headerSafe(target.pathAndQuery).replacingOccurrences(of: " ", with: "%20")
        var text = "\(headerSafe(method).filter { $0 != " " }) \(path) HTTP/1.1\r\n"
        var names = Set<String>()
        for (name, values) in header.sorted(by: { $0.key < $1.key }) {
            // Header names and values come from the definition: CR/LF would split the request.
            let cleanName = headerSafe(name).filter { $0 != ":" }
            guard !cleanName.isEmpty else { continue }
            names.insert(cleanName.lowercased())
            for value in values { text += "\(cleanName): \(headerSafe(value))\r\n" }
        }
        if !names.contains("host") { text += "Host: \(target.authority)\r\n" }
        if !names.contains("user-agent") { text += "User-Agent: Consul Health Check\r\n" }
        if !names.contains("accept") { text += "Accept: text/plain, text/*, */*\r\n" }
        text += "Connection: close\r\n"
        if !body.isEmpty || method == "POST" || method == "PUT" { text += "Content-Length: \(body.utf8.count)\r\n" }
        text += "\r\n"
        return Array(text.utf8) + Array(body.utf8)
    }

    /// Drops CR and LF by scalar ("\r\n" is one Character, so a Character filter misses it).
    private static func headerSafe(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.filter { $0 != "\r" && $0 != "\n" }))
    }

    // MARK: Script

    /// Consul's script check: exit 0 passing, 1 warning, anything else critical; the output is
    /// stdout and stderr together. A script past its timeout is killed and critical.
    static func script(loop: Loop, args: [String], timeoutMilliseconds: UInt64, completion: @escaping ProbeCompletion) {
        guard let executable = args.first else { completion(.critical, "no script arguments"); return }
        let process = Process()
        if executable.contains("/") {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = Array(args.dropFirst())
        } else {
            // Go's exec.Command looks the name up on PATH; /usr/bin/env does the same.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = args
        }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        let collected = BoundedOutput(limit: checkOutputMaxBytes)
        output.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty { handle.readabilityHandler = nil } else { collected.append(chunk) }
        }
        let box = LoopBox(completion)
        let state = ScriptState()
        let reader = PipeReader(output.fileHandleForReading)
        process.terminationHandler = { finished in
            // Runs on Foundation's reaper thread: collect the rest of the output, then report on the loop.
            reader.value.readabilityHandler = nil
            if let rest = try? reader.value.readToEnd() { collected.append(rest) }
            let code = finished.terminationStatus
            let signalled = finished.terminationReason == .uncaughtSignal
            loop.execute {
                let completion = box.value
                let text = truncatedCheckOutput(collected.bytes) + (collected.dropped > 0 ? " ... (captured \(checkOutputMaxBytes) of \(checkOutputMaxBytes + collected.dropped) bytes)" : "")
                if state.timedOut {
                    completion(.critical, "Timed out (\(LocalDefinitions.goDuration(milliseconds: timeoutMilliseconds))) running check")
                } else if signalled {
                    completion(.critical, text.isEmpty ? "signal: \(code)" : text)
                } else {
                    completion(code == 0 ? .passing : code == 1 ? .warning : .critical, text)
                }
                state.timer?.close()
            }
        }
        do { try process.run() } catch {
            output.fileHandleForReading.readabilityHandler = nil
            completion(.critical, "Failed to start check: \(error.localizedDescription)")
            return
        }
        let pid = process.processIdentifier
        let timer = LoopTimer(loop: loop)
        state.timer = timer
        timer.start(afterMilliseconds: timeoutMilliseconds) {
            timer.close()
            state.timedOut = true
            kill(pid, SIGKILL)
        }
    }
}

struct ProbeFailure: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// Calls a completion once; later calls (a timeout racing a reply) are ignored.
final class Once {
    private var completion: ProbeCompletion?
    init(_ completion: @escaping ProbeCompletion) { self.completion = completion }
    var done: Bool { completion == nil }
    func call(_ status: CheckStatus, _ output: String) {
        guard let completion else { return }
        self.completion = nil
        completion(status, output)
    }
}

/// Carries a loop-confined value across a hop to another thread and back; only the loop
/// thread touches `value`.
final class LoopBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The read end of a script's output pipe, used by the reaper thread once the process exited
/// (the readability handler is cleared first, so only that thread reads it then).
private final class PipeReader: @unchecked Sendable {
    let value: FileHandle
    init(_ value: FileHandle) { self.value = value }
}

/// A script run's loop-side state; touched only on the loop thread.
private final class ScriptState: @unchecked Sendable {
    var timedOut = false
    var timer: LoopTimer?
}

/// Output collected from a pipe's reader thread and read once the process has exited.
private final class BoundedOutput: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var data: [UInt8] = []
    private var droppedCount = 0
    private let limit: Int
    init(limit: Int) { self.limit = limit }
    func append(_ chunk: Data) {
        lock.withLock {
            let room = max(0, limit - data.count)
            data.append(contentsOf: chunk.prefix(room))
            droppedCount += max(0, chunk.count - room)
        }
    }
    var bytes: [UInt8] { lock.withLock { data } }
    var dropped: Int { lock.withLock { droppedCount } }
}
