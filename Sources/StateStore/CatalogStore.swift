// The catalog tables of the replicated state machine, with Consul's semantics
// (agent/consul/state/catalog.go; https://developer.hashicorp.com/consul/api-docs/catalog).
// They live in the KV's environment, so one apply transaction covers both. Databases:
//   "catalog_nodes"     node name → CatalogNode
//   "catalog_node_ids"  node ID → node name (ID conflicts)
//   "catalog_services"  node \0 service ID → CatalogService
//   "catalog_service_instances"  service name \0 node \0 service ID → "" (instances by name)
//   "catalog_checks"    node \0 check ID → CatalogCheck
// Names and IDs in keys are folded to lower case, as Consul's indexes are case-insensitive
// (agent/consul/state/catalog_schema.go); records keep the case they were registered with.
// In "meta": the table indexes "nodesIndex", "servicesIndex", "checksIndex", one index per
// live service name "service.<name>" (so a change to one service wakes only its watchers),
// and "serviceLastExtinction" (the index a name that has no instance reports, as Consul's
// "service_last_extinction", so X-Consul-Index never goes backwards when a service goes away).
import Storage

/// Which catalog tables changed (what blocking queries on whole tables watch).
public struct CatalogTableSet: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let nodes = CatalogTableSet(rawValue: 1)
    public static let services = CatalogTableSet(rawValue: 2)
    public static let checks = CatalogTableSet(rawValue: 4)
}

/// A service instance with its node and the checks that count for it: its own and the
/// node's (Consul's CheckServiceNode, what /v1/health/service returns).
public struct CatalogHealthEntry: Sendable, Equatable {
    public var node: CatalogNode
    public var service: CatalogService
    public var checks: [CatalogCheck]
}

/// What one apply batch changed in the catalog.
struct CatalogChanges {
    var tables: CatalogTableSet = []
    private(set) var serviceNames: [String] = []
    private var seen: Set<String> = []

    mutating func service(_ name: String) {
        let folded = CatalogLimits.folded(name)
        if seen.insert(folded).inserted { serviceNames.append(folded) }
    }
}

/// Limits that keep every composite key under LMDB's 511-byte key limit.
public enum CatalogLimits {
    /// For each name or ID, counted after case folding (which can lengthen some letters).
    public static let maxNameBytes = 160

    /// The form of a name in keys and watch scopes: Consul matches names case-insensitively.
    public static func folded(_ name: String) -> String { name.lowercased() }

    /// Whether `name` can be part of a key: non-empty, no NUL, within the limit once folded.
    public static func problem(_ name: String, _ what: String) -> String? {
        if name.isEmpty { return "Missing \(what)" }
        let size = folded(name).utf8.count
        if size > maxNameBytes { return "\(what) too long: \(size) bytes, at most \(maxNameBytes)" }
        if name.utf8.contains(0) { return "\(what) contains a NUL byte" }
        return nil
    }
}

struct CatalogTables: Sendable {
    let nodes: Database
    let nodeIDs: Database
    let services: Database
    let instances: Database
    let checks: Database
    let meta: Database

    static let nodesIndexKey = Array("nodesIndex".utf8)
    static let servicesIndexKey = Array("servicesIndex".utf8)
    static let checksIndexKey = Array("checksIndex".utf8)
    static let extinctionKey = Array("serviceLastExtinction".utf8)
    static func serviceIndexKey(_ name: String) -> [UInt8] { Array("service.".utf8) + fold(name) }

    init(environment: Environment) throws {
        nodes = try environment.openDatabase("catalog_nodes")
        nodeIDs = try environment.openDatabase("catalog_node_ids")
        services = try environment.openDatabase("catalog_services")
        instances = try environment.openDatabase("catalog_service_instances")
        checks = try environment.openDatabase("catalog_checks")
        meta = try environment.openDatabase("meta")
    }

    // MARK: Keys

