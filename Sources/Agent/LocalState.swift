// The agent's local state: the services and checks registered on this agent, the live status
// of each check, and the monitors that run them. The source of truth anti-entropy syncs to the
// catalog. Loop-confined; one owner (the agent).
import EventLoop
import Foundation
import Logging

/// A check's current state as /v1/agent/checks shows it.
struct CheckState {
    var definition: CheckDefinition
    var status: CheckStatus
    var output: String
    /// Loop-clock time the check became critical (for DeregisterCriticalServiceAfter); nil otherwise.
    var criticalSince: UInt64?
}

/// Where a definition came from: API registrations persist in the data dir; config-file
/// definitions are reloaded from the config at each start, as Consul does.
enum DefinitionSource: String { case api, config }

final class LocalState {
    let loop: Loop
    let nodeName: String
    let datacenter: String
    let enableScriptChecks: Bool
    private let logger = Logger(label: "agent.local")

    private(set) var services: [String: ServiceDefinition] = [:]
    private(set) var checks: [String: CheckState] = [:]
    private(set) var sources: [String: DefinitionSource] = [:]  // "service:<id>" / "check:<id>"
    private var monitors: [String: CheckMonitor] = [:]
    private var reaper: LoopTimer?

    /// Called after every change of a service or a check's definition (`persist` true when the
    /// change came from the API): the persistence and anti-entropy hooks.
    var onServiceChanged: ((_ id: String, _ service: ServiceDefinition?, _ source: DefinitionSource) -> Void)?
    var onCheckChanged: ((_ id: String, _ check: CheckState?, _ source: DefinitionSource) -> Void)?
    /// Status or output of a check changed (not its definition).
    var onCheckStatusChanged: ((_ id: String, _ statusChanged: Bool) -> Void)?

    /// How often critical checks are examined for DeregisterCriticalServiceAfter (Consul: 30 s).
    var reapIntervalMilliseconds: UInt64 = 30_000
    /// Consul runs interval checks at least 1 s apart (shorter intervals are raised, with a warning).
    var minimumCheckIntervalMilliseconds: UInt64 = 1_000
    /// Consul's minimum DeregisterCriticalServiceAfter is 1 minute.
    var minimumDeregisterCriticalMilliseconds: UInt64 = 60_000

    init(loop: Loop, nodeName: String, datacenter: String, enableScriptChecks: Bool) {
        self.loop = loop
        self.nodeName = nodeName
        self.datacenter = datacenter
        self.enableScriptChecks = enableScriptChecks
    }

    // MARK: Services

    /// Adds or replaces a service with its checks. `replaceExistingChecks`: the service's checks
    /// not in `checks` are removed (Consul's ?replace-existing-checks).
    func addService(_ service: ServiceDefinition, checks newChecks: [CheckDefinition], source: DefinitionSource,
                    replaceExistingChecks: Bool = false) throws(DefinitionError) {
        for check in newChecks { try validateRunnable(check, ownService: service.id) }
        services[service.id] = service
        sources["service:\(service.id)"] = source
        onServiceChanged?(service.id, service, source)
        if replaceExistingChecks {
            let keep = Set(newChecks.map(\.id))
            for (id, state) in checks where state.definition.serviceID == service.id && !keep.contains(id) {
                removeCheck(id)
            }
        }
        for check in newChecks { try addCheck(check, source: source) }
    }

    @discardableResult
    func removeService(_ id: String) -> Bool {
        guard services.removeValue(forKey: id) != nil else { return false }
        let source = sources.removeValue(forKey: "service:\(id)") ?? .api
        for (checkID, state) in checks where state.definition.serviceID == id { removeCheck(checkID) }
        onServiceChanged?(id, nil, source)
        return true
    }

    // MARK: Checks

    private func validateRunnable(_ check: CheckDefinition, ownService: String? = nil) throws(DefinitionError) {
        if case .script = check.kind, !enableScriptChecks {
            throw DefinitionError("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true")
        }
        if !check.serviceID.isEmpty && check.serviceID != ownService && services[check.serviceID] == nil {
            throw DefinitionError("ServiceID \"\(check.serviceID)\" does not exist")
        }
    }

