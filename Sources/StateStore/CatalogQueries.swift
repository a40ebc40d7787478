// Catalog and health reads, each in one read transaction with the index Consul reports for
// it (agent/consul/state/catalog.go): whole-table indexes for table-wide listings, the
// per-service index for one service's instances and health.
import Storage

extension StateStore {
    /// /v1/catalog/nodes: every node, by name; the nodes table index.
    public func catalogNodes() throws -> (index: UInt64, nodes: [CatalogNode]) {
        try environment.read { txn in
            var nodes: [CatalogNode] = []
            try catalog.forEachNode(txn) { nodes.append($0) }
            return (try catalog.tableIndex(txn, .nodes), nodes)
        }
    }

    /// /v1/catalog/services: every service name with the union of its instances' tags
    /// (first-seen order), only counting instances on nodes that `nodeFilter` accepts;
    /// the services table index.
    public func catalogServices(nodeFilter: ((CatalogNode) -> Bool)? = nil)
        throws -> (index: UInt64, services: [(name: String, tags: [String])]) {
        try environment.read { txn in
            var result: [(name: String, tags: [String])] = []
            var nodeCache: [String: Bool] = [:]
            try catalog.forEachServiceName(txn) { name, instances in
                var tags: [String] = []
                var seen = Set<String>()
                var any = false
                for instance in instances {
                    if let nodeFilter {
                        let accepted: Bool
                        if let cached = nodeCache[instance.node] {
                            accepted = cached
                        } else {
                            accepted = try catalog.node(txn, instance.node).map(nodeFilter) ?? false
                            nodeCache[instance.node] = accepted
                        }
                        if !accepted { continue }
                    }
                    any = true
                    for tag in instance.tags where seen.insert(tag).inserted { tags.append(tag) }
                }
                if any { result.append((name, tags)) }
            }
            return (try catalog.tableIndex(txn, .services), result)
        }
    }

    /// /v1/catalog/service/<name>: each instance with its node; the service's index.
    public func catalogServiceInstances(_ name: String)
        throws -> (index: UInt64, instances: [(node: CatalogNode, service: CatalogService)]) {
        try environment.read { txn in
            var result: [(node: CatalogNode, service: CatalogService)] = []
            for service in try catalog.instances(txn, of: name) {
                guard let node = try catalog.node(txn, service.node) else { continue }
                result.append((node, service))
            }
            return (try catalog.serviceIndex(txn, name, withChecks: false), result)
        }
    }

    /// /v1/catalog/node/<node>: the node (nil when unknown) and its services; the index of the
    /// nodes and services tables.
    public func catalogNode(_ name: String)
        throws -> (index: UInt64, node: CatalogNode?, services: [CatalogService]) {
        try environment.read { txn in
            let index = try catalog.tableIndex(txn, [.nodes, .services])
            guard let node = try catalog.node(txn, name) else { return (index, nil, []) }
            var services: [CatalogService] = []
            try catalog.forEachService(txn, node: name) { services.append($0) }
            return (index, node, services)
        }
    }

    /// /v1/health/node/<node>: the node's checks; the checks table index.
    public func nodeChecks(_ node: String) throws -> (index: UInt64, checks: [CatalogCheck]) {
        try environment.read { txn in
            var checks: [CatalogCheck] = []
            try catalog.forEachCheck(txn, node: node) { checks.append($0) }
            return (try catalog.tableIndex(txn, .checks), checks)
        }
    }

    /// /v1/health/checks/<service>: the checks bound to instances of the service; the checks
    /// table index.
    public func serviceChecks(_ name: String, nodeFilter: ((CatalogNode) -> Bool)? = nil)
        throws -> (index: UInt64, checks: [CatalogCheck]) {
        try environment.read { txn in
            // One pass over each node's checks, however many instances the node runs.
            var idsByNode: [String: Set<String>] = [:]
            var nodeOrder: [String] = []
            for service in try catalog.instances(txn, of: name) {
                let node = CatalogLimits.folded(service.node)
                if idsByNode[node] == nil { nodeOrder.append(node) }
                idsByNode[node, default: []].insert(CatalogLimits.folded(service.id))
            }
            var checks: [CatalogCheck] = []
            for node in nodeOrder {
                if let nodeFilter, !(try catalog.node(txn, node).map(nodeFilter) ?? false) { continue }
                let ids = idsByNode[node]!
                try catalog.forEachCheck(txn, node: node) { check in
                    if !check.serviceID.isEmpty && ids.contains(CatalogLimits.folded(check.serviceID)) { checks.append(check) }
                }
            }
            return (try catalog.tableIndex(txn, .checks), checks)
        }
    }

    /// /v1/health/state/<state>: checks in `state` ("any" for all); the checks table index.
    public func checks(inState state: String, nodeFilter: ((CatalogNode) -> Bool)? = nil)
        throws -> (index: UInt64, checks: [CatalogCheck]) {
        try environment.read { txn in
            var checks: [CatalogCheck] = []
            var accepted: [String: Bool] = [:]
            try catalog.forEachCheck(txn) { check in
                guard state == "any" || check.status == state else { return }
                if let nodeFilter {
                    let key = CatalogLimits.folded(check.node)
                    if accepted[key] == nil { accepted[key] = try catalog.node(txn, check.node).map(nodeFilter) ?? false }
                    if accepted[key] == false { return }
                }
                checks.append(check)
            }
            return (try catalog.tableIndex(txn, .checks), checks)
        }
    }

    /// /v1/health/service/<name>: each instance with its node and the checks that count for
    /// it (its own and the node's, like serfHealth); the service's index.
    public func healthService(_ name: String) throws -> (index: UInt64, entries: [CatalogHealthEntry]) {
        try environment.read { txn in
            var entries: [CatalogHealthEntry] = []
            var nodeChecks: [String: [CatalogCheck]] = [:]
            for service in try catalog.instances(txn, of: name) {
                guard let node = try catalog.node(txn, service.node) else { continue }
                if nodeChecks[node.name] == nil {
                    var all: [CatalogCheck] = []
                    try catalog.forEachCheck(txn, node: node.name) { all.append($0) }
                    nodeChecks[node.name] = all
                }
                let checks = nodeChecks[node.name]!.filter { $0.serviceID.isEmpty || CatalogTables.same($0.serviceID, service.id) }
                entries.append(CatalogHealthEntry(node: node, service: service, checks: checks))
            }
            return (try catalog.serviceIndex(txn, name, withChecks: true), entries)
        }
    }
}
