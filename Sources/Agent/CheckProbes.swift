// One run of an HTTP, TCP or script health check, as Consul's checks do it: HTTP and TCP on the
// loop with non-blocking libuv connections, scripts in a child process whose exit is reported
// back to the loop. Each probe reports (status, output) exactly once, on the loop thread.
import EventLoop
import Foundation
import Glibc
import HTTP
import TLS

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
    /// https://: the request goes over TLS (port 443 unless given).
    var isTLS = false

    /// The reason for anything but an http:// or https:// URL.
    static func parse(_ text: String) -> Result<CheckURL, DefinitionError> {
        let lower = text.lowercased()
        let isTLS = lower.hasPrefix("https://")
        guard isTLS || lower.hasPrefix("http://") else { return .failure(DefinitionError("unsupported protocol scheme in \"\(text)\"")) }
        var rest = Substring(text.dropFirst(isTLS ? "https://".count : "http://".count))
        var path = "/"
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) {
            path = String(rest[slash...])
            if path.hasPrefix("?") { path = "/" + path }
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }  // userinfo: not sent
        var host = rest
        var port = isTLS ? 443 : 80
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
        return .success(CheckURL(host: String(host), port: port, pathAndQuery: path, isTLS: isTLS))
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
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
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
    /// "HTTP GET <url>: <code> <reason> Output: <body prefix>". https:// URLs run TLS over the
    /// same connection: the certificate is verified against the system CA store and the URL's
    /// host (or `tlsServerName`, which also goes in SNI) unless `tlsSkipVerify`.
    static func http(loop: Loop, url: String, method: String, header: [String: [String]], body: String,
                     tlsSkipVerify: Bool = false, tlsServerName: String = "",
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
        let fail = { (message: String) in
            timer.close()
            once.call(.critical, "\(goMethod(method)) \"\(url)\": \(message)")
        }
        connect(loop: loop, host: target.host, port: target.port) { result in
            guard !once.done else {
                if case .success(let connection) = result { connection.closeNow() }
                return
            }
            let connection: TCPConnection
            switch result {
            case .failure(let failure):
                fail(failure.message)
                return
            case .success(let c): connection = c
            }
            open = connection
            let request = requestBytes(target: target, method: method, header: header, body: body)
            guard target.isTLS else {
                exchange(over: connection, request: request, url: url, method: method, timer: timer, once: once)
                return
            }
            TLSContext.loadSharedClient(verifyPeer: !tlsSkipVerify, on: loop) { loaded in
                guard !once.done else {  // timed out meanwhile
                    connection.closeNow()
                    return
                }
                let context: TLSContext
                switch loaded {
                case .success(let c): context = c
                case .failure(let error):
                    connection.closeNow()
                    fail("\(error)")
                    return
                }
                TLSConnection.client(over: connection, context: context,
                                     serverName: tlsServerName.isEmpty ? target.host : tlsServerName) { result in
                    guard !once.done else { return }  // timed out: the timer closed the transport
                    switch result {
                    case .failure(let error): fail("\(error)")
                    case .success(let tls): exchange(over: tls, request: request, url: url, method: method, timer: timer, once: once)
                    }
                }
            }
        }
    }

    /// Sends the request and decodes the response, over TCP or TLS.
    private static func exchange(over stream: some ProbeStream, request: [UInt8], url: String, method: String,
                                 timer: LoopTimer, once: Once) {
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
                stream.closeNow()
                let status: CheckStatus = (200...299).contains(response.status) ? .passing : response.status == 429 ? .warning : .critical
                let output = "HTTP \(method) \(url): \(response.status) \(HTTPResponse.reasonPhrase(response.status)) Output: "
                    + truncatedCheckOutput(response.body)
                once.call(status, output)
            case .failed(let message):
                finished = true
                timer.close()
                stream.closeNow()
                once.call(.critical, "\(goMethod(method)) \"\(url)\": \(message)")
            }
        }
        stream.startProbeReading(onRead: { bytes in
            guard !finished else { return }
            finish(bytes.withUnsafeBytes { decoder.feed($0) })
        }, onClose: { error in
            guard !finished else { return }
            if let error {
                finish(.failed(error))
            } else {
                finish(decoder.feedEOF())
            }
        })
        stream.write(request)
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

    /// How often a running script's pipe and exit status are polled. Foundation's Process is
    /// not used: on Linux it reports an exit only once the output pipe closes, so a script
    /// that leaves a background child behind would hang its check.
    static let scriptPollMilliseconds: UInt64 = 20

    /// Consul's script check: exit 0 passing, 1 warning, anything else critical; the output is
    /// stdout and stderr together. The script runs in its own process group (spawned with
    /// posix_spawnp, PATH lookup as Go's exec.Command); past its timeout the whole group is
    /// killed and the check is critical. Nothing here blocks the loop: the pipe is non-blocking
    /// and the exit is collected with waitpid(WNOHANG) from a loop timer.
    @discardableResult
    static func script(loop: Loop, args: [String], timeoutMilliseconds: UInt64, completion: @escaping ProbeCompletion) -> ScriptRun? {
        guard !args.isEmpty else { completion(.critical, "no script arguments"); return nil }
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            completion(.critical, "Failed to start check: pipe: \(String(cString: strerror(errno)))")
            return nil
        }
        // Close-on-exec so scripts spawned by other checks do not inherit this pipe (the
        // child's ends are dup2'd below, which clears the flag on 1 and 2).
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawnp(&pid, args[0], &actions, &attributes, &argv, environ)
        close(fds[1])
        guard status == 0 else {
            close(fds[0])
            completion(.critical, "Failed to start check: exec: \"\(args[0])\": \(String(cString: strerror(status)))")
            return nil
        }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        let run = ScriptRun(loop: loop, pid: pid, outputFD: fds[0], timeoutMilliseconds: timeoutMilliseconds, completion: completion)
        run.start()
        return run
    }
}

