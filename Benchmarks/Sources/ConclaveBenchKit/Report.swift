// A run's figures: throughput, latency percentiles from an HDR histogram (microseconds, 3
// significant digits), errors by kind; rendered as a table row and as one JSON object per run.
import Foundation
import Histogram

/// Latency in microseconds, as recorded by the driver.
public typealias LatencyHistogram = Histogram<UInt64>

public func makeLatencyHistogram() -> LatencyHistogram {
    // 1 µs to 60 s at 3 significant digits: about 200 KB, fixed (no resizing during a run).
    LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
}

public struct LatencySummary: Codable, Sendable, Equatable {
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    public init(p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double) {
        self.p50 = p50; self.p90 = p90; self.p99 = p99; self.p999 = p999; self.max = max; self.mean = mean
    }

    /// Milliseconds from a histogram of microseconds; zeros when it is empty.
    public init(histogram: LatencyHistogram) {
        guard histogram.totalCount > 0 else {
            self.init(p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0)
            return
        }
        func ms(_ us: UInt64) -> Double { Double(us) / 1000 }
        self.init(p50: ms(histogram.valueAtPercentile(50)), p90: ms(histogram.valueAtPercentile(90)),
                  p99: ms(histogram.valueAtPercentile(99)), p999: ms(histogram.valueAtPercentile(99.9)),
                  max: ms(histogram.max), mean: histogram.mean / 1000)
    }
}

public struct RunResult: Codable, Sendable {
    public var settings: RunSettings
    /// ISO 8601, when the measurement started.
    public var startedAt: String
    public var elapsedSeconds: Double
    /// Operations answered with the expected status (a CAS that lost its race counts here too).
    public var operations: Int
    public var opsPerSecond: Double
    /// Milliseconds.
    public var latencyMs: LatencySummary
    /// "status 500", "status 429", "connection: ...", "cas conflict" ...: count.
    public var errors: [String: Int]
    /// Workload-specific extras (e.g. "casConflicts", "importedKeys").
    public var extra: [String: Double]

    public init(settings: RunSettings, startedAt: String, elapsedSeconds: Double, operations: Int,
                latencyMs: LatencySummary, errors: [String: Int], extra: [String: Double] = [:]) {
        self.settings = settings
        self.startedAt = startedAt
        self.elapsedSeconds = elapsedSeconds
        self.operations = operations
        self.opsPerSecond = elapsedSeconds > 0 ? Double(operations) / elapsedSeconds : 0
        self.latencyMs = latencyMs
        self.errors = errors
        self.extra = extra
    }

    public var errorCount: Int { errors.values.reduce(0, +) }

    /// One line of JSON with sorted keys, for appending to a results file.
    public func jsonLine() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(self)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

public enum Table {
    public static let header = ["system", "servers", "workload", "conns", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"]

    public static func row(_ r: RunResult) -> [String] {
        var workload = r.settings.workload.rawValue
        if r.settings.workload == .get || r.settings.workload == .mixed { workload += "/\(r.settings.consistency.rawValue)" }
        let l = r.latencyMs
        return [r.settings.system.rawValue, String(r.settings.servers), workload, String(r.settings.connections),
                formatRate(r.opsPerSecond), ms(l.p50), ms(l.p90), ms(l.p99), ms(l.p999), ms(l.max), errorText(r.errors)]
    }

    /// A Markdown-compatible table (pipes), columns padded so it also reads in a terminal.
    public static func render(_ rows: [[String]], header: [String] = Table.header) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            "| " + header.indices.map { i in
                let cell = cells.indices.contains(i) ? cells[i] : ""
                return cell + String(repeating: " ", count: widths[i] - cell.count)
            }.joined(separator: " | ") + " |"
        }
        let rule = "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|"
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }

    /// Conclave/etcd per metric: ops/s (higher is better for Conclave) and latencies (lower is better).
    public static let ratioHeader = ["servers", "workload", "conns", "ops/s C/E", "p50 C/E", "p99 C/E", "p99.9 C/E"]

    public static func ratioRow(conclave c: RunResult, etcd e: RunResult) -> [String] {
        func ratio(_ a: Double, _ b: Double) -> String { b > 0 ? String(format: "%.2fx", a / b) : "-" }
        var workload = c.settings.workload.rawValue
        if c.settings.workload == .get || c.settings.workload == .mixed { workload += "/\(c.settings.consistency.rawValue)" }
        return [String(c.settings.servers), workload, String(c.settings.connections),
                ratio(c.opsPerSecond, e.opsPerSecond), ratio(c.latencyMs.p50, e.latencyMs.p50),
                ratio(c.latencyMs.p99, e.latencyMs.p99), ratio(c.latencyMs.p999, e.latencyMs.p999)]
    }

    static func ms(_ v: Double) -> String {
        v >= 100 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v)
    }

    static func formatRate(_ v: Double) -> String {
        String(format: "%.0f", v.rounded())
    }

    static func errorText(_ errors: [String: Int]) -> String {
        if errors.isEmpty { return "0" }
        return errors.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
    }
}

public func iso8601Now() -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: Date())
}
