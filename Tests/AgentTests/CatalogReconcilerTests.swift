// The leader's gossip → catalog reconcile as a pure diff: what it proposes for alive, failed,
// left and reaped members, what it leaves alone, and that a reconciled catalog needs nothing.
import Foundation
import Gossip
import GossipCore
import StateStore
import Storage
import Testing
@testable import Agent

@Suite("Catalog reconcile of gossip members")
struct CatalogReconcilerTests {
    func member(_ name: String, _ status: Int, address: String = "10.0.0.1:8301") -> GossipMemberStatus {
        GossipMemberStatus(member: Member(name: name, address: address, tags: ["id": "id-\(name)", "dc": "dc1", "role": "node"]),
                           serfStatus: status)
    }

    @Test func aServerAppearsAsTheConsulServiceOnItsNode() throws {
        let dir = NSTemporaryDirectory() + "/conclave-reconcile-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try StateStore(environment: try Environment(directory: dir, initialMapSizeBytes: 1 << 20, durability: .noMetaSync))
        let server = GossipMemberStatus(member: Member(name: "srv", address: "10.0.0.7:8301",
                                                       tags: ["id": "id-srv", "dc": "dc1", "role": "consul", "port": "8300"]),
                                        serfStatus: 1)
        let commands = try CatalogReconciler.commands(members: [server], catalog: store, datacenter: "dc1")
        guard commands.count == 1, case let .register(registration) = commands[0] else {
            Issue.record("expected one registration, got \(commands)")
            return
        }
        #expect(registration.service == CatalogService(node: "srv", id: "consul", service: "consul", port: 8300))
        #expect(registration.checks.map(\.checkID) == ["serfHealth"])
        _ = try store.apply([(1, commands[0].encoded())])
        #expect(try CatalogReconciler.commands(members: [server], catalog: store, datacenter: "dc1").isEmpty)
        // The server's own anti-entropy never removes it.
        #expect(AntiEntropy.plan(localServices: [:], localChecks: [:],
                                 catalogServices: ["consul": try #require(SyncedService(catalogJSON: ["ID": "consul", "Service": "consul", "Port": 8300]))],
                                 catalogChecks: [:]).isEmpty)
    }

    @Test func theCatalogFollowsThePoolAndASteadyPoolProposesNothing() throws {
        let dir = NSTemporaryDirectory() + "/conclave-reconcile-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let store = try StateStore(environment: try Environment(directory: dir, initialMapSizeBytes: 1 << 20, durability: .noMetaSync))
        var index: UInt64 = 0
        func apply(_ commands: [CatalogCommand]) throws {
            let batch = commands.map { command -> (index: UInt64, command: [UInt8]) in
                index += 1
                return (index, command.encoded())
            }
            let results = try store.apply(batch).results
            #expect(results.allSatisfy { $0 == .success(true) }, "\(results)")
        }
        // Already in the catalog: "left" (a member that left), "reaped" (gone from the pool, with
        // serfHealth), "external" (registered through the API, no serfHealth), "moved" (alive
        // member whose address changed).
        try apply([.memberAlive(CatalogNode(name: "left", id: "id-left", address: "10.0.0.3")),
                   .memberAlive(CatalogNode(name: "reaped", id: "id-reaped", address: "10.0.0.4")),
                   .register(CatalogRegistration(node: CatalogNode(name: "external", address: "192.0.2.1"))),
                   .memberAlive(CatalogNode(name: "moved", id: "id-moved", address: "10.0.0.5"))])
        let members = [member("alive", 1), member("failed", 4, address: "10.0.0.2:8301"), member("left", 3),
                       member("moved", 1, address: "10.0.0.9:8301"), member("leaving", 2),
                       GossipMemberStatus(member: Member(name: "otherdc", address: "10.9.9.9:8301", tags: ["dc": "dc2"]), serfStatus: 1)]
        let commands = try CatalogReconciler.commands(members: members, catalog: store, datacenter: "dc1")
        #expect(commands == [
            .memberAlive(CatalogNode(name: "alive", id: "id-alive", address: "10.0.0.1", datacenter: "dc1")),
            .memberFailed(CatalogNode(name: "failed", id: "id-failed", address: "10.0.0.2", datacenter: "dc1")),
            .memberLeft("left"),
            .memberAlive(try #require(try store.catalogNode("moved").node).with(address: "10.0.0.9")),
            .memberLeft("reaped"),
        ])
        try apply(commands)
        #expect(try store.catalogNode("external").node != nil, "nodes without serfHealth are not members")
        #expect(try store.nodeChecks("failed").checks.map(\.status) == [CatalogCheckStatus.critical])
        #expect(try store.nodeChecks("alive").checks.map(\.status) == [CatalogCheckStatus.passing])
        #expect(try store.catalogNode("moved").node?.address == "10.0.0.9")
        // Reconciled: the same pool proposes nothing more.
        #expect(try CatalogReconciler.commands(members: members, catalog: store, datacenter: "dc1").isEmpty)
    }
}

private extension CatalogNode {
    func with(address: String) -> CatalogNode {
        var copy = self
        copy.address = address
        return copy
    }
}
