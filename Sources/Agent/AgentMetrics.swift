// The agent's in-memory swift-metrics backend, and what /v1/agent/metrics serves from it:
// Consul's JSON summary (go-metrics' inmem sink shape) or the Prometheus text format.
// Values are cumulative since the registry was made (Consul's inmem sink keeps 10 s
// intervals; a scraper that wants rates takes differences, as with Prometheus).
import Foundation
import HTTP
import Metrics

/// Injectable: an agent records into the registry it is given (tests give each agent its
/// own); the `conclave` process uses `shared` and bootstraps MetricsSystem with it.
///
/// Cost of a record: one lock per handler. Each handler's lock is taken by the one thread that
/// records it (the loop thread, or the disk thread for the disk metrics) and, rarely, by a
/// scrape, so it is uncontended: an atomic exchange in and out, cheaper than the clock read
/// beside most records; a summary updates five fields together, which atomics would not make
/// cheaper. The registry's own lock is taken only when a metric is first made or scraped.
public final class MetricsRegistry: MetricsFactory, @unchecked Sendable {
    public static let shared = MetricsRegistry()

    private let lock = NSLock()
    private var counters: [Key: CounterBox] = [:]
    private var gauges: [Key: GaugeBox] = [:]
    private var recorders: [Key: SummaryBox] = [:]
    private var timers: [Key: SummaryBox] = [:]
    let createdAt = Date()

    public init() {}

    /// Makes `shared` the process-wide backend, once. Tolerates a MetricsSystem that
    /// something else bootstrapped first: the agent records into its own registry anyway.
    public static func bootstrapProcessWide() { _ = bootstrapped }
    private static let bootstrapped: Bool = {
        guard MetricsSystem.factory is NOOPMetricsHandler else { return false }
        MetricsSystem.bootstrap(shared)
        return true
    }()

    struct Key: Hashable {
        var label: String
        var dimensions: [String]  // "k=v", sorted
        init(_ label: String, _ dimensions: [(String, String)]) {
            self.label = label
            self.dimensions = dimensions.map { "\($0.0)=\($0.1)" }.sorted()
        }
        var labels: [String: String] {
            var out: [String: String] = [:]
            for pair in dimensions {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                out[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
            }
            return out
        }
    }

    // MARK: MetricsFactory