/// One running script: polls its output pipe and exit status on the loop until it exits.
/// Its check's monitor cancels it when the check is removed or the agent stops.
final class ScriptRun {
    let loop: Loop
    let pid: pid_t
    let outputFD: Int32
    let timeoutMilliseconds: UInt64
    var completion: ProbeCompletion?
    let timer: LoopTimer
    let deadline: UInt64
    var output: [UInt8] = []
    var dropped = 0
    var timedOut = false

    init(loop: Loop, pid: pid_t, outputFD: Int32, timeoutMilliseconds: UInt64, completion: @escaping ProbeCompletion) {
        self.loop = loop
        self.pid = pid
        self.outputFD = outputFD
        self.timeoutMilliseconds = timeoutMilliseconds
        self.completion = completion
        timer = LoopTimer(loop: loop)
        deadline = loop.nowMilliseconds + timeoutMilliseconds
    }

    func start() {
        // The timer's closure keeps this run alive until it finishes.
        timer.start(afterMilliseconds: CheckProbes.scriptPollMilliseconds, repeatMilliseconds: CheckProbes.scriptPollMilliseconds) { [self] in
            poll()
        }
    }

    private func drain() {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(outputFD, $0.baseAddress, $0.count) }
            if n > 0 {
                let room = max(0, checkOutputMaxBytes - output.count)
                output.append(contentsOf: chunk[0..<min(n, room)])
                dropped += max(0, n - room)
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return  // EAGAIN (nothing buffered) or EOF
        }
    }

    private func poll() {
        guard completion != nil else { return }
        drain()
        var status: Int32 = 0
        let reaped = waitpid(pid, &status, WNOHANG)
        if reaped == pid || (reaped < 0 && errno == ECHILD) {
            drain()
            finish(status: status, reaped: reaped == pid)
            return
        }
        if !timedOut && loop.nowMilliseconds >= deadline {
            timedOut = true
            kill(-pid, SIGKILL)  // the script's whole process group, as Consul does
        }
    }

    private func finish(status: Int32, reaped: Bool) {
        timer.close()
        close(outputFD)
        guard let completion else { return }
        self.completion = nil
        var text = String(decoding: output, as: UTF8.self)
        if dropped > 0 { text += " ... (captured \(checkOutputMaxBytes) of \(checkOutputMaxBytes + dropped) bytes)" }
        let exited = (status & 0x7f) == 0
        let code = (status >> 8) & 0xff
        if timedOut {
            completion(.critical, "Timed out (\(LocalDefinitions.goDuration(milliseconds: timeoutMilliseconds))) running check")
        } else if !reaped {
            completion(.critical, text.isEmpty ? "script exit status unknown" : text)
        } else if !exited {
            completion(.critical, text.isEmpty ? "signal: \(status & 0x7f)" : text)
        } else {
            completion(code == 0 ? .passing : code == 1 ? .warning : .critical, text)
        }
    }

    /// The check is gone or the agent is stopping: kill the script rather than leave it behind,
    /// and reap it. Its completion does not run.
    func cancel() {
        guard completion != nil else { return }
        completion = nil
        timer.close()
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)  // SIGKILLed: returns at once
        close(outputFD)
    }
}

/// The byte stream an HTTP probe talks over: plain TCP or TLS on top of it.
protocol ProbeStream: AnyObject {
    func write(_ bytes: [UInt8])
    func closeNow()
    /// Sets the callbacks (onClose: nil for EOF, the error's text otherwise) and starts reading.
    func startProbeReading(onRead: @escaping ([UInt8]) -> Void, onClose: @escaping (String?) -> Void)
}

extension TCPConnection: ProbeStream {
    func startProbeReading(onRead: @escaping ([UInt8]) -> Void, onClose: @escaping (String?) -> Void) {
        self.onRead = onRead
        self.onClose = { error in onClose(error.map { "\($0)" }) }
        startReading()
    }
}

extension TLSConnection: ProbeStream {
    func startProbeReading(onRead: @escaping ([UInt8]) -> Void, onClose: @escaping (String?) -> Void) {
        self.onRead = onRead  // TLS reads from the start, for the handshake
        self.onClose = { error in onClose(error.map { "\($0)" }) }
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
