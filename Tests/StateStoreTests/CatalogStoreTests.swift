// Catalog semantics (Consul's agent/consul/state/catalog.go): register and deregister of
// nodes, services and checks, the per-table and per-service indexes, and what an applied
// batch reports as changed.
import StateStore
import Storage
import Testing

/// Applies catalog commands at consecutive indexes.
final class CatalogDriver {
    let store: StateStore
    private(set) var index: UInt64 = 0
    private(set) var lastBatch: AppliedBatch?

    init(_ environment: Environment) throws { store = try StateStore(environment: environment) }

    @discardableResult
    func run(_ command: CatalogCommand) throws -> ApplyResult {
        index += 1
        let batch = try store.apply([(index: index, command: command.encoded())])
        lastBatch = batch
        return batch.results[0]
    }

    func kv(_ command: KVCommand) throws {
        index += 1
        lastBatch = try store.apply([(index: index, command: command.encoded())])
    }
}

func withCatalog<T>(_ body: (CatalogDriver) throws -> T) throws -> T {
    try withTemporaryDirectory { path throws in
        let environment = try Environment(directory: path, initialMapSizeBytes: 1 << 20, durability: .noMetaSync)
        defer { environment.close() }
        return try body(try CatalogDriver(environment))
    }
}

func node(_ name: String, address: String = "10.0.0.1", meta: [String: String] = [:]) -> CatalogNode {
    CatalogNode(name: name, address: address, datacenter: "dc1", meta: meta)
}

func register(_ nodeName: String, service: String? = nil, id: String? = nil, tags: [String] = [],
              checks: [CatalogCheck] = [], skipNodeUpdate: Bool = false) -> CatalogCommand {
    .register(CatalogRegistration(
        node: node(nodeName), skipNodeUpdate: skipNodeUpdate,
        service: service.map { CatalogService(node: nodeName, id: id ?? $0, service: $0, tags: tags, port: 80) },
        checks: checks))
}

@Suite struct CatalogStoreTests {
    @Test func registerCreatesNodeServiceAndChecksWithIndexes() throws {
        try withCatalog { c throws in
            let check = CatalogCheck(node: "n1", checkID: "web-alive", name: "web alive", status: CatalogCheckStatus.passing,
                                     serviceID: "web")
            #expect(try c.run(register("n1", service: "web", tags: ["v1"], checks: [check])) == .success(true))
            let (nodesIndex, nodes) = try c.store.catalogNodes()
            #expect(nodes.map(\.name) == ["n1"])
            #expect(nodes[0].createIndex == 1 && nodes[0].modifyIndex == 1)
            #expect(nodesIndex == 1)
            let (serviceIndex, instances) = try c.store.catalogServiceInstances("web")
            #expect(serviceIndex == 1)
            #expect(instances.map(\.service.id) == ["web"])
            let checks = try c.store.nodeChecks("n1").checks
            #expect(checks.count == 1)
            #expect(checks[0].serviceName == "web", "the service name is copied into the check")
            #expect(checks[0].serviceTags == ["v1"])
            #expect(c.lastBatch?.changedCatalogTables == [.nodes, .services, .checks])
            #expect(c.lastBatch?.changedServiceNames == ["web"])
        }
    }

    @Test func aCheckForAMissingServiceFailsAndWritesNothing() throws {
        try withCatalog { c throws in
            let check = CatalogCheck(node: "n1", checkID: "c", serviceID: "nope")
            #expect(try c.run(register("n1", checks: [check])) == .failed("Missing service registration"))
            #expect(try c.store.catalogNodes().nodes.isEmpty, "a failed registration leaves no node behind")
            #expect(c.lastBatch?.changedCatalogTables == [])
        }
    }

