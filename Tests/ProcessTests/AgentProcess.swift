// Runs the real `conclave` binary as a child process on 127.0.0.1 and talks to it.
import Foundation
import HTTP

enum Binary {
    /// The built `conclave` next to this test bundle (or $CONCLAVE_BINARY).
    static var path: String {
        if let override = ProcessInfo.processInfo.environment["CONCLAVE_BINARY"] { return override }
        var candidates: [URL] = []
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = me.deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent("conclave"))
            dir = dir.deletingLastPathComponent()
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug/conclave"))
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate.path) {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDir), !isDir.boolValue {
                return candidate.path
            }
        }
        return root.appendingPathComponent(".build/debug/conclave").path
    }
}

/// Collects a child's output from its pipe on a background reader.
final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()

    func append(_ chunk: Data) { lock.lock(); data.append(chunk); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
}

struct ProcessTestError: Error, CustomStringConvertible { let description: String }

final class AgentProcess {
    let process = Process()
    let output = OutputCollector()
    let dataDir: String
    private(set) var httpPort = 0

    convenience init(dataDir: String) throws {
        try self.init(dataDir: dataDir, arguments: ["agent", "-server", "-bootstrap", "-server-port", "0", "-node", "proc-node",
                                                    "-data-dir", dataDir, "-client", "127.0.0.1", "-bind", "127.0.0.1",
                                                    "-http-port", "0", "-dns-port", "-1", "-serf-lan-port", "0", "-serf-wan-port", "0",
                                                    "-log-level", "info"])
    }

    init(dataDir: String, arguments: [String]) throws {
        self.dataDir = dataDir
        process.executableURL = URL(fileURLWithPath: Binary.path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let output = self.output
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if !chunk.isEmpty { output.append(chunk) }
        }
        try process.run()
        httpPort = try waitForPort()
    }

    /// The agent logs `Started HTTP server: address=127.0.0.1:PORT`.
    private func waitForPort(timeoutSeconds: Double = 30) throws -> Int {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            let text = output.text
            if let range = text.range(of: "Started HTTP server: address=127.0.0.1:") {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if let port = Int(digits), port > 0, text[range.upperBound...].dropFirst(digits.count).first != nil {
                    return port
                }
            }
            if !process.isRunning {
                throw ProcessTestError(description: "agent exited (\(process.terminationStatus)) before serving:\n\(text)")
            }
            usleep(20_000)
        }
        throw ProcessTestError(description: "agent did not start within \(timeoutSeconds)s:\n\(output.text)")
    }

    func client() -> HTTPClient { HTTPClient(host: "127.0.0.1", port: httpPort, timeoutSeconds: 30) }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminate() -> Int32 {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}

/// Runs `conclave <arguments>` to completion.
func runCLI(_ arguments: [String], environment: [String: String] = [:], stdin: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Binary.path)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "CONSUL_HTTP_ADDR")
    for (k, v) in environment { env[k] = v }
    process.environment = env
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
}

func temporaryDataDir(_ name: String) -> String {
    NSTemporaryDirectory() + "/conclave-\(name)-" + UUID().uuidString
}
