// The leader keeps the catalog in step with the LAN gossip pool (Consul's leader reconcile of
// serf members, agent/consul/leader.go — facts only): every member has a node entry with a
// `serfHealth` check, passing while the member is alive and critical once gossip declares it
// failed; a member that left, or was reaped from the pool, is deregistered with everything on
// it. Nodes without a serfHealth check (external services registered through
// /v1/catalog/register) are not members and are left alone.
//
// It compares the pool with the catalog and proposes only the differences, so a steady cluster
// writes nothing; one round of commands is in flight at a time, and a failed round is simply
// retried by the next pass (every pass recomputes from scratch, so nothing is lost).
import GossipCore
import Gossip
import Logging
import Replication
import StateStore

/// Loop-confined.
final class CatalogReconciler {
    private let datacenter: String
    private let logger: Logger
    private var outstanding = 0

    init(datacenter: String, logger: Logger) {
        self.datacenter = datacenter
        self.logger = logger
    }

    /// One pass; call on the leader only (a follower's proposals would be forwarded, racing the
    /// leader's own view of the pool).
    func reconcile(members: [GossipMemberStatus], log: any ReplicatedLog) {
        guard outstanding == 0 else { return }
        let commands: [CatalogCommand]
        do {
            commands = try Self.commands(members: members, catalog: log.reader, datacenter: datacenter)
        } catch {
            logger.warning("catalog reconcile: cannot read the catalog", metadata: ["error": "\(error)"])
            return
        }
        guard !commands.isEmpty else { return }
        outstanding = commands.count
        for command in commands {
            log.append(command.encoded()) { [weak self] result in
                guard let self else { return }
                self.outstanding -= 1
                switch result {
                case .success(let outcome):
                    if case .failed(let reason) = outcome.result {
                        self.logger.warning("catalog reconcile: command refused", metadata: ["error": "\(reason)"])
                    }
                case .failure(let error):
                    self.logger.debug("catalog reconcile: command failed, next pass retries", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// What to propose so the catalog matches the pool. Pure apart from reading `catalog`.
    static func commands(members: [GossipMemberStatus], catalog: StateStore, datacenter: String) throws -> [CatalogCommand] {
        let nodes = try catalog.catalogNodes().nodes
        var nodeByName: [String: CatalogNode] = [:]
        for node in nodes { nodeByName[CatalogLimits.folded(node.name)] = node }
        var serfHealth: [String: String] = [:]  // folded node name → status
        for check in try catalog.checks(inState: "any").checks where check.checkID == SerfHealth.checkID {
            serfHealth[CatalogLimits.folded(check.node)] = check.status
        }
        var commands: [CatalogCommand] = []
        var memberNames = Set<String>()
        for status in members {
            let member = status.member
            if let dc = member.tags["dc"], dc != datacenter { continue }
            let key = CatalogLimits.folded(member.name)
            memberNames.insert(key)
            let existing = nodeByName[key]
            let host = AgentGossip.host(of: member.address)
            switch status.serfStatus {
            case 1:  // alive
                let consul = consulService(member)
                if let existing, existing.address == host, serfHealth[key] == CatalogCheckStatus.passing,
                   try consul.map({ wanted in try catalog.catalogNode(member.name).services.contains { $0.id == wanted.id && $0.port == wanted.port } }) ?? true {
                    continue
                }
                var node = existing ?? CatalogNode(name: member.name, id: member.tags["id"] ?? "", address: host,
                                                   datacenter: datacenter)
                node.address = host
                if node.id.isEmpty { node.id = member.tags["id"] ?? "" }
                var command = CatalogCommand.memberAlive(node)
                if let consul, case .register(var registration) = command {
                    registration.service = consul
                    command = .register(registration)
                }
                commands.append(command)
            case 4:  // failed
                if serfHealth[key] == CatalogCheckStatus.critical { continue }
                let node = existing ?? CatalogNode(name: member.name, id: member.tags["id"] ?? "", address: host,
                                                   datacenter: datacenter)
                commands.append(.memberFailed(node))
            case 3:  // left
                if existing != nil { commands.append(.memberLeft(existing!.name)) }
            default:  // leaving: wait for left
                continue
            }
        }
        return commands + reaped(nodes: nodes, serfHealth: serfHealth, memberNames: memberNames)
    }

    /// Servers (role "consul" with a server port) appear as the `consul` service on their
    /// node, as in Consul (clients and DNS find servers that way).
    static func consulService(_ member: Member) -> CatalogService? {
        guard member.tags["role"] == "consul", let port = member.tags["port"].flatMap(Int.init), port > 0 else { return nil }
        return CatalogService(node: member.name, id: AntiEntropy.consulServiceID, service: "consul", port: port)
    }

    static func reaped(nodes: [CatalogNode], serfHealth: [String: String], memberNames: Set<String>) -> [CatalogCommand] {
        var commands: [CatalogCommand] = []
        // Reaped: gone from the pool altogether, but still carrying the leader's serfHealth.
        for node in nodes where serfHealth[CatalogLimits.folded(node.name)] != nil
            && !memberNames.contains(CatalogLimits.folded(node.name)) {
            commands.append(.memberLeft(node.name))
        }
        return commands
    }
}