    /// Adds or replaces a check and starts its monitor. A replaced check keeps its status.
    func addCheck(_ check: CheckDefinition, source: DefinitionSource, status: CheckStatus? = nil, output: String? = nil) throws(DefinitionError) {
        try validateRunnable(check)
        var check = check
        if check.intervalMilliseconds > 0 && check.intervalMilliseconds < minimumCheckIntervalMilliseconds {
            logger.warning("check has too low an interval; raised", metadata: ["check": "\(check.id)", "interval": "\(minimumCheckIntervalMilliseconds)ms"])
            check.intervalMilliseconds = minimumCheckIntervalMilliseconds
        }
        if check.deregisterCriticalServiceAfterMilliseconds > 0 && check.deregisterCriticalServiceAfterMilliseconds < minimumDeregisterCriticalMilliseconds {
            check.deregisterCriticalServiceAfterMilliseconds = minimumDeregisterCriticalMilliseconds
        }
        monitors.removeValue(forKey: check.id)?.stop()
        let previous = checks[check.id]
        let initialStatus = status ?? (previous?.definition == check ? previous!.status : check.initialStatus)
        var state = CheckState(definition: check, status: initialStatus,
                               output: output ?? previous?.output ?? check.initialOutput, criticalSince: nil)
        if initialStatus == .critical { state.criticalSince = previous?.criticalSince ?? loop.nowMilliseconds }
        checks[check.id] = state
        sources["check:\(check.id)"] = source
        let monitor = CheckMonitor(loop: loop, definition: check) { [weak self] status, output in
            self?.updateCheck(check.id, status: status, output: output)
        }
        monitors[check.id] = monitor
        monitor.start()
        onCheckChanged?(check.id, state, source)
        scheduleReaperIfNeeded()
    }

    @discardableResult
    func removeCheck(_ id: String) -> Bool {
        guard checks.removeValue(forKey: id) != nil else { return false }
        monitors.removeValue(forKey: id)?.stop()
        let source = sources.removeValue(forKey: "check:\(id)") ?? .api
        onCheckChanged?(id, nil, source)
        return true
    }

    /// Records a probe result or an API status update.
    func updateCheck(_ id: String, status: CheckStatus, output: String) {
        guard var state = checks[id] else { return }
        let statusChanged = state.status != status
        guard statusChanged || state.output != output else { return }
        if statusChanged {
            logger.debug("check status changed", metadata: ["check": "\(id)", "status": "\(status.rawValue)"])
            state.criticalSince = status == .critical ? loop.nowMilliseconds : nil
        }
        state.status = status
        state.output = output
        checks[id] = state
        onCheckStatusChanged?(id, statusChanged)
        if statusChanged && status == .critical { scheduleReaperIfNeeded() }
    }

    enum TTLUpdateError: Error { case unknown, notTTL }

    /// PUT /v1/agent/check/pass|warn|fail|update: only TTL checks take updates (Consul).
    func updateTTL(_ id: String, status: CheckStatus, output: String) throws(TTLUpdateError) {
        guard let monitor = monitors[id] else { throw .unknown }
        // Maintenance checks are TTL-shaped internally (TTL 0) but take no updates, as in Consul.
        guard case .ttl(let ms) = monitor.definition.kind, ms > 0 else { throw .notTTL }
        // Consul bounds TTL output like any other check output.
        let bounded = truncatedCheckOutput(Array(output.utf8))
        monitor.ttlUpdated()
        updateCheck(id, status: status, output: bounded)
    }

    // MARK: DeregisterCriticalServiceAfter

    private func scheduleReaperIfNeeded() {
        guard reaper == nil, checks.values.contains(where: { $0.definition.deregisterCriticalServiceAfterMilliseconds > 0 }) else { return }
        let timer = LoopTimer(loop: loop)
        reaper = timer
        timer.start(afterMilliseconds: reapIntervalMilliseconds, repeatMilliseconds: reapIntervalMilliseconds) { [weak self] in
            self?.reapCriticalServices()
        }
    }