    public func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler {
        lock.withLock {
            let key = Key(label, dimensions)
            if let box = counters[key] { return box }
            let box = CounterBox()
            counters[key] = box
            return box
        }
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        lock.withLock {
            let key = Key(label, dimensions)
            if aggregate {
                if let box = recorders[key] { return box }
                let box = SummaryBox(scale: 1)
                recorders[key] = box
                return box
            }
            if let box = gauges[key] { return box }
            let box = GaugeBox()
            gauges[key] = box
            return box
        }
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler {
        lock.withLock {
            let key = Key(label, dimensions)
            if let box = timers[key] { return box }
            // Consul reports timers in milliseconds.
            let box = SummaryBox(scale: 1e-6)
            timers[key] = box
            return box
        }
    }

    // Values outlive their handles: a scrape still shows what a closed replicator recorded.
    public func destroyCounter(_ handler: CounterHandler) {}
    public func destroyRecorder(_ handler: RecorderHandler) {}
    public func destroyTimer(_ handler: TimerHandler) {}

    // MARK: Reading

    struct Sample {
        var name: String
        var labels: [String: String]
        var summary: Summary
    }

    struct Snapshot {
        var gauges: [(name: String, labels: [String: String], value: Double)]
        var counters: [Sample]
        var samples: [Sample]
        var uptimeSeconds: Double
    }

    func snapshot() -> Snapshot {
        lock.withLock {
            func sorted<V>(_ d: [Key: V]) -> [(Key, V)] {
                d.sorted { ($0.key.label, $0.key.dimensions.joined(separator: ",")) < ($1.key.label, $1.key.dimensions.joined(separator: ",")) }
            }
            return Snapshot(
                gauges: sorted(gauges).map { ($0.0.label, $0.0.labels, $0.1.value) },
                counters: sorted(counters).map { Sample(name: $0.0.label, labels: $0.0.labels, summary: $0.1.summary) },
                samples: (sorted(timers) + sorted(recorders)).map { Sample(name: $0.0.label, labels: $0.0.labels, summary: $0.1.summary) },
                uptimeSeconds: max(Date().timeIntervalSince(createdAt), 0.001))
        }
    }

    /// Consul's `/v1/agent/metrics` JSON.
    func consulJSON(now: Date = Date()) -> [String: Any] {
        let snap = snapshot()
        func sampled(_ sample: Sample) -> [String: Any] {
            let s = sample.summary
            return ["Name": sample.name, "Count": s.count, "Rate": s.sum / snap.uptimeSeconds, "Sum": s.sum,
                    "Min": s.count == 0 ? 0 : s.min, "Max": s.count == 0 ? 0 : s.max, "Mean": s.mean,
                    "Stddev": s.stddev, "Labels": sample.labels]
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return [
            "Timestamp": formatter.string(from: now) + " +0000 UTC",
            "Gauges": snap.gauges.map { ["Name": $0.name, "Value": $0.value, "Labels": $0.labels] as [String: Any] },
            "Points": [Any](),
            "Counters": snap.counters.map(sampled),
            "Samples": snap.samples.map(sampled),
        ]
    }

    /// The Prometheus text exposition format (0.0.4): counters as counters, gauges as gauges,
    /// timers (ms) and recorders as summaries with `_sum` and `_count`.
    func prometheusText() -> String {
        let snap = snapshot()
        var out = ""
        var typed: Set<String> = []
        func header(_ name: String, _ type: String) {
            guard typed.insert(name).inserted else { return }
            out += "# HELP \(name) \(name)\n# TYPE \(name) \(type)\n"
        }
        for gauge in snap.gauges {
            let name = Self.prometheusName(gauge.name)
            header(name, "gauge")
            out += "\(name)\(Self.prometheusLabels(gauge.labels)) \(Self.number(gauge.value))\n"
        }
        for counter in snap.counters {
            let name = Self.prometheusName(counter.name)
            header(name, "counter")
            out += "\(name)\(Self.prometheusLabels(counter.labels)) \(Self.number(counter.summary.sum))\n"
        }
        for sample in snap.samples {
            let name = Self.prometheusName(sample.name)
            header(name, "summary")
            let labels = Self.prometheusLabels(sample.labels)
            out += "\(name)_sum\(labels) \(Self.number(sample.summary.sum))\n"
            out += "\(name)_count\(labels) \(sample.summary.count)\n"
        }
        return out
    }

    /// consul.raft.commitTime → consul_raft_commitTime (Prometheus allows [a-zA-Z_:][a-zA-Z0-9_:]*).
    static func prometheusName(_ name: String) -> String {
        var out = ""
        for (i, c) in name.unicodeScalars.enumerated() {
            let ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || c == "_" || c == ":" || (i > 0 && c >= "0" && c <= "9")
            out.unicodeScalars.append(ok ? c : "_")
        }
        return out
    }

    static func prometheusLabels(_ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return "" }
        let pairs = labels.sorted { $0.key < $1.key }.map { key, value in
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(prometheusName(key))=\"\(escaped)\""
        }
        return "{" + pairs.joined(separator: ",") + "}"
    }

    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// Count, sum, min, max and the sum of squares (for the standard deviation).
struct Summary {
    var count: Int64 = 0
    var sum: Double = 0
    var sumOfSquares: Double = 0
    var min: Double = .infinity
    var max: Double = -.infinity

    mutating func add(_ value: Double) {
        count += 1
        sum += value
        sumOfSquares += value * value
        if value < min { min = value }
        if value > max { max = value }
    }

    var mean: Double { count == 0 ? 0 : sum / Double(count) }
    /// Sample standard deviation, as go-metrics reports it.
    var stddev: Double {
        guard count > 1 else { return 0 }
        let n = Double(count)
        return (Swift.max(0, sumOfSquares - sum * sum / n) / (n - 1)).squareRoot()
    }
}

private final class CounterBox: CounterHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var value = Summary()
    func increment(by amount: Int64) { lock.withLock { value.add(Double(amount)) } }
    func reset() { lock.withLock { value = Summary() } }
    var summary: Summary { lock.withLock { value } }
}

private final class GaugeBox: RecorderHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Double = 0
    func record(_ value: Int64) { lock.withLock { current = Double(value) } }
    func record(_ value: Double) { lock.withLock { current = value } }
    var value: Double { lock.withLock { current } }
}

/// A histogram or timer; `scale` converts what is recorded (ns for timers) to what is shown.
private final class SummaryBox: RecorderHandler, TimerHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var value = Summary()
    let scale: Double
    init(scale: Double) { self.scale = scale }
    func record(_ value: Int64) { record(Double(value)) }
    func record(_ value: Double) { let scaled = value * scale; lock.withLock { self.value.add(scaled) } }
    func recordNanoseconds(_ duration: Int64) { record(Double(duration)) }
    var summary: Summary { lock.withLock { value } }
}

extension HTTPAPI {
    /// GET /v1/agent/metrics: Consul's JSON summary, or `?format=prometheus`.
    func handleMetrics(_ responder: HTTPResponder) {
        let registry = metrics ?? MetricsRegistry()
        if responder.request.query.first("format") == "prometheus" {
            var response = HTTPResponse(status: 200, body: Array(registry.prometheusText().utf8))
            response.headers.add("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            responder.respond(response)
        } else {
            responder.respond(.json(status: 200, jsonBytes(registry.consulJSON())))
        }
    }
}