    static func fold(_ name: String) -> [UInt8] { Array(CatalogLimits.folded(name).utf8) }
    static func same(_ a: String, _ b: String) -> Bool { a == b || CatalogLimits.folded(a) == CatalogLimits.folded(b) }
    static func pair(_ a: String, _ b: String) -> [UInt8] { fold(a) + [0] + fold(b) }
    static func nodePrefix(_ node: String) -> [UInt8] { fold(node) + [0] }
    static func instanceKey(_ s: CatalogService) -> [UInt8] { fold(s.service) + [0] + pair(s.node, s.id) }

    // MARK: - Apply

    func apply(_ command: CatalogCommand, at index: UInt64, _ txn: WriteTransaction,
               _ changes: inout CatalogChanges) throws -> ApplyResult {
        switch command {
        case let .register(registration): return try register(registration, at: index, txn, &changes)
        case let .deregisterNode(node):
            if let failure = invalidName(node, "node name") { return failure }
            try deleteNode(node, at: index, txn, &changes)
            return .success(true)
        case let .deregisterService(node, serviceID):
            if let failure = invalidName(node, "node name") ?? invalidName(serviceID, "service ID") { return failure }
            try deleteService(node: node, id: serviceID, at: index, txn, &changes)
            return .success(true)
        case let .deregisterCheck(node, checkID):
            if let failure = invalidName(node, "node name") ?? invalidName(checkID, "check ID") { return failure }
            try deleteCheck(node: node, id: checkID, at: index, txn, &changes)
            return .success(true)
        }
    }

    /// Names become parts of keys: non-empty, no NUL (the key separator), bounded.
    private func invalidName(_ name: String, _ what: String) -> ApplyResult? {
        CatalogLimits.problem(name, what).map { .failed($0) }
    }

    /// Consul's ensureRegistrationTxn: node, then service, then checks, all or nothing.
    /// Everything is validated before the first write, because a failed command must leave
    /// the (shared, batch-wide) transaction untouched.
    private func register(_ registration: CatalogRegistration, at index: UInt64, _ txn: WriteTransaction,
                          _ changes: inout CatalogChanges) throws -> ApplyResult {
        let name = registration.node.name
        if let failure = invalidName(name, "node name") { return failure }
        if !registration.node.id.isEmpty {
            if let failure = invalidName(registration.node.id, "node ID") { return failure }
            if let owner = try txn.get(nodeIDs, Self.fold(registration.node.id)), owner != Self.fold(name) {
                return .failed("Failed inserting node: node ID \"\(registration.node.id)\" for node \"\(name)\" aliases existing node \"\(String(decoding: owner, as: UTF8.self))\"")
            }
        }
        if let service = registration.service {
            if let failure = invalidName(service.id, "service ID") ?? invalidName(service.service, "service name") {
                return failure
            }
            if !Self.same(service.node, name) { return .failed("Node name for service doesn't match node name for registration") }
        }
        for check in registration.checks {
            if let failure = invalidName(check.checkID, "check ID") { return failure }
            if !Self.same(check.node, name) { return .failed("Node name for check doesn't match node name for registration") }
            if !check.serviceID.isEmpty && !Self.same(check.serviceID, registration.service?.id ?? "") {
                let registered = CatalogLimits.problem(check.serviceID, "service ID") == nil
                    ? try txn.get(services, Self.pair(name, check.serviceID)) : nil
                if registered == nil { return .failed("Missing service registration") }
            }
        }

        let existingNode = try node(txn, name)
        if existingNode == nil || !registration.skipNodeUpdate {
            try ensureNode(registration.node, existing: existingNode, at: index, txn, &changes)
        }
        if let service = registration.service {
            try ensureService(service, at: index, txn, &changes)
        }
        for check in registration.checks {
            try ensureCheck(check, at: index, txn, &changes)
        }
        return .success(true)
    }

    private func ensureNode(_ new: CatalogNode, existing: CatalogNode?, at index: UInt64, _ txn: WriteTransaction,
                            _ changes: inout CatalogChanges) throws {
        if let existing, existing.sameContent(new) { return }
        var node = new
        node.createIndex = existing?.createIndex ?? index
        node.modifyIndex = index
        if let existing, !existing.id.isEmpty, !Self.same(existing.id, node.id) {
            try txn.delete(nodeIDs, key: Self.fold(existing.id))
        }
        if !node.id.isEmpty { try txn.put(nodeIDs, key: Self.fold(node.id), value: Self.fold(node.name)) }
        try txn.put(nodes, key: Self.fold(node.name), value: node.stored())
        try setIndex(Self.nodesIndexKey, index, txn)
        changes.tables.insert(.nodes)
        // A node's fields are part of every health/catalog answer for its services.
        try touchAllServices(ofNode: node.name, at: index, txn, &changes)
    }

