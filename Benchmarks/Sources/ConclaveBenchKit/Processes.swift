// Child processes of a benchmark (agents, etcd members) and their temp dirs: started with their
// output in a log file, always torn down: at the end, on an error, and on Ctrl-C / SIGTERM.
import Dispatch
import Foundation
import HTTP
#if canImport(Glibc)
import Glibc
#endif

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class ChildProcess: @unchecked Sendable {
    public let name: String
    public let logPath: String
    private let process = Process()

    /// Starts `executable arguments...`; stdout and stderr go to `logPath`.
    public init(name: String, executable: String, arguments: [String], logPath: String) throws {
        self.name = name
        self.logPath = logPath
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? log.close()
        Cleanup.shared.register(self)
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    public func kill9() {
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM, then SIGKILL after `graceSeconds`.
    public func stop(graceSeconds: Double = 5) {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(graceSeconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        kill9()
    }

    /// Polls the log for `marker` followed by digits; returns them.
    public func waitForNumber(after marker: String, seconds: Double) throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let text = log
            if let range = text.range(of: marker) {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let n = Int(digits), n > 0, text[range.upperBound...].dropFirst(digits.count).first != nil { return n }
            }
            if !process.isRunning { throw BenchError("\(name) exited (\(process.terminationStatus)); log \(logPath):\n\(text.suffix(2000))") }
            usleep(20_000)
        }
        throw BenchError("\(name) did not log \"\(marker)\" within \(Int(seconds)) s; log \(logPath)")
    }
}

/// Everything to undo when the bench ends for any reason. Thread-safe: the signal handler runs on
/// its own dispatch queue.
public final class Cleanup: @unchecked Sendable {
    public static let shared = Cleanup()
    private let lock = NSLock()
    private var processes: [ChildProcess] = []
    private var directories: [String] = []
    private var signalSources: [DispatchSourceSignal] = []
    /// Keep temp dirs (and logs) for a look after the run.
    public var keepDirectories = false

    func register(_ process: ChildProcess) { lock.withLock { processes.append(process) } }
    public func register(directory: String) { lock.withLock { directories.append(directory) } }

    /// Stops every registered process (SIGTERM, then SIGKILL) and removes the temp dirs.
    public func run() {
        let (ps, ds) = lock.withLock { () -> ([ChildProcess], [String]) in
            defer { processes = []; directories = [] }
            return (processes, directories)
        }
        for p in ps where p.isRunning { kill(p.pid, SIGTERM) }
        for p in ps { p.stop(graceSeconds: 5) }
        if !keepDirectories {
            for d in ds { try? FileManager.default.removeItem(atPath: d) }
        }
    }

    /// Processes stopped and dirs removed on SIGINT/SIGTERM, then exit 130/143.
    public func installSignalHandlers() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in
                FileHandle.standardError.write(Data("\nconclave-bench: signal \(sig), stopping servers and removing temp dirs\n".utf8))
                run()
                exit(128 + sig)
            }
            source.resume()
            signalSources.append(source)
        }
    }
}

/// A loopback port free right now (bound to port 0, read back, closed). Only for etcd, which has
/// no way to report a kernel-chosen port; Conclave agents take port 0 and log the bound one.
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw BenchError("bind() failed") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A blocking request for control calls (status, leader, preload checks), not the measured load.
func control(_ target: Target, _ method: String, _ path: String, body: [UInt8] = [], timeout: Double = 5) -> HTTPClientResponse? {
    var client = HTTPClient(host: target.host, port: target.port, timeoutSeconds: timeout)
    defer { client.close() }
    return try? client.request(method: method, path: path, body: body)
}

func controlJSON(_ target: Target, _ path: String, method: String = "GET", body: [UInt8] = [], timeout: Double = 5) -> Any? {
    guard let response = control(target, method, path, body: body, timeout: timeout), response.status == 200 else { return nil }
    return try? JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed])
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func poll(_ what: String, seconds: Double, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return }
        usleep(20_000)
    }
    throw BenchError("timed out after \(Int(seconds)) s waiting for \(what)")
}

public func makeTempDir(_ name: String) throws -> String {
    let path = NSTemporaryDirectory() + "conclave-bench-\(name)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    Cleanup.shared.register(directory: path)
    return path
}
