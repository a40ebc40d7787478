// Anti-entropy: keeps the catalog's entries for this node equal to the agent's local state
// (Consul's agent/ae + agent/local). A partial sync pushes what changed since the last
// successful sync; a full sync re-reads the catalog's view of the node and repairs any drift,
// including entries deleted behind the agent's back and entries the agent does not have
// (except serfHealth, which the servers own). The catalog is reached through `catalogCall`, so
// this logic does not depend on how requests reach a server.
import Foundation

/// One HTTP-shaped catalog request: method, path with query, JSON body; the completion gets the
/// status and body.
typealias CatalogCall = (_ method: String, _ pathAndQuery: String, _ body: [UInt8],
                         _ completion: @escaping (_ status: Int, _ body: [UInt8]) -> Void) -> Void

/// A service as the catalog holds it for this node, reduced to the fields the agent owns.
struct SyncedService: Equatable {
    var id: String
    var name: String
    var tags: [String]
    var address: String
    var port: Int
    var meta: [String: String]
    var enableTagOverride: Bool
    var weightPassing: Int
    var weightWarning: Int

    init(_ s: ServiceDefinition) {
        id = s.id; name = s.name; tags = s.tags; address = s.address; port = s.port; meta = s.meta
        enableTagOverride = s.enableTagOverride; weightPassing = s.weightPassing; weightWarning = s.weightWarning
    }

    /// From Consul's catalog service JSON (node-services "Services" entries).
    init?(catalogJSON o: [String: Any]) {
        guard let id = o["ID"] as? String else { return nil }
        self.id = id
        name = o["Service"] as? String ?? ""
        tags = o["Tags"] as? [String] ?? []
        address = o["Address"] as? String ?? ""
        port = (o["Port"] as? NSNumber)?.intValue ?? 0
        meta = o["Meta"] as? [String: String] ?? [:]
        enableTagOverride = o["EnableTagOverride"] as? Bool ?? false
        let weights = o["Weights"] as? [String: Any]
        weightPassing = (weights?["Passing"] as? NSNumber)?.intValue ?? 1
        weightWarning = (weights?["Warning"] as? NSNumber)?.intValue ?? 1
    }

    var catalogJSON: [String: Any] {
        ["ID": id, "Service": name, "Tags": tags, "Address": address, "Port": port, "Meta": meta,
         "EnableTagOverride": enableTagOverride, "Weights": ["Passing": weightPassing, "Warning": weightWarning]]
    }
}

/// A check as the catalog holds it for this node.
struct SyncedCheck: Equatable {
    var id: String
    var name: String
    var status: String
    var notes: String
    var output: String
    var serviceID: String

    init(_ c: CheckState) {
        id = c.definition.id; name = c.definition.name; status = c.status.rawValue; notes = c.definition.notes
        output = c.output; serviceID = c.definition.serviceID
    }

    /// From Consul's HealthCheck JSON (/v1/health/node/<node> entries).
    init?(catalogJSON o: [String: Any]) {
        guard let id = o["CheckID"] as? String else { return nil }
        self.id = id
        name = o["Name"] as? String ?? ""
        status = o["Status"] as? String ?? ""
        notes = o["Notes"] as? String ?? ""
        output = o["Output"] as? String ?? ""
        serviceID = o["ServiceID"] as? String ?? ""
    }

    func catalogJSON(node: String, serviceName: String) -> [String: Any] {
        ["Node": node, "CheckID": id, "Name": name, "Status": status, "Notes": notes, "Output": output,
         "ServiceID": serviceID, "ServiceName": serviceName]
    }
}

/// What one sync round sends, in Consul's order: deregistrations first, then registrations.
enum SyncOperation: Equatable {
    case deregisterService(id: String)
    case deregisterCheck(id: String)
    case registerService(SyncedService, checks: [SyncedCheck])
    case registerCheck(SyncedCheck)
}

/// Loop-confined (all calls and completions on one thread); the catalog call may complete
/// synchronously or later.
final class AntiEntropy {
    /// The ID of the gossip health check the servers maintain for every node.
    static let serfHealthCheckID = "serfHealth"
    /// The service the leader registers for every server (Consul's structs.ConsulServiceID):
    /// like serfHealth, owned by the leader, never removed by a server's own sync.
    static let consulServiceID = "consul"
    /// Consul's anti-entropy base interval and the node count above which it scales.
    static let baseIntervalMilliseconds: UInt64 = 60_000
    static let scaleThreshold = 128
    /// Consul retries a failed sync after this long (agent/ae retryFailIntv).
    static let retryAfterFailureMilliseconds: UInt64 = 15_000

