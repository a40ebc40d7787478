// The closed-loop load: C keep-alive connections spread over a few libuv loops (the project's own
// EventLoop, one thread each), each connection sending its next request when the answer arrives.
// One thread per connection would put 64 client threads on 2 cores beside the servers; here one or
// two client threads drive them all. Latency is measured from the request's write to the parsed
// answer with the monotonic clock, into one HDR histogram per loop (merged at the end).
import Dispatch
import EventLoop
import Foundation
import Histogram

public struct Target: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) { self.host = host; self.port = port }
    public var description: String { "\(host):\(port)" }
}

public struct LoadPlan: Sendable {
    public var system: System
    public var workload: Workload
    public var connections: Int
    public var durationSeconds: Double
    /// 0: no cap.
    public var requestCap: Int
    public var valueSize: Int
    public var consistency: Consistency
    public var readRatio: Double
    public var keys: Int
    public var targets: [Target]
    /// Connection i starts on targets[i % targets.count]; a failed connection moves to the next target.
    public var clientLoops: Int
    /// Unique per run, so PUTs of one run never overwrite another's keys.
    public var putPrefix: String
    /// Preload: PUT keys `<getPrefix>/0..<keys` exactly once each, then stop (requestCap/duration ignored).
    public var preload: Bool = false
    /// Keep (sent, answered) times of successful writes, for the failover scenario.
    public var recordTimeline: Bool = false

    public init(system: System, workload: Workload, connections: Int, durationSeconds: Double, requestCap: Int,
                valueSize: Int, consistency: Consistency, readRatio: Double, keys: Int, targets: [Target],
                clientLoops: Int, putPrefix: String) {
        self.system = system
        self.workload = workload
        self.connections = connections
        self.durationSeconds = durationSeconds
        self.requestCap = requestCap
        self.valueSize = valueSize
        self.consistency = consistency
        self.readRatio = readRatio
        self.keys = keys
        self.targets = targets
        self.clientLoops = clientLoops
        self.putPrefix = putPrefix
    }

    public static let getPrefix = "bench/get"
    /// CAS contends on the preloaded keys.
    public static let casPrefix = "bench/get"
    /// The service the health workload queries (instances registered before the run).
    public static let healthService = "bench-health"
}

public struct LoadOutcome: Sendable {
    public var histogram: LatencyHistogram
    public var operations: Int
    public var errors: [String: Int]
    public var casConflicts: Int
    public var startNanos: UInt64
    public var endNanos: UInt64
    /// (sent, answered) monotonic nanoseconds of successful writes, when recorded.
    public var writeTimeline: [(UInt64, UInt64)]
    public var elapsedSeconds: Double { Double(endNanos &- startNanos) / 1e9 }
}

public func monotonicNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

public enum LoadDriver {
    /// Runs `plan` to completion on freshly started loops and returns the merged figures.
    /// Bounded: the duration, then at most `drainSeconds` for answers still in flight.
    public static func run(_ plan: LoadPlan, drainSeconds: Double = 10) throws -> LoadOutcome {
        precondition(!plan.targets.isEmpty && plan.connections > 0)
        let loopCount = max(1, min(plan.clientLoops, plan.connections))
        let group = DispatchGroup()
        var workers: [LoadWorker] = []
        var loops: [Loop] = []
        let start = monotonicNanos()
        let deadline = start + UInt64(plan.durationSeconds * 1e9)
        for index in 0..<loopCount {
            let loop = try Loop(name: "bench-\(index)")
            let connectionIDs = Array(stride(from: index, to: plan.connections, by: loopCount))
            var cap = 0
            if plan.requestCap > 0 {
                // Split the cap so the loops together send exactly requestCap requests.
                cap = plan.requestCap / loopCount + (index < plan.requestCap % loopCount ? 1 : 0)
            }
            let worker = LoadWorker(loop: loop, plan: plan, loopIndex: index, loopCount: loopCount,
                                    connectionIDs: connectionIDs, requestCap: cap, deadline: deadline, group: group)
            group.enter()
            loops.append(loop)
            workers.append(worker)
            loop.start()
        }
        for worker in workers {
            worker.loop.execute { worker.begin() }
        }
        let limit = DispatchTime.now() + plan.durationSeconds + drainSeconds
        if group.wait(timeout: limit) == .timedOut {
            for worker in workers {
                worker.loop.execute { worker.abandon() }
            }
            _ = group.wait(timeout: .now() + 5)
        }
        for loop in loops { loop.shutdown() }  // joins the threads: the workers' state is ours from here
        var histogram = makeLatencyHistogram()
        var outcome = LoadOutcome(histogram: histogram, operations: 0, errors: [:], casConflicts: 0,
                                  startNanos: start, endNanos: start, writeTimeline: [])
        for worker in workers {
            histogram.add(worker.histogram)
            outcome.operations += worker.operations
            outcome.casConflicts += worker.casConflicts
            for (kind, count) in worker.errors { outcome.errors[kind, default: 0] += count }
            outcome.endNanos = max(outcome.endNanos, worker.lastAnswerNanos)
            outcome.writeTimeline += worker.writeTimeline
        }
        outcome.histogram = histogram
        if outcome.endNanos == start { outcome.endNanos = monotonicNanos() }
        return outcome
    }
}