    private func ensureService(_ new: CatalogService, at index: UInt64, _ txn: WriteTransaction,
                               _ changes: inout CatalogChanges) throws {
        let key = Self.pair(new.node, new.id)
        let existing = try txn.get(services, key).map { bytes throws(StateStoreError) in try CatalogService(stored: bytes) }
        if let existing, existing.sameContent(new) { return }
        var service = new
        service.createIndex = existing?.createIndex ?? index
        service.modifyIndex = index
        if let existing, !Self.same(existing.service, service.service) {
            try txn.delete(instances, key: Self.instanceKey(existing))
            try retire(serviceName: existing.service, at: index, txn, &changes)
        }
        try txn.put(services, key: key, value: service.stored())
        try txn.put(instances, key: Self.instanceKey(service), value: [])
        try setIndex(Self.servicesIndexKey, index, txn)
        try setIndex(Self.serviceIndexKey(service.service), index, txn)
        changes.tables.insert(.services)
        changes.service(service.service)
        // Keep the checks' copies of the service's name and tags current.
        var stale: [CatalogCheck] = []
        try forEachCheck(txn, node: service.node) { check in
            if Self.same(check.serviceID, service.id) && (check.serviceName != service.service || check.serviceTags != service.tags) {
                stale.append(check)
            }
        }
        for var check in stale {
            check.serviceName = service.service
            check.serviceTags = service.tags
            check.modifyIndex = index
            try txn.put(checks, key: Self.pair(check.node, check.checkID), value: check.stored())
            try setIndex(Self.checksIndexKey, index, txn)
            changes.tables.insert(.checks)
        }
    }

    /// Consul's ensureCheckTxn: status defaults to critical, the service's name and tags are
    /// copied in, an unchanged check moves no index.
    private func ensureCheck(_ new: CatalogCheck, at index: UInt64, _ txn: WriteTransaction,
                             _ changes: inout CatalogChanges) throws {
        var check = new
        if check.status.isEmpty { check.status = CatalogCheckStatus.critical }
        check.serviceName = ""
        check.serviceTags = []
        if !check.serviceID.isEmpty, let stored = try txn.get(services, Self.pair(check.node, check.serviceID)) {
            let service = try CatalogService(stored: stored)
            check.serviceName = service.service
            check.serviceTags = service.tags
        }
        let key = Self.pair(check.node, check.checkID)
        let existing = try txn.get(checks, key).map { bytes throws(StateStoreError) in try CatalogCheck(stored: bytes) }
        if let existing, existing.sameContent(check) { return }
        check.createIndex = existing?.createIndex ?? index
        check.modifyIndex = index
        try txn.put(checks, key: key, value: check.stored())
        try setIndex(Self.checksIndexKey, index, txn)
        changes.tables.insert(.checks)
        if let existing, !Self.same(existing.serviceID, check.serviceID) {
            try touchServicesOfCheck(existing, at: index, txn, &changes)
        }
        try touchServicesOfCheck(check, at: index, txn, &changes)
    }

    /// Consul's deleteNodeTxn: services (with their checks), node checks, then the node.
    private func deleteNode(_ name: String, at index: UInt64, _ txn: WriteTransaction,
                            _ changes: inout CatalogChanges) throws {
        guard let existing = try node(txn, name) else { return }
        var serviceIDs: [String] = []
        try forEachService(txn, node: name) { serviceIDs.append($0.id) }
        for id in serviceIDs { try deleteService(node: name, id: id, at: index, txn, &changes) }
        var checkIDs: [String] = []
        try forEachCheck(txn, node: name) { checkIDs.append($0.checkID) }
        for id in checkIDs { try deleteCheck(node: name, id: id, at: index, txn, &changes) }
        if !existing.id.isEmpty { try txn.delete(nodeIDs, key: Self.fold(existing.id)) }
        try txn.delete(nodes, key: Self.fold(name))
        try setIndex(Self.nodesIndexKey, index, txn)
        changes.tables.insert(.nodes)
    }

