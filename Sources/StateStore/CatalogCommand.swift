// The catalog commands carried in the replicated log (Consul's Catalog.Register and
// Catalog.Deregister RPCs), tags 0x20…0x2F. KV commands use 1…5 and Raft reserves 0xFF, so
// StateStore.apply dispatches on the first byte. Field encoding: CatalogRecords.swift.

public struct CatalogRegistration: Sendable, Equatable {
    /// The node (its indexes are ignored: the store assigns them).
    public var node: CatalogNode
    /// Consul's SkipNodeUpdate: leave an existing node's fields alone (the leader's serfHealth
    /// updates use it so they do not overwrite what the agent registered).
    public var skipNodeUpdate: Bool
    public var service: CatalogService?
    /// Checks of this node; a check with a ServiceID needs that service on the node (in this
    /// registration or already registered).
    public var checks: [CatalogCheck]

    public init(node: CatalogNode, skipNodeUpdate: Bool = false, service: CatalogService? = nil,
                checks: [CatalogCheck] = []) {
        self.node = node
        self.skipNodeUpdate = skipNodeUpdate
        self.service = service
        self.checks = checks
    }
}

public enum CatalogCommand: Sendable, Equatable {
    /// PUT /v1/catalog/register
    case register(CatalogRegistration)
    /// PUT /v1/catalog/deregister with only Node: the node, its services and checks.
    case deregisterNode(node: String)
    /// … with ServiceID: the service instance and its checks.
    case deregisterService(node: String, serviceID: String)
    /// … with CheckID: one check.
    case deregisterCheck(node: String, checkID: String)

    /// First bytes this command family owns.
    public static let tags: ClosedRange<UInt8> = 0x20...0x2F

    private enum Tag: UInt8 {
        case register = 0x20, deregisterNode = 0x21, deregisterService = 0x22, deregisterCheck = 0x23
    }

    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case let .register(registration):
            writer.byte(Tag.register.rawValue)
            writer.node(registration.node)
            writer.byte((registration.skipNodeUpdate ? 1 : 0) | (registration.service != nil ? 2 : 0))
            if let service = registration.service { writer.service(service) }
            writer.varint(UInt64(registration.checks.count))
            for check in registration.checks { writer.check(check) }
        case let .deregisterNode(node):
            writer.byte(Tag.deregisterNode.rawValue)
            writer.string(node)
        case let .deregisterService(node, serviceID):
            writer.byte(Tag.deregisterService.rawValue)
            writer.string(node)
            writer.string(serviceID)
        case let .deregisterCheck(node, checkID):
            writer.byte(Tag.deregisterCheck.rawValue)
            writer.string(node)
            writer.string(checkID)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(StateStoreError) {
        var reader = ByteReader(bytes)
        let tagByte = try reader.byte("tag")
        guard let tag = Tag(rawValue: tagByte) else {
            throw StateStoreError.malformedCommand("unknown catalog tag \(tagByte)")
        }
        switch tag {
        case .register:
            let node = try reader.node()
            let flags = try reader.byte("flags")
            guard flags & ~3 == 0 else { throw StateStoreError.malformedCommand("unknown flags \(flags)") }
            var service: CatalogService?
            if flags & 2 != 0 { service = try reader.service() }
            let count = try reader.count("checks")
            var checks: [CatalogCheck] = []
            checks.reserveCapacity(count)
            for _ in 0..<count { checks.append(try reader.check()) }
            self = .register(CatalogRegistration(node: node, skipNodeUpdate: flags & 1 != 0, service: service, checks: checks))
        case .deregisterNode:
            self = .deregisterNode(node: try reader.string("node name"))
        case .deregisterService:
            self = .deregisterService(node: try reader.string("node name"), serviceID: try reader.string("service ID"))
        case .deregisterCheck:
            self = .deregisterCheck(node: try reader.string("node name"), checkID: try reader.string("check ID"))
        }
        try reader.end()
    }
}

/// Consul's serfHealth check (agent/structs: SerfCheckID, SerfCheckName, …): the leader's
/// view of a member's gossip health, which counts for every service on the node.
public enum SerfHealth {
    public static let checkID = "serfHealth"
    public static let checkName = "Serf Health Status"
    public static let aliveOutput = "Agent alive and reachable"
    public static let failedOutput = "Agent not live or unreachable"
}

extension CatalogCommand {
    /// The leader's registration for a live member (Consul's handleAliveMember): the node as
    /// gossip knows it, with a passing serfHealth.
    public static func memberAlive(_ node: CatalogNode) -> CatalogCommand {
        .register(CatalogRegistration(node: node, checks: [
            CatalogCheck(node: node.name, checkID: SerfHealth.checkID, name: SerfHealth.checkName,
                         status: CatalogCheckStatus.passing, output: SerfHealth.aliveOutput),
        ]))
    }

    /// A failed member (Consul's handleFailedMember): serfHealth critical, the node's fields
    /// left as registered (SkipNodeUpdate), so its services stay listed but unhealthy.
    public static func memberFailed(_ node: CatalogNode) -> CatalogCommand {
        .register(CatalogRegistration(node: node, skipNodeUpdate: true, checks: [
            CatalogCheck(node: node.name, checkID: SerfHealth.checkID, name: SerfHealth.checkName,
                         status: CatalogCheckStatus.critical, output: SerfHealth.failedOutput),
        ]))
    }

    /// A member that left or was reaped (Consul's handleLeftMember): the node and everything on it.
    public static func memberLeft(_ node: String) -> CatalogCommand { .deregisterNode(node: node) }
}