    /// Consul's agent reaps a service whose check has been critical longer than the check's
    /// DeregisterCriticalServiceAfter.
    func reapCriticalServices() {
        let now = loop.nowMilliseconds
        var reap: [String] = []
        for state in checks.values {
            let limit = state.definition.deregisterCriticalServiceAfterMilliseconds
            guard limit > 0, !state.definition.serviceID.isEmpty, let since = state.criticalSince, now - since >= limit else { continue }
            reap.append(state.definition.serviceID)
        }
        for id in Set(reap) where services[id] != nil {
            logger.info("Check for service has been critical for too long; deregistered service", metadata: ["service": "\(id)"])
            removeService(id)
        }
        if !checks.values.contains(where: { $0.definition.deregisterCriticalServiceAfterMilliseconds > 0 }) {
            reaper?.close()
            reaper = nil
        }
    }

    // MARK: Maintenance (Consul's _service_maintenance:<id> and _node_maintenance checks)

    static let nodeMaintenanceCheckID = "_node_maintenance"
    static func serviceMaintenanceCheckID(_ serviceID: String) -> String { "_service_maintenance:\(serviceID)" }

    func enableServiceMaintenance(_ serviceID: String, reason: String) {
        let id = Self.serviceMaintenanceCheckID(serviceID)
        guard checks[id] == nil else { return }
        let notes = reason.isEmpty ? "Maintenance mode is enabled for this service, but no reason was provided. This is a default message." : reason
        addMaintenanceCheck(id: id, name: "Service Maintenance Mode", notes: notes, serviceID: serviceID)
    }

    func enableNodeMaintenance(reason: String) {
        guard checks[Self.nodeMaintenanceCheckID] == nil else { return }
        let notes = reason.isEmpty ? "Maintenance mode is enabled for this node, but no reason was provided. This is a default message." : reason
        addMaintenanceCheck(id: Self.nodeMaintenanceCheckID, name: "Node Maintenance Mode", notes: notes, serviceID: "")
    }

    private func addMaintenanceCheck(id: String, name: String, notes: String, serviceID: String) {
        // A maintenance check is a critical check nobody updates: a TTL that never expires.
        var check = CheckDefinition(id: id, name: name, kind: .ttl(milliseconds: 0))
        check.notes = notes
        check.serviceID = serviceID
        try? addCheck(check, source: .api, status: .critical, output: "")
    }

    func close() {
        for monitor in monitors.values { monitor.stop() }
        monitors = [:]
        reaper?.close()
        reaper = nil
    }

    // MARK: Rendering

    /// Consul's HealthCheck shape for /v1/agent/checks.
    func healthCheckJSON(_ state: CheckState) -> [String: Any] {
        let d = state.definition
        let service = services[d.serviceID]
        var definition: [String: Any] = [:]
        if d.intervalMilliseconds > 0 { definition["Interval"] = LocalDefinitions.goDuration(milliseconds: d.intervalMilliseconds) }
        if d.timeoutMilliseconds > 0 { definition["Timeout"] = LocalDefinitions.goDuration(milliseconds: d.timeoutMilliseconds) }
        if d.deregisterCriticalServiceAfterMilliseconds > 0 {
            definition["DeregisterCriticalServiceAfter"] = LocalDefinitions.goDuration(milliseconds: d.deregisterCriticalServiceAfterMilliseconds)
        }
        switch d.kind {
        case .http(let url, let method, let header, let body, let skip):
            definition["HTTP"] = url; definition["Method"] = method; definition["Header"] = header
            definition["Body"] = body; definition["TLSSkipVerify"] = skip
            if !d.tlsServerName.isEmpty { definition["TLSServerName"] = d.tlsServerName }
        case .tcp(let address): definition["TCP"] = address
        case .script(let args): definition["ScriptArgs"] = args
        case .ttl(let ms): if ms > 0 { definition["TTL"] = LocalDefinitions.goDuration(milliseconds: ms) }
        }
        let isMaintenance = d.id == Self.nodeMaintenanceCheckID || d.id.hasPrefix("_service_maintenance:")
        return [
            "Node": nodeName,
            "CheckID": d.id,
            "Name": d.name,
            "Status": state.status.rawValue,
            "Notes": d.notes,
            "Output": state.output,
            "ServiceID": d.serviceID,
            "ServiceName": service?.name ?? "",
            "ServiceTags": service?.tags ?? [],
            "Type": isMaintenance ? "maintenance" : d.kind.typeName,
            "Interval": d.intervalMilliseconds > 0 ? LocalDefinitions.goDuration(milliseconds: d.intervalMilliseconds) : "",
            "Timeout": d.timeoutMilliseconds > 0 ? LocalDefinitions.goDuration(milliseconds: d.timeoutMilliseconds) : "",
            "ExposedPort": 0,
            "Definition": definition,
            "CreateIndex": 0,
            "ModifyIndex": 0,
        ]
    }
}