/// Confinement: everything below is touched on `loop`'s thread only, from `begin()` until the
/// loop is shut down; `LoadDriver.run` reads the figures after joining the loop thread.
final class LoadWorker: @unchecked Sendable {
    let loop: Loop
    let plan: LoadPlan
    private let loopIndex: Int
    private let loopCount: Int
    private let connectionIDs: [Int]
    private let requestCap: Int
    private let deadline: UInt64
    private let group: DispatchGroup
    private let value: [UInt8]

    var histogram = makeLatencyHistogram()
    var operations = 0
    var casConflicts = 0
    var errors: [String: Int] = [:]
    var lastAnswerNanos: UInt64 = 0
    var writeTimeline: [(UInt64, UInt64)] = []

    private var connections: [BenchConnection] = []
    private var requestsStarted = 0
    private var nextPreloadKey: Int
    private var finished = false

    init(loop: Loop, plan: LoadPlan, loopIndex: Int, loopCount: Int, connectionIDs: [Int], requestCap: Int,
         deadline: UInt64, group: DispatchGroup) {
        self.loop = loop
        self.plan = plan
        self.loopIndex = loopIndex
        self.loopCount = loopCount
        self.connectionIDs = connectionIDs
        self.requestCap = requestCap
        self.deadline = deadline
        self.group = group
        self.value = RequestEncoding.value(size: plan.valueSize)
        self.nextPreloadKey = loopIndex
    }

    func begin() {
        for id in connectionIDs {
            let connection = BenchConnection(worker: self, id: id, targetIndex: id % plan.targets.count)
            connections.append(connection)
            connection.connect()
        }
        checkFinished()
    }

    /// The drain limit passed: close whatever is still waiting.
    func abandon() {
        for connection in connections {
            if connection.inFlight != nil { record(error: "unanswered at end") }
            connection.stop()
        }
        checkFinished()
    }

    // MARK: Per-request decisions

    /// The next request for `connection`, or nil when the run is over for it.
    func nextRequest(for connection: BenchConnection) -> PendingRequest? {
        let now = monotonicNanos()
        if plan.preload {
            guard nextPreloadKey < plan.keys else { return nil }
            let key = "\(LoadPlan.getPrefix)/\(nextPreloadKey)"
            nextPreloadKey += loopCount
            return PendingRequest(kind: .write, bytes: encodePut(key: key, connection: connection), sentNanos: now)
        }
        guard now < deadline else { return nil }
        if requestCap > 0 {
            guard requestsStarted < requestCap else { return nil }
        }
        requestsStarted += 1
        connection.sequence += 1
        let host = connection.hostHeader
        switch plan.workload {
        case .put, .import:
            let key = "\(plan.putPrefix)/\(connection.id)/\(connection.sequence)"
            return PendingRequest(kind: .write, bytes: encodePut(key: key, connection: connection), sentNanos: now)
        case .get:
            return PendingRequest(kind: .read, bytes: encodeGet(key: readKey(connection), host: host), sentNanos: now)
        case .mixed:
            if connection.random() < plan.readRatio {
                return PendingRequest(kind: .read, bytes: encodeGet(key: readKey(connection), host: host), sentNanos: now)
            }
            let key = "\(plan.putPrefix)/\(connection.id)/\(connection.sequence)"
            return PendingRequest(kind: .write, bytes: encodePut(key: key, connection: connection), sentNanos: now)
        case .catalog:
            // A distinct node with one service per request: the catalog grows as KV does under put.
            let node = "\(plan.putPrefix.replacingOccurrences(of: "/", with: "-"))-\(connection.id)-\(connection.sequence)"
            return PendingRequest(kind: .write, bytes: RequestEncoding.catalogRegister(node: node, service: "svc-\(connection.id)",
                                                                                       host: host), sentNanos: now)
        case .health:
            return PendingRequest(kind: .read, bytes: RequestEncoding.healthService(LoadPlan.healthService,
                                                                                    consistency: plan.consistency, host: host),
                                  sentNanos: now)
        case .cas:
            let key = "\(LoadPlan.casPrefix)/\(Int(connection.random() * Double(plan.keys)) % max(1, plan.keys))"
            connection.casKey = key
            return PendingRequest(kind: .casRead, bytes: RequestEncoding.conclaveGet(key: key, consistency: .default, host: host),
                                  sentNanos: now)
        }
    }