    /// Consul's deleteServiceTxn: the instance and the checks bound to it.
    private func deleteService(node: String, id: String, at index: UInt64, _ txn: WriteTransaction,
                               _ changes: inout CatalogChanges) throws {
        let key = Self.pair(node, id)
        guard let stored = try txn.get(services, key) else { return }
        let service = try CatalogService(stored: stored)
        var checkIDs: [String] = []
        try forEachCheck(txn, node: node) { if Self.same($0.serviceID, id) { checkIDs.append($0.checkID) } }
        for checkID in checkIDs { try deleteCheck(node: node, id: checkID, at: index, txn, &changes) }
        try txn.delete(services, key: key)
        try txn.delete(instances, key: Self.instanceKey(service))
        try setIndex(Self.servicesIndexKey, index, txn)
        changes.tables.insert(.services)
        try retire(serviceName: service.service, at: index, txn, &changes)
    }

    private func deleteCheck(node: String, id: String, at index: UInt64, _ txn: WriteTransaction,
                             _ changes: inout CatalogChanges) throws {
        let key = Self.pair(node, id)
        guard let stored = try txn.get(checks, key) else { return }
        let check = try CatalogCheck(stored: stored)
        try txn.delete(checks, key: key)
        try setIndex(Self.checksIndexKey, index, txn)
        changes.tables.insert(.checks)
        try touchServicesOfCheck(check, at: index, txn, &changes)
    }

    /// An instance of `serviceName` went away: bump its index, or, if it was the last one,
    /// drop its index and record the extinction (Consul's catalogUpdateServiceExtinctionIndex).
    private func retire(serviceName: String, at index: UInt64, _ txn: WriteTransaction,
                        _ changes: inout CatalogChanges) throws {
        changes.service(serviceName)
        var anyLeft = false
        try txn.cursor(instances).forEach(prefix: Self.nodePrefix(serviceName)) { _, _ in
            anyLeft = true
            return false
        }
        if anyLeft {
            try setIndex(Self.serviceIndexKey(serviceName), index, txn)
        } else {
            try txn.delete(meta, key: Self.serviceIndexKey(serviceName))
            try setIndex(Self.extinctionKey, index, txn)
        }
    }

    /// A check counts for its service, or (node check) for every service of its node.
    private func touchServicesOfCheck(_ check: CatalogCheck, at index: UInt64, _ txn: WriteTransaction,
                                      _ changes: inout CatalogChanges) throws {
        if check.serviceID.isEmpty {
            try touchAllServices(ofNode: check.node, at: index, txn, &changes)
        } else if !check.serviceName.isEmpty, try txn.get(services, Self.pair(check.node, check.serviceID)) != nil {
            try setIndex(Self.serviceIndexKey(check.serviceName), index, txn)
            changes.service(check.serviceName)
        }
    }

    private func touchAllServices(ofNode node: String, at index: UInt64, _ txn: WriteTransaction,
                                  _ changes: inout CatalogChanges) throws {
        var names: [String] = []
        try forEachService(txn, node: node) { names.append($0.service) }
        for name in names {
            try setIndex(Self.serviceIndexKey(name), index, txn)
            changes.service(name)
        }
    }

    private func setIndex(_ key: [UInt8], _ index: UInt64, _ txn: WriteTransaction) throws {
        try txn.put(meta, key: key, value: index.bigEndianBytes)
    }

    // MARK: - Reads (inside a transaction)

    func metaIndex(_ txn: ReadTransaction, _ key: [UInt8]) throws -> UInt64? {
        guard key.count <= 511, let stored = try txn.get(meta, key) else { return nil }
        guard let value = UInt64(bigEndianBytes: stored) else {
            throw StateStoreError.corrupt("meta \(String(decoding: key, as: UTF8.self)): \(stored.count) bytes")
        }
        return value
    }

