// Wires the agent's local services and checks: loads definitions from the config and the data
// dir, persists API registrations, and drives anti-entropy (partial sync on each change, full
// sync on Consul's scaled, jittered interval). Loop-confined; owned by the Agent.
import EventLoop
import Foundation
import Logging

final class AgentLocalServices {
    let loop: Loop
    let state: LocalState
    let persistence: LocalStatePersistence
    let antiEntropy: AntiEntropy
    /// Number of LAN members, for the full-sync interval.
    var clusterSize: () -> Int = { 1 }
    private var fullSyncTimer: LoopTimer?
    private var partialSyncTimer: LoopTimer?
    private var partialSyncPending = false
    private let logger = Logger(label: "agent.anti_entropy")

    init(loop: Loop, config: AgentConfig, nodeID: String, dataDir: String, advertiseAddress: String) {
        self.loop = loop
        state = LocalState(loop: loop, nodeName: config.nodeName, datacenter: config.datacenter,
                           enableScriptChecks: config.enableScriptChecks)
        state.minimumCheckIntervalMilliseconds = config.minimumCheckIntervalMilliseconds
        state.minimumDeregisterCriticalMilliseconds = config.minimumDeregisterCriticalMilliseconds
        state.reapIntervalMilliseconds = config.criticalReapIntervalMilliseconds
        persistence = LocalStatePersistence(dataDir: dataDir)
        antiEntropy = AntiEntropy(nodeName: config.nodeName, nodeID: nodeID, address: advertiseAddress, datacenter: config.datacenter)
        antiEntropy.localSnapshot = { [weak state] in (state?.services ?? [:], state?.checks ?? [:]) }
        state.onServiceChanged = { [weak self] id, service, source in
            guard let self else { return }
            if source == .api {
                if let service { self.persistence.saveService(service) } else { self.persistence.removeService(id) }
            }
            self.localChanged()
        }
        state.onCheckChanged = { [weak self] id, check, source in
            guard let self else { return }
            if source == .api {
                if let check { self.persistence.saveCheck(check) } else { self.persistence.removeCheck(id) }
            }
            self.localChanged()
        }
        state.onCheckStatusChanged = { [weak self] id, statusChanged in
            guard let self else { return }
            // TTL state persists so a restart does not reset it (cheap: TTL updates are rare
            // next to probe results, which are not persisted).
            if let check = self.state.checks[id], case .ttl = check.definition.kind, self.state.sources["check:\(id)"] == .api {
                self.persistence.saveCheck(check)
            }
            // Output-only changes ride along with the next sync rather than costing a Raft
            // write each (Consul defers them by check_update_interval for the same reason).
            if statusChanged { self.localChanged() }
        }
    }

    /// Loads config-file definitions, then those persisted in the data dir (Consul: config
    /// definitions win over persisted ones with the same ID).
    func load(config: AgentConfig) throws {
        for entry in config.localServices {
            do { try state.addService(entry.service, checks: entry.checks, source: .config) } catch {
                throw AgentError.startup("service \"\(entry.service.id)\" in the config: \(error)")
            }
        }
        for check in config.localChecks {
            do { try state.addCheck(check, source: .config) } catch {
                throw AgentError.startup("check \"\(check.id)\" in the config: \(error)")
            }
        }
        let persisted = persistence.load()
        for (service, checks) in persisted.services where state.services[service.id] == nil {
            do { try state.addService(service, checks: checks, source: .api) } catch {
                logger.warning("skipping persisted service", metadata: ["service": "\(service.id)", "error": "\(error)"])
            }
        }
        for (check, status, output) in persisted.checks where state.checks[check.id] == nil {
            if check.id == LocalState.nodeMaintenanceCheckID {
                state.enableNodeMaintenance(reason: check.notes)
                continue
            }
            if check.id.hasPrefix("_service_maintenance:") {
                state.enableServiceMaintenance(check.serviceID, reason: check.notes)
                continue
            }
            do { try state.addCheck(check, source: .api, status: status, output: output) } catch {
                logger.warning("skipping persisted check", metadata: ["check": "\(check.id)", "error": "\(error)"])
            }
        }
    }

    /// Starts the periodic full sync. Syncs fail (and are retried) until `antiEntropy.catalogCall` is set.
    func startSyncing() {
        scheduleFullSync(afterMilliseconds: 0)
    }

    private func scheduleFullSync(afterMilliseconds delay: UInt64) {
        if fullSyncTimer == nil { fullSyncTimer = LoopTimer(loop: loop) }
        fullSyncTimer?.start(afterMilliseconds: delay) { [weak self] in
            guard let self else { return }
            guard self.antiEntropy.catalogCall != nil else {
                self.scheduleFullSync(afterMilliseconds: AntiEntropy.fullSyncDelay(clusterSize: self.clusterSize()))
                return
            }
            self.antiEntropy.fullSync { [weak self] ok in
                guard let self else { return }
                if !ok { self.logger.warning("anti-entropy full sync failed; retrying") }
                self.scheduleFullSync(afterMilliseconds: ok ? AntiEntropy.fullSyncDelay(clusterSize: self.clusterSize())
                                                           : AntiEntropy.retryAfterFailureMilliseconds)
            }
        }
    }

    /// Sets how requests reach the catalog and syncs fully at once.
    func connect(catalogCall: @escaping CatalogCall) {
        antiEntropy.catalogCall = catalogCall
        scheduleFullSync(afterMilliseconds: 0)
    }

    /// A local change: one partial sync on the next loop turn covers every change made before it.
    private func localChanged() {
        guard antiEntropy.catalogCall != nil, !partialSyncPending else { return }
        partialSyncPending = true
        if partialSyncTimer == nil { partialSyncTimer = LoopTimer(loop: loop) }
        partialSyncTimer?.start(afterMilliseconds: 0) { [weak self] in
            guard let self else { return }
            self.partialSyncPending = false
            self.antiEntropy.partialSync()
        }
    }

    func close() {
        state.close()
        fullSyncTimer?.close()
        partialSyncTimer?.close()
        persistence.flush()
    }
}