    let nodeName: String
    let nodeID: String
    let address: String
    let datacenter: String

    /// How requests reach the catalog (the agent sets its own `internalCaller`). Nil: not
    /// connected yet (syncs report failure and are retried).
    var catalogCall: CatalogCall?
    /// The agent's local state at the moment of a sync.
    var localSnapshot: () -> (services: [String: ServiceDefinition], checks: [String: CheckState]) = { ([:], [:]) }

    /// What we believe the catalog holds for this node (from the last full sync plus every
    /// operation since that succeeded). Nil until a full sync succeeds or after a failure.
    private(set) var catalogView: (services: [String: SyncedService], checks: [String: SyncedCheck])?
    private(set) var isSyncing = false
    private var queued: [(full: Bool, completion: (Bool) -> Void)] = []

    init(nodeName: String, nodeID: String, address: String, datacenter: String) {
        self.nodeName = nodeName
        self.nodeID = nodeID
        self.address = address
        self.datacenter = datacenter
    }

    // MARK: Planning (pure)

    static func plan(localServices: [String: ServiceDefinition], localChecks: [String: CheckState],
                     catalogServices: [String: SyncedService], catalogChecks: [String: SyncedCheck]) -> [SyncOperation] {
        var operations: [SyncOperation] = []
        let deregisteredServices = Set(catalogServices.keys.filter { localServices[$0] == nil && $0 != consulServiceID })
        for id in deregisteredServices.sorted() { operations.append(.deregisterService(id: id)) }
        for (id, check) in catalogChecks.sorted(by: { $0.key < $1.key }) where localChecks[id] == nil && id != serfHealthCheckID {
            // Deregistering a service takes its checks with it.
            if deregisteredServices.contains(check.serviceID) { continue }
            operations.append(.deregisterCheck(id: id))
        }
        var registeredServices = Set<String>()
        for (id, service) in localServices.sorted(by: { $0.key < $1.key }) {
            let wanted = SyncedService(service)
            let serviceChecks = localChecks.values.filter { $0.definition.serviceID == id }.map(SyncedCheck.init)
            let staleChecks = serviceChecks.filter { catalogChecks[$0.id] != $0 }.sorted { $0.id < $1.id }
            if catalogServices[id] != wanted {
                operations.append(.registerService(wanted, checks: staleChecks))
                registeredServices.insert(id)
            } else if !staleChecks.isEmpty {
                operations.append(.registerService(wanted, checks: staleChecks))
                registeredServices.insert(id)
            }
        }
        for (id, state) in localChecks.sorted(by: { $0.key < $1.key }) {
            let check = SyncedCheck(state)
            if registeredServices.contains(check.serviceID) { continue }
            if catalogChecks[id] != check { operations.append(.registerCheck(check)) }
        }
        return operations
    }

    /// Consul's scaleFactor: 1 up to 128 nodes, then +1 for every doubling (129-256: 2,
    /// 257-512: 3, …), as its anti-entropy docs' table shows.
    static func scaleFactor(clusterSize: Int) -> UInt64 {
        guard clusterSize > scaleThreshold else { return 1 }
        return UInt64((log2(Double(clusterSize)) - log2(Double(scaleThreshold))).rounded(.up)) + 1
    }

    /// Consul's next full sync: the base interval plus a random stagger of up to scale × base,
    /// so large clusters spread their syncs and a herd of agents does not sync together.
    static func fullSyncDelay(clusterSize: Int, base: UInt64 = baseIntervalMilliseconds,
                              random: (ClosedRange<UInt64>) -> UInt64 = { UInt64.random(in: $0) }) -> UInt64 {
        base + random(0...(scaleFactor(clusterSize: clusterSize) * base))
    }

    // MARK: Syncing

    /// Re-reads the catalog's view of this node, then pushes every difference.
    func fullSync(completion: @escaping (Bool) -> Void = { _ in }) { enqueue(full: true, completion) }

    /// Pushes what changed locally since the last successful sync (a full sync if none yet).
    func partialSync(completion: @escaping (Bool) -> Void = { _ in }) { enqueue(full: false, completion) }

    private func enqueue(full: Bool, _ completion: @escaping (Bool) -> Void) {
        // One round at a time; rounds requested meanwhile run after it (a partial one sees
        // everything changed until it starts).
        queued.append((full, completion))
        if !isSyncing { runNext() }
    }