    @Test func aCheckMayNameAServiceRegisteredEarlier() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web"))
            let check = CatalogCheck(node: "n1", checkID: "c", status: "", serviceID: "web")
            #expect(try c.run(register("n1", checks: [check])) == .success(true))
            let stored = try #require(try c.store.nodeChecks("n1").checks.first)
            #expect(stored.status == CatalogCheckStatus.critical, "an empty status defaults to critical")
            #expect(stored.serviceName == "web")
        }
    }

    @Test func anUnchangedRegistrationMovesNoIndex() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web"))
            try c.run(register("n1", service: "web"))
            #expect(try c.store.catalogNodes().index == 1)
            #expect(try c.store.catalogServiceInstances("web").index == 1)
            #expect(c.lastBatch?.changedCatalogTables == [])
            #expect(c.lastBatch?.changedServiceNames == [])
        }
    }

    @Test func updatesKeepCreateIndex() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web", tags: ["a"]))
            try c.run(register("n1", service: "web", tags: ["b"]))
            let service = try #require(try c.store.catalogServiceInstances("web").instances.first?.service)
            #expect(service.createIndex == 1)
            #expect(service.modifyIndex == 2)
            #expect(service.tags == ["b"])
        }
    }

    @Test func aChangeToOneServiceDoesNotMoveAnotherServicesIndex() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web"))
            try c.run(register("n2", service: "db"))
            #expect(try c.store.catalogServiceInstances("web").index == 1)
            #expect(try c.store.healthService("web").index == 1)
            #expect(try c.store.catalogServiceInstances("db").index == 2)
            #expect(c.lastBatch?.changedServiceNames == ["db"])
        }
    }

    @Test func aNodeCheckCountsForEveryServiceOfTheNode() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web"))
            try c.run(register("n1", service: "api"))
            try c.run(register("n2", service: "db"))
            let serf = CatalogCheck(node: "n1", checkID: "serfHealth", name: "Serf Health Status",
                                    status: CatalogCheckStatus.critical, type: "serf")
            try c.run(register("n1", checks: [serf], skipNodeUpdate: true))
            #expect(Set(c.lastBatch?.changedServiceNames ?? []) == ["web", "api"])
            #expect(try c.store.healthService("web").index == 4)
            #expect(try c.store.healthService("db").index == 3)
            let entry = try #require(try c.store.healthService("web").entries.first)
            #expect(entry.checks.map(\.checkID) == ["serfHealth"])
        }
    }

    @Test func skipNodeUpdateLeavesTheNodeAlone() throws {
        try withCatalog { c throws in
            try c.run(.register(CatalogRegistration(node: node("n1", address: "10.0.0.9"))))
            try c.run(.register(CatalogRegistration(node: node("n1", address: ""), skipNodeUpdate: true)))
            #expect(try c.store.catalogNode("n1").node?.address == "10.0.0.9")
            #expect(try c.store.catalogNodes().index == 1)
        }
    }

    @Test func deregisteringANodeRemovesItsServicesAndChecks() throws {
        try withCatalog { c throws in
            let check = CatalogCheck(node: "n1", checkID: "c1", serviceID: "web")
            let serf = CatalogCheck(node: "n1", checkID: "serfHealth", status: CatalogCheckStatus.passing)
            try c.run(register("n1", service: "web", checks: [check, serf]))
            try c.run(register("n2", service: "web", id: "web-2"))
            #expect(try c.run(.deregisterNode(node: "n1")) == .success(true))
            #expect(try c.store.catalogNodes().nodes.map(\.name) == ["n2"])
            #expect(try c.store.catalogServiceInstances("web").instances.map(\.service.id) == ["web-2"])
            #expect(try c.store.nodeChecks("n1").checks.isEmpty)
            #expect(try c.store.checks(inState: "any").checks.isEmpty)
            #expect(c.lastBatch?.changedCatalogTables == [.nodes, .services, .checks])
            #expect(try c.store.catalogServiceInstances("web").index == 3)
        }
    }

    @Test func deregisteringAServiceRemovesItsChecksButNotTheNodes() throws {
        try withCatalog { c throws in
            let check = CatalogCheck(node: "n1", checkID: "c1", serviceID: "web")
            let serf = CatalogCheck(node: "n1", checkID: "serfHealth", status: CatalogCheckStatus.passing)
            try c.run(register("n1", service: "web", checks: [check, serf]))
            try c.run(.deregisterService(node: "n1", serviceID: "web"))
            #expect(try c.store.nodeChecks("n1").checks.map(\.checkID) == ["serfHealth"])
            #expect(try c.store.catalogServices().services.isEmpty)
            #expect(try c.store.catalogNode("n1").node != nil)
        }
    }

    @Test func deregisteringMissingThingsSucceedsAndChangesNothing() throws {
        try withCatalog { c throws in
            try c.run(register("n1"))
            #expect(try c.run(.deregisterNode(node: "ghost")) == .success(true))
            #expect(try c.run(.deregisterService(node: "n1", serviceID: "ghost")) == .success(true))
            #expect(try c.run(.deregisterCheck(node: "n1", checkID: "ghost")) == .success(true))
            #expect(c.lastBatch?.changedCatalogTables == [])
            #expect(try c.store.catalogNodes().index == 1)
        }
    }

    @Test func aGoneServiceReportsTheExtinctionIndexSoTheIndexNeverGoesBack() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web"))
            try c.run(register("n2", service: "db"))
            let before = try c.store.healthService("web").index
            try c.run(.deregisterService(node: "n1", serviceID: "web"))
            let after = try c.store.healthService("web").index
            #expect(after == 3)
            #expect(after > before)
            #expect(try c.store.catalogServiceInstances("never-existed").index == 3)
            #expect(c.lastBatch?.changedServiceNames == ["web"])
        }
    }

    @Test func renamingAServiceInstanceMovesItBetweenNames() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web", id: "inst"))
            try c.run(register("n1", service: "api", id: "inst"))
            #expect(try c.store.catalogServiceInstances("web").instances.isEmpty)
            #expect(try c.store.catalogServiceInstances("api").instances.count == 1)
            #expect(Set(c.lastBatch?.changedServiceNames ?? []) == ["web", "api"])
        }
    }

    @Test func nodeIDsMustNotAliasAnotherNode() throws {
        try withCatalog { c throws in
            let id = "3f2a8b4c-1d2e-4f5a-9b6c-7d8e9f0a1b2c"
            try c.run(.register(CatalogRegistration(node: CatalogNode(name: "a", id: id, address: "1.1.1.1"))))
            let result = try c.run(.register(CatalogRegistration(node: CatalogNode(name: "b", id: id, address: "1.1.1.2"))))
            guard case .failed(let message) = result else {
                Issue.record("expected a failure, got \(result)")
                return
            }
            #expect(message.contains("aliases existing node \"a\""))
            // Deregistering the owner frees the ID.
            try c.run(.deregisterNode(node: "a"))
            #expect(try c.run(.register(CatalogRegistration(node: CatalogNode(name: "b", id: id, address: "1.1.1.2")))) == .success(true))
        }
    }

    @Test func invalidNamesFailWithReasons() throws {
        try withCatalog { c throws in
            #expect(try c.run(register("")) == .failed("Missing node name"))
            #expect(try c.run(register("a\u{0}b")) == .failed("node name contains a NUL byte"))
            let long = String(repeating: "x", count: CatalogLimits.maxNameBytes + 1)
            #expect(try c.run(register(long)) == .failed("node name too long: 161 bytes, at most 160"))
            #expect(try c.run(register("n", service: long)) == .failed("service ID too long: 161 bytes, at most 160"))
            #expect(try c.store.catalogNodes().nodes.isEmpty)
        }
    }

    @Test func servicesListMergesTagsAndFiltersByNodeMeta() throws {
        try withCatalog { c throws in
            try c.run(.register(CatalogRegistration(node: node("n1", meta: ["rack": "a"]),
                                                    service: CatalogService(node: "n1", id: "w1", service: "web", tags: ["x", "y"]))))
            try c.run(.register(CatalogRegistration(node: node("n2", meta: ["rack": "b"]),
                                                    service: CatalogService(node: "n2", id: "w2", service: "web", tags: ["y", "z"]))))
            try c.run(.register(CatalogRegistration(node: node("n2", meta: ["rack": "b"]),
                                                    service: CatalogService(node: "n2", id: "db", service: "db"))))
            let all = try c.store.catalogServices().services
            #expect(all.map(\.name) == ["db", "web"])
            #expect(all[1].tags == ["x", "y", "z"])
            let rackA = try c.store.catalogServices(nodeFilter: { $0.meta["rack"] == "a" }).services
            #expect(rackA.map(\.name) == ["web"])
            #expect(rackA[0].tags == ["x", "y"])
        }
    }

    @Test func healthQueriesByServiceAndState() throws {
        try withCatalog { c throws in
            try c.run(register("n1", service: "web", checks: [
                CatalogCheck(node: "n1", checkID: "w", status: CatalogCheckStatus.warning, serviceID: "web"),
                CatalogCheck(node: "n1", checkID: "serfHealth", status: CatalogCheckStatus.passing),
            ]))
            #expect(try c.store.serviceChecks("web").checks.map(\.checkID) == ["w"])
            #expect(try c.store.checks(inState: CatalogCheckStatus.warning).checks.map(\.checkID) == ["w"])
            #expect(try c.store.checks(inState: CatalogCheckStatus.passing).checks.map(\.checkID) == ["serfHealth"])
            #expect(try c.store.checks(inState: "any").checks.count == 2)
            #expect(try c.store.serviceChecks("nope").checks.isEmpty)
        }
    }

    @Test func namesMatchCaseInsensitivelyAndKeepTheirSpelling() throws {
        try withCatalog { c throws in
            try c.run(.register(CatalogRegistration(
                node: node("Node-A"), service: CatalogService(node: "Node-A", id: "Web-1", service: "Web"),
                checks: [CatalogCheck(node: "Node-A", checkID: "Alive", status: CatalogCheckStatus.passing, serviceID: "web-1")])))
            #expect(c.lastBatch?.changedServiceNames == ["web"], "watch scopes use the folded name")
            let entry = try #require(try c.store.healthService("WEB").entries.first)
            #expect(entry.node.name == "Node-A")
            #expect(entry.service.service == "Web")
            #expect(entry.checks.map(\.checkID) == ["Alive"])
            #expect(try c.store.catalogNode("node-a").services.map(\.id) == ["Web-1"])
            #expect(try c.store.catalogServices().services.map(\.name) == ["Web"])
            // The same node in another case is the same node.
            try c.run(.register(CatalogRegistration(node: node("NODE-A", address: "10.9.9.9"))))
            #expect(try c.store.catalogNodes().nodes.map(\.name) == ["NODE-A"])
            try c.run(.deregisterService(node: "node-a", serviceID: "WEB-1"))
            #expect(try c.store.healthService("web").entries.isEmpty)
            #expect(try c.store.nodeChecks("Node-A").checks.isEmpty, "the service's check went with it")
        }
    }

    @Test func theLeadersSerfHealthCommandsDriveAMembersHealth() throws {
        try withCatalog { c throws in
            let member = CatalogNode(name: "client-1", id: "3f2a8b4c-1d2e-4f5a-9b6c-7d8e9f0a1b2c", address: "10.0.0.7",
                                     datacenter: "dc1", meta: ["consul-network-segment": ""])
            try c.run(.memberAlive(member))
            try c.run(register("client-1", service: "web"))
            var serf = try #require(try c.store.healthService("web").entries.first?.checks.first)
            #expect(serf.checkID == SerfHealth.checkID && serf.status == CatalogCheckStatus.passing)
            // Failure: the check turns critical, the node's fields stay as the agent registered them.
            try c.run(.memberFailed(CatalogNode(name: "client-1", address: "")))
            serf = try #require(try c.store.healthService("web").entries.first?.checks.first)
            #expect(serf.status == CatalogCheckStatus.critical)
            #expect(serf.output == SerfHealth.failedOutput)
            #expect(try c.store.catalogNode("client-1").node?.address == "10.0.0.1")
            #expect(try c.store.checks(inState: CatalogCheckStatus.critical).checks.map(\.checkID) == [SerfHealth.checkID])
            // Leaving removes the node with its services and checks.
            try c.run(.memberLeft("client-1"))
            #expect(try c.store.catalogNodes().nodes.isEmpty)
            #expect(try c.store.healthService("web").entries.isEmpty)
        }
    }

    @Test func aStateSnapshotCarriesTheCatalog() throws {
        try withCatalog { source throws in
            try source.run(register("n1", service: "web", checks: [CatalogCheck(node: "n1", checkID: "c", serviceID: "web")]))
            try source.run(register("n2", service: "db"))
            try source.run(.deregisterService(node: "n2", serviceID: "db"))
            let (_, dump) = try StateSnapshot.dump(source.store.environment)
            try withCatalog { target throws in
                try target.run(register("stale", service: "old"))
                #expect(try StateSnapshot.load(dump, into: target.store.environment) == .loaded(appliedIndex: 3))
                #expect(try target.store.catalogNodes().nodes.map(\.name) == ["n1", "n2"])
                #expect(try target.store.healthService("web").entries.first?.checks.map(\.checkID) == ["c"])
                #expect(try target.store.catalogServiceInstances("old").instances.isEmpty)
                #expect(try target.store.healthService("db").index == 3, "the extinction index came along")
                #expect(try target.store.catalogNodes().index == source.store.catalogNodes().index)
            }
        }
    }

    @Test func catalogAndKVShareTheAppliedIndexAndBatch() throws {
        try withCatalog { c throws in
            try c.kv(.set(key: "k", value: [1], flags: 0))
            try c.run(register("n1"))
            #expect(try c.store.appliedIndex() == 2)
            #expect(try c.store.get("k").index == 1, "a catalog write does not move the KV index")
            let batch = try c.store.apply([
                (index: 3, command: KVCommand.set(key: "k2", value: [2], flags: 0).encoded()),
                (index: 4, command: register("n2", service: "web").encoded()),
            ])
            #expect(batch.results == [.success(true), .success(true)])
            #expect(batch.changedKeys == ["k2"])
            #expect(batch.changedServiceNames == ["web"])
        }
    }

    @Test func undecodableCatalogCommandsFailWithoutStoppingTheBatch() throws {
        try withCatalog { c throws in
            let batch = try c.store.apply([
                (index: 1, command: [0x20, 0xff]),
                (index: 2, command: [0x2F]),
                (index: 3, command: register("n1").encoded()),
            ])
            guard case .failed = batch.results[0], case .failed(let unknown) = batch.results[1] else {
                Issue.record("expected failures, got \(batch.results)")
                return
            }
            #expect(unknown == "malformed command: unknown catalog tag 47")
            #expect(batch.results[2] == .success(true))
        }
    }
}
