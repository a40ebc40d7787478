// Event handler scripts, as Serf documents them: `-event-handler [filter=]script` runs the
// script through /bin/sh for matching events, with SERF_* variables and the event's data on
// stdin; for a query, what the script prints is the answer. Scripts run off the loop thread.
import EventLoop
import Foundation
import Logging

/// One `-event-handler` value: which events (empty = all) and the script.
struct EventHandlerSpec: Equatable {
    /// "member-join", "user", "user:deploy", "query:ping", … (Serf's filter syntax).
    var filters: [String]
    var script: String

    static let memberEvents = ["member-join", "member-leave", "member-failed", "member-update", "member-reap"]

    /// `script`, or `type[,type…]=script` where type is a member event, `user`, `user:NAME`,
    /// `query`, `query:NAME` or `*`.
    static func parse(_ text: String) throws(AgentConfigError) -> EventHandlerSpec {
        guard let eq = text.firstIndex(of: "="), !text[..<eq].contains(" ") else {
            guard !text.isEmpty else { throw .invalid("event handler: empty script") }
            return EventHandlerSpec(filters: [], script: text)
        }
        let filters = text[..<eq].split(separator: ",").map(String.init)
        let script = String(text[text.index(after: eq)...])
        guard !script.isEmpty else { throw .invalid("event handler \"\(text)\": empty script") }
        for filter in filters {
            let kind = filter.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
            let valid = filter == "*" || memberEvents.contains(filter) || kind == "user" || kind == "query"
            if !valid { throw .invalid("event handler \"\(text)\": unknown event type \"\(filter)\"") }
        }
        return EventHandlerSpec(filters: filters, script: script)
    }

    /// `event` is "member-join"…, "user" or "query"; `name` the user event's or query's name.
    func matches(event: String, name: String?) -> Bool {
        if filters.isEmpty { return true }
        for filter in filters {
            if filter == "*" || filter == event { return true }
            if let name, filter == "\(event):\(name)" { return true }
        }
        return false
    }
}

/// What one handler invocation gets.
struct HandlerInvocation: Sendable {
    var script: String
    var environment: [String: String]
    var stdin: [UInt8]
    /// For queries: how long the answer is still useful.
    var timeoutSeconds: Double
}

/// Runs handler scripts one at a time, in event order, on its own queue. Bounded: past
/// `maxQueued` waiting invocations, new ones are dropped with a warning.
final class EventHandlerRunner: @unchecked Sendable {
    // `queued` is guarded by `lock`; everything else is immutable.
    private let queue = DispatchQueue(label: "conclave.event-handlers")
    private let lock = NSLock()
    private var queued = 0
    private let maxQueued: Int
    private let maxOutputBytes: Int
    private let logger = Logger(label: "agent.event_handler")

    init(maxQueued: Int = 256, maxOutputBytes: Int = 1024) {
        self.maxQueued = maxQueued
        self.maxOutputBytes = maxOutputBytes
    }

    /// Runs the script; `completion` gets its stdout (truncated), on the runner's queue.
    func run(_ invocation: HandlerInvocation, completion: (@Sendable ([UInt8]?) -> Void)? = nil) {
        let accepted = lock.withLock { () -> Bool in
            guard queued < maxQueued else { return false }
            queued += 1
            return true
        }
        guard accepted else {
            logger.warning("event handler queue full; dropping event", metadata: ["limit": "\(maxQueued)"])
            completion?(nil)
            return
        }
        queue.async { [self] in
            let output = execute(invocation)
            lock.withLock { queued -= 1 }
            completion?(output)
        }
    }

    private func execute(_ invocation: HandlerInvocation) -> [UInt8]? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", invocation.script]
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in invocation.environment { environment[key] = value }
        process.environment = environment
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        do { try process.run() } catch {
            logger.error("event handler failed to start", metadata: ["script": "\(invocation.script)", "error": "\(error)"])
            return nil
        }
        // Feed stdin from another thread so a script that does not read cannot block us.
        let stdin = input.fileHandleForWriting
        let data = Data(invocation.stdin)
        DispatchQueue.global().async {
            stdin.write(data)
            try? stdin.close()
        }
        let collected = OutputBuffer(limit: maxOutputBytes)
        output.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if chunk.isEmpty { handle.readabilityHandler = nil } else { collected.append(chunk) }
        }
        if exited.wait(timeout: .now() + invocation.timeoutSeconds) == .timedOut {
            logger.warning("event handler timed out; killing it", metadata: ["script": "\(invocation.script)"])
            process.terminate()
            _ = exited.wait(timeout: .now() + 2)
        }
        output.fileHandleForReading.readabilityHandler = nil
        let rest = (try? output.fileHandleForReading.readToEnd()) ?? nil
        if let rest { collected.append(rest) }
        if process.terminationStatus != 0 {
            logger.warning("event handler exited non-zero", metadata: ["script": "\(invocation.script)", "status": "\(process.terminationStatus)"])
        }
        return collected.bytes
    }
}

private final class OutputBuffer: @unchecked Sendable {
    // Guarded by `lock` (filled from the pipe's reader thread).
    private let lock = NSLock()
    private var data: [UInt8] = []
    private let limit: Int
    init(limit: Int) { self.limit = limit }
    func append(_ chunk: Data) {
        lock.withLock {
            let room = max(0, limit - data.count)
            data.append(contentsOf: chunk.prefix(room))
        }
    }
    var bytes: [UInt8] { lock.withLock { data } }
}