    func tableIndex(_ txn: ReadTransaction, _ tables: CatalogTableSet) throws -> UInt64 {
        var highest: UInt64 = 0
        if tables.contains(.nodes) { highest = max(highest, try metaIndex(txn, Self.nodesIndexKey) ?? 0) }
        if tables.contains(.services) { highest = max(highest, try metaIndex(txn, Self.servicesIndexKey) ?? 0) }
        if tables.contains(.checks) { highest = max(highest, try metaIndex(txn, Self.checksIndexKey) ?? 0) }
        return highest
    }

    /// Consul's maxIndexForService: the service's own index; for a name with no instance the
    /// last extinction; failing both, the tables' index.
    func serviceIndex(_ txn: ReadTransaction, _ name: String, withChecks: Bool) throws -> UInt64 {
        if let index = try metaIndex(txn, Self.serviceIndexKey(name)) { return index }
        if let extinction = try metaIndex(txn, Self.extinctionKey) { return extinction }
        return try tableIndex(txn, withChecks ? [.nodes, .services, .checks] : [.nodes, .services])
    }

    func node(_ txn: ReadTransaction, _ name: String) throws -> CatalogNode? {
        guard isKeyable(name), let stored = try txn.get(nodes, Self.fold(name)) else { return nil }
        return try CatalogNode(stored: stored)
    }

    func forEachNode(_ txn: ReadTransaction, _ body: (CatalogNode) throws -> Void) throws {
        try txn.cursor(nodes).forEach(prefix: []) { _, value in
            try body(try CatalogNode(stored: value))
            return true
        }
    }

    func forEachService(_ txn: ReadTransaction, node: String, _ body: (CatalogService) throws -> Void) throws {
        guard isKeyable(node) else { return }
        try txn.cursor(services).forEach(prefix: Self.nodePrefix(node)) { _, value in
            try body(try CatalogService(stored: value))
            return true
        }
    }

    func forEachCheck(_ txn: ReadTransaction, node: String, _ body: (CatalogCheck) throws -> Void) throws {
        guard isKeyable(node) else { return }
        try txn.cursor(checks).forEach(prefix: Self.nodePrefix(node)) { _, value in
            try body(try CatalogCheck(stored: value))
            return true
        }
    }

    func forEachCheck(_ txn: ReadTransaction, _ body: (CatalogCheck) throws -> Void) throws {
        try txn.cursor(checks).forEach(prefix: []) { _, value in
            try body(try CatalogCheck(stored: value))
            return true
        }
    }

    /// Every instance of `name`, ordered by node then ID.
    func instances(_ txn: ReadTransaction, of name: String) throws -> [CatalogService] {
        guard isKeyable(name) else { return [] }
        var keys: [[UInt8]] = []
        try txn.cursor(instances).forEach(prefix: Self.nodePrefix(name)) { key, _ in
            keys.append(Array(key[(Self.fold(name).count + 1)...]))
            return true
        }
        return try keys.compactMap { key in
            try txn.get(services, key).map { bytes throws(StateStoreError) in try CatalogService(stored: bytes) }
        }
    }

    /// Every service name (folded) in byte order, each with its instances; the name shown is
    /// the first instance's spelling.
    func forEachServiceName(_ txn: ReadTransaction, _ body: (String, [CatalogService]) throws -> Void) throws {
        var currentName: [UInt8]?
        var group: [CatalogService] = []
        func flush() throws {
            if let currentName {
                try body(group.first?.service ?? String(decoding: currentName, as: UTF8.self), group)
            }
        }
        try txn.cursor(instances).forEach(prefix: []) { key, _ in
            guard let separator = key.firstIndex(of: 0) else {
                throw StateStoreError.corrupt("catalog instance key without a separator")
            }
            let name = Array(key[..<separator])
            if name != currentName {
                try flush()
                currentName = name
                group = []
            }
            if let stored = try txn.get(services, Array(key[(separator + 1)...])) {
                group.append(try CatalogService(stored: stored))
            }
            return true
        }
        try flush()
    }

    private func isKeyable(_ name: String) -> Bool { CatalogLimits.problem(name, "name") == nil }
}