    private func readKey(_ connection: BenchConnection) -> String {
        // A different walk per connection over the preloaded keys.
        let index = (connection.id &* 7919 &+ connection.sequence) % max(1, plan.keys)
        return "\(LoadPlan.getPrefix)/\(index)"
    }

    private func encodePut(key: String, connection: BenchConnection) -> [UInt8] {
        switch plan.system {
        case .conclave: RequestEncoding.conclavePut(key: key, value: value, host: connection.hostHeader)
        case .etcd: RequestEncoding.etcdPut(key: key, value: value, host: connection.hostHeader)
        }
    }

    private func encodeGet(key: String, host: String) -> [UInt8] {
        switch plan.system {
        case .conclave: RequestEncoding.conclaveGet(key: key, consistency: plan.consistency, host: host)
        case .etcd: RequestEncoding.etcdRange(key: key, consistency: plan.consistency, host: host)
        }
    }

    /// An answer to `request` arrived. Returns the follow-up request of the same operation (the CAS
    /// write after its read), or nil when the operation is complete.
    func answered(_ request: PendingRequest, response: ParsedResponse, connection: BenchConnection) -> PendingRequest? {
        let now = monotonicNanos()
        lastAnswerNanos = max(lastAnswerNanos, now)
        let operationStart = connection.operationStart ?? request.sentNanos
        switch request.kind {
        case .casRead:
            guard response.status == 200 || response.status == 404, let key = connection.casKey else {
                record(error: statusError(response))
                connection.operationStart = nil
                return nil
            }
            let index = response.status == 404 ? 0 : (RequestEncoding.modifyIndex(in: response.body) ?? 0)
            connection.operationStart = operationStart
            // A value unchanged from the stored one is skipped by the state store (as in Consul) and
            // would answer true without a new ModifyIndex: stamp each write so every CAS changes the key.
            let stamped = RequestEncoding.stamped(value, "\(connection.id)-\(connection.sequence)-")
            return PendingRequest(kind: .casWrite,
                                  bytes: RequestEncoding.conclavePut(key: key, value: stamped, cas: index, host: connection.hostHeader),
                                  sentNanos: now)
        case .casWrite:
            connection.operationStart = nil
            guard response.status == 200 else {
                record(error: statusError(response))
                return nil
            }
            if response.body != Array("true".utf8) { casConflicts += 1 }
            complete(start: operationStart, end: now)
            return nil
        case .read:
            // A missing key is an error here: every read targets a preloaded key. etcd answers a
            // range of a missing key with 200 and no "kvs".
            guard response.status == 200 else {
                record(error: statusError(response))
                return nil
            }
            if plan.system == .etcd && !RequestEncoding.contains(response.body, kvsField) {
                record(error: "range without kvs")
                return nil
            }
            complete(start: request.sentNanos, end: now)
            return nil
        case .write:
            guard response.status == 200 else {
                record(error: statusError(response))
                return nil
            }
            if plan.system == .conclave && response.body != Array("true".utf8) {
                record(error: "PUT answered \(String(decoding: response.body.prefix(40), as: UTF8.self))")
                return nil
            }
            complete(start: request.sentNanos, end: now)
            if plan.recordTimeline { writeTimeline.append((request.sentNanos, now)) }
            return nil
        }
    }

    /// "status 500 No cluster leader": the code and the start of a short text answer, so different
    /// causes of one status are told apart (bounded: 40 bytes, JSON bodies left out).
    private func statusError(_ response: ParsedResponse) -> String {
        let text = String(decoding: response.body.prefix(40), as: UTF8.self)
        guard !text.isEmpty, !text.hasPrefix("{"), !text.hasPrefix("["),
              text.unicodeScalars.allSatisfy({ $0.value >= 32 && $0.value < 127 }) else { return "status \(response.status)" }
        return "status \(response.status) \(text)"
    }

    private func complete(start: UInt64, end: UInt64) {
        operations += 1
        _ = histogram.record(max(1, (end &- start) / 1000))
    }

    func record(error kind: String) {
        errors[kind, default: 0] += 1
    }

