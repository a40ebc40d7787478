// Log lines in Consul's format, so operators' eyes and grep patterns carry over:
//   2026-11-24T04:28:56.123Z [INFO]  agent.http: Started HTTP server: address=127.0.0.1:8500
import Foundation
import Glibc
import Logging

public struct ConsulLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public static func level(named name: String) -> Logger.Level {
        switch name.lowercased() {
        case "trace": return .trace
        case "debug": return .debug
        case "warn", "warning": return .warning
        case "error", "err": return .error
        default: return .info
        }
    }

    public func log(event: LogEvent) {
        write(level: event.level, message: event.message, metadata: event.metadata)
    }

    private func write(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?) {
        var line = Self.timestamp()
        line += " "
        line += Self.levelTag(level)
        line += " "
        line += label
        line += ": "
        line += message.description
        var merged = metadata
        if let explicit { merged.merge(explicit) { $1 } }
        if !merged.isEmpty {
            line += ":"
            for key in merged.keys.sorted() {
                line += " \(key)=\(merged[key]!)"
            }
        }
        line += "\n"
        // One write(2) per line keeps lines whole when several threads log at once.
        line.utf8CString.withUnsafeBufferPointer { buffer in
            _ = Glibc.write(STDOUT_FILENO, buffer.baseAddress, buffer.count - 1)
        }
    }

    static func levelTag(_ level: Logger.Level) -> String {
        switch level {
        case .trace: return "[TRACE]"
        case .debug: return "[DEBUG]"
        case .info, .notice: return "[INFO] "
        case .warning: return "[WARN] "
        case .error, .critical: return "[ERROR]"
        }
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                      Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(now.tv_nsec / 1_000_000))
    }
}