/// Runs one check on its interval (or watches its TTL) and applies Consul's
/// SuccessBeforePassing / FailuresBeforeCritical thresholds before reporting.
final class CheckMonitor {
    let loop: Loop
    let definition: CheckDefinition
    private let report: (CheckStatus, String) -> Void
    private var timer: LoopTimer?
    private var running = false
    private var stopped = false
    private var consecutiveSuccesses = 0
    private var consecutiveFailures = 0
    private var runningScript: ScriptRun?

    init(loop: Loop, definition: CheckDefinition, report: @escaping (CheckStatus, String) -> Void) {
        self.loop = loop
        self.definition = definition
        self.report = report
    }

    func start() {
        switch definition.kind {
        case .ttl(let ms):
            if ms > 0 { armTTL(ms) }
        default:
            // The first run is staggered (within half the interval, at most 500 ms, so a new
            // check reports promptly) so checks registered together do not fire together.
            let interval = max(definition.intervalMilliseconds, 1)
            let timer = LoopTimer(loop: loop)
            self.timer = timer
            let first = UInt64.random(in: 0...min(interval, 1_000) / 2)
            timer.start(afterMilliseconds: first, repeatMilliseconds: interval) { [weak self] in self?.runProbe() }
        }
    }

    func stop() {
        stopped = true
        timer?.close()
        timer = nil
        runningScript?.cancel()
        runningScript = nil
    }

    /// A TTL update arrived: the check has another TTL before it expires.
    func ttlUpdated() {
        if case .ttl(let ms) = definition.kind, ms > 0, !stopped { armTTL(ms) }
    }

    private func armTTL(_ ms: UInt64) {
        if timer == nil { timer = LoopTimer(loop: loop) }
        timer?.start(afterMilliseconds: ms) { [weak self] in
            guard let self, !self.stopped else { return }
            self.report(.critical, "TTL expired")
        }
    }

    private func runProbe() {
        // A probe still running (a slow server within its timeout) skips this turn rather than
        // stacking connections.
        guard !running, !stopped else { return }
        running = true
        let done: ProbeCompletion = { [weak self] status, output in
            guard let self else { return }
            self.running = false
            self.runningScript = nil
            guard !self.stopped else { return }
            self.record(status, output)
        }
        switch definition.kind {
        case .ttl: running = false
        case .tcp(let address):
            CheckProbes.tcp(loop: loop, address: address, timeoutMilliseconds: definition.timeoutMilliseconds, completion: done)
        case .http(let url, let method, let header, let body, let skipVerify):
            CheckProbes.http(loop: loop, url: url, method: method, header: header, body: body,
                             tlsSkipVerify: skipVerify, tlsServerName: definition.tlsServerName,
                             timeoutMilliseconds: definition.timeoutMilliseconds, completion: done)
        case .script(let args):
            let run = CheckProbes.script(loop: loop, args: args, timeoutMilliseconds: definition.timeoutMilliseconds, completion: done)
            if running { runningScript = run }  // not when it failed to start (done already ran)
        }
    }

    /// Consul's StatusHandler: a passing/warning result is recorded once SuccessBeforePassing
    /// successes in a row were seen; a critical one once FailuresBeforeCritical failures were.
    func record(_ status: CheckStatus, _ output: String) {
        if status == .critical {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            if consecutiveFailures >= definition.failuresBeforeCritical { report(status, output) }
        } else {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
            if consecutiveSuccesses >= definition.successBeforePassing { report(status, output) }
        }
    }
}