    /// Whether a failed connection should come back: not once the run is over.
    var wantsMore: Bool {
        if finished { return false }
        if plan.preload { return nextPreloadKey < plan.keys }
        if requestCap > 0 && requestsStarted >= requestCap { return false }
        return monotonicNanos() < deadline
    }

    func checkFinished() {
        guard !finished, connections.allSatisfy({ $0.isDone }) else { return }
        finished = true
        group.leave()
    }
}

private let kvsField = Array("\"kvs\"".utf8)

struct PendingRequest {
    enum Kind { case read, write, casRead, casWrite }
    var kind: Kind
    var bytes: [UInt8]
    var sentNanos: UInt64
}

/// One keep-alive connection of a worker; loop-confined like it.
final class BenchConnection {
    unowned let worker: LoadWorker
    let id: Int
    private var targetIndex: Int
    private var tcp: TCPConnection?
    private var parser = ResponseParser()
    private(set) var inFlight: PendingRequest?
    private var stopped = false
    private var reconnectTimer: LoopTimer?
    var sequence = 0
    var casKey: String?
    var operationStart: UInt64?
    private var rng: UInt64

    init(worker: LoadWorker, id: Int, targetIndex: Int) {
        self.worker = worker
        self.id = id
        self.targetIndex = targetIndex
        rng = 0x9E37_79B9_7F4A_7C15 &* UInt64(id + 1)
    }

    var target: Target { worker.plan.targets[targetIndex % worker.plan.targets.count] }
    var hostHeader: String { target.description }
    /// Stopped, with nothing in flight and no reconnect pending.
    var isDone: Bool { stopped }

    /// Uniform in [0, 1) from xorshift64*: deterministic per connection, no shared generator.
    func random() -> Double {
        rng ^= rng >> 12
        rng ^= rng << 25
        rng ^= rng >> 27
        return Double((rng &* 0x2545_F491_4F6C_DD1D) >> 11) / Double(1 << 53)
    }

    func connect() {
        let target = self.target
        TCPConnection.connect(on: worker.loop, host: target.host, port: target.port) { [self] result in
            switch result {
            case .success(let connection):
                tcp = connection
                parser = ResponseParser()
                connection.setNoDelay(true)
                connection.onRead = { [unowned self] bytes in received(bytes) }
                connection.onClose = { [unowned self] error in closed(error) }
                connection.startReading()
                sendNext(worker.nextRequest(for: self))
            case .failure(let error):
                worker.record(error: "connect: \(error.name)")
                retryLater()
            }
        }
    }

    private func send(_ request: PendingRequest) {
        inFlight = request
        tcp?.write(request.bytes)
    }

    private func sendNext(_ request: PendingRequest?) {
        if let request {
            send(request)
        } else {
            stop()
        }
    }

    private func received(_ bytes: [UInt8]) {
        let responses: [ParsedResponse]
        do {
            responses = try parser.feed(bytes)
        } catch {
            worker.record(error: "bad response: \(error.description)")
            inFlight = nil
            tcp?.closeNow()
            return
        }
        for response in responses where response.status >= 200 {
            guard let request = inFlight else {
                worker.record(error: "unexpected response")
                continue
            }
            inFlight = nil
            let followUp = worker.answered(request, response: response, connection: self)
            if !response.keepAlive {
                // The server ends the connection: reconnect (not an error), resume with a fresh operation.
                operationStart = nil
                tcp?.close()
                return
            }
            if let followUp {
                send(followUp)
            } else {
                sendNext(worker.nextRequest(for: self))
            }
        }
    }

    private func closed(_ error: LoopError?) {
        tcp = nil
        if stopped { return }
        if inFlight != nil || error != nil {
            worker.record(error: "connection: \(error.map { $0.name } ?? "closed by server mid-request")")
        }
        inFlight = nil
        operationStart = nil
        targetIndex += 1  // the next server, when there are several (the failed one may be gone)
        retryLater(immediately: error == nil)
    }

    private func retryLater(immediately: Bool = false) {
        guard worker.wantsMore else {
            stop()
            return
        }
        let timer = reconnectTimer ?? LoopTimer(loop: worker.loop)
        reconnectTimer = timer
        timer.start(afterMilliseconds: immediately ? 0 : 50) { [self] in connect() }
    }

    func stop() {
        guard !stopped else { return }
        stopped = true
        reconnectTimer?.close()
        reconnectTimer = nil
        if let tcp {
            tcp.onClose = nil
            tcp.onRead = nil
            tcp.close()
        }
        tcp = nil
        worker.checkFinished()
    }
}