    private func runNext() {
        guard !queued.isEmpty else { isSyncing = false; return }
        isSyncing = true
        let next = queued.removeFirst()
        let finish: (Bool) -> Void = { [weak self] ok in
            if !ok { self?.catalogView = nil }  // unsure what landed: read it again next time
            next.completion(ok)
            self?.runNext()
        }
        if next.full || catalogView == nil {
            readCatalog { [weak self] ok in
                guard let self, ok else { finish(false); return }
                self.push(finish)
            }
        } else {
            push(finish)
        }
    }

    private func readCatalog(_ done: @escaping (Bool) -> Void) {
        guard let call = catalogCall else { done(false); return }
        let node = URLPath.escape(nodeName)
        call("GET", "/v1/catalog/node-services/\(node)", []) { [weak self] status, body in
            guard let self else { return }
            var services: [String: SyncedService] = [:]
            if status == 200 {
                let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
                for entry in object?["Services"] as? [[String: Any]] ?? [] {
                    if let s = SyncedService(catalogJSON: entry) { services[s.id] = s }
                }
            } else if status != 404 {
                done(false); return
            }
            call("GET", "/v1/health/node/\(node)", []) { [weak self] status, body in
                guard let self else { return }
                guard status == 200 else { done(false); return }
                var checks: [String: SyncedCheck] = [:]
                let list = (try? JSONSerialization.jsonObject(with: Data(body)) as? [[String: Any]]) ?? []
                for entry in list { if let c = SyncedCheck(catalogJSON: entry) { checks[c.id] = c } }
                self.catalogView = (services, checks)
                done(true)
            }
        }
    }

    private func push(_ done: @escaping (Bool) -> Void) {
        guard let view = catalogView else { done(false); return }
        let local = localSnapshot()
        let operations = Self.plan(localServices: local.services, localChecks: local.checks,
                                   catalogServices: view.services, catalogChecks: view.checks)
        let serviceNames = local.services.mapValues(\.name)
        var remaining = operations[...]
        func step() {
            guard let operation = remaining.popFirst() else { done(true); return }
            guard let call = catalogCall else { done(false); return }
            let (path, body) = request(for: operation, serviceNames: serviceNames)
            call("PUT", path, body) { [weak self] status, _ in
                guard let self else { return }
                guard status == 200 else { done(false); return }
                self.applied(operation)
                step()
            }
        }
        step()
    }

    /// Keeps the believed catalog view in step with what succeeded.
    private func applied(_ operation: SyncOperation) {
        guard var view = catalogView else { return }
        switch operation {
        case .deregisterService(let id):
            view.services[id] = nil
            for (checkID, check) in view.checks where check.serviceID == id { view.checks[checkID] = nil }
        case .deregisterCheck(let id): view.checks[id] = nil
        case .registerService(let service, let checks):
            view.services[service.id] = service
            for check in checks { view.checks[check.id] = check }
        case .registerCheck(let check): view.checks[check.id] = check
        }
        catalogView = view
    }

    /// Consul's catalog register / deregister bodies (structs.RegisterRequest / DeregisterRequest).
    func request(for operation: SyncOperation, serviceNames: [String: String]) -> (String, [UInt8]) {
        var body: [String: Any] = ["Node": nodeName, "Datacenter": datacenter]
        let path: String
        switch operation {
        case .deregisterService(let id):
            path = "/v1/catalog/deregister"
            body["ServiceID"] = id
        case .deregisterCheck(let id):
            path = "/v1/catalog/deregister"
            body["CheckID"] = id
        case .registerService(let service, let checks):
            path = "/v1/catalog/register"
            body["ID"] = nodeID
            body["Address"] = address
            body["Service"] = service.catalogJSON
            if !checks.isEmpty { body["Checks"] = checks.map { $0.catalogJSON(node: nodeName, serviceName: service.name) } }
            body["SkipNodeUpdate"] = true
        case .registerCheck(let check):
            path = "/v1/catalog/register"
            body["ID"] = nodeID
            body["Address"] = address
            body["Check"] = check.catalogJSON(node: nodeName, serviceName: serviceNames[check.serviceID] ?? "")
            body["SkipNodeUpdate"] = true
        }
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data()
        return (path, Array(data))
    }
}

/// Path-segment escaping for node names in catalog paths.
enum URLPath {
    static func escape(_ s: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}
