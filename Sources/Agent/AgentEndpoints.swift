// /v1/status/* and /v1/agent/*: what clients probe to find the leader and learn about the
// agent they talk to.
import Foundation
import Gossip
import HTTP
import Replication

extension HTTPAPI {
    /// The address other servers would reach this one at (Consul's advertise address).
    var raft: RaftReplicator? { log as? RaftReplicator }
    var isLeader: Bool { raft?.isLeader ?? false }

    var serverAddress: String {
        let host = (config.bindAddr == "0.0.0.0" || config.bindAddr == "::") ? "127.0.0.1" : config.bindAddr
        return "\(host):\(serverPort)"
    }

    func handleStatus(_ responder: HTTPResponder) {
        guard allow(responder, ["GET"]) else { return }
        guard inLocalDatacenter(responder) else { return }
        switch responder.request.path {
        case "/v1/status/leader":
            // The leader's server address; "" while none is known.
            responder.respond(.json(status: 200, jsonBytes(log?.leaderAddress ?? "")))
        case "/v1/status/peers":
            responder.respond(.json(status: 200, jsonBytes(log?.voterAddresses ?? [])))
        default:
            responder.respond(.text(status: 404, "404 page not found"))
        }
    }

    func handleAgent(_ responder: HTTPResponder) {
        switch responder.request.path {
        case "/v1/agent/self":
            guard allow(responder, ["GET"]) else { return }
            responder.respond(.json(status: 200, jsonBytes(agentSelf())))
        case "/v1/agent/leave":
            guard allow(responder, ["PUT"]) else { return }
            logger.info("graceful leave requested over HTTP")
            // Consul answers once the agent has left the gossip pools; the agent then stops.
            if let gossip {
                gossip.leave { [self] in
                    responder.respond(HTTPResponse(status: 200))
                    requestLeave()
                }
            } else {
                responder.respond(HTTPResponse(status: 200))
                requestLeave()
            }
        case "/v1/agent/metrics":
            guard allow(responder, ["GET"]) else { return }
            handleMetrics(responder)
        case "/v1/agent/members":
            guard allow(responder, ["GET"]) else { return }
            handleMembers(responder)
        case let path where path.hasPrefix("/v1/agent/join/"):
            guard allow(responder, ["PUT"]) else { return }
            handleJoin(responder, address: String(path.dropFirst("/v1/agent/join/".count)))
        case let path where path.hasPrefix("/v1/agent/force-leave/"):
            guard allow(responder, ["PUT"]) else { return }
            handleForceLeave(responder, node: String(path.dropFirst("/v1/agent/force-leave/".count)))
        default:
            if handleAgentLocal(responder) { return }
            responder.respond(.text(status: 404, "404 page not found"))
        }
    }

    /// Consul's /v1/agent/self shape: Config, Member, Stats (string values), Meta.
    func agentSelf() -> [String: Any] {
        let advertise = serverAddress.split(separator: ":").first.map(String.init) ?? "127.0.0.1"
        let tags: [String: String] = [
            "role": config.server ? "consul" : "node",
            "dc": config.datacenter,
            "id": nodeID,
            "port": String(config.ports.server),
            "build": "\(ConclaveVersion.version):\(ConclaveVersion.revision)",
            "vsn": "2", "vsn_min": "2", "vsn_max": "3",
            "bootstrap": config.bootstrap ? "1" : "0",
            "expect": String(config.bootstrapExpect),
        ]
        let uptimeSeconds = (loop.nowMilliseconds - startedAt) / 1000
        return [
            "Config": [
                "Datacenter": config.datacenter,
                "PrimaryDatacenter": config.datacenter,
                "NodeName": config.nodeName,
                "NodeID": nodeID,
                "Server": config.server,
                "Revision": ConclaveVersion.revision,
                "Version": ConclaveVersion.version,
                "VersionPrerelease": "",
                "BuildDate": "",
            ] as [String: Any],
            "DebugConfig": [
                "DataDir": config.dataDir ?? "",
                "ClientAddrs": [config.clientAddr],
                "HTTPPort": httpPort,
                "DNSPort": config.ports.dns,
                "ServerPort": config.ports.server,
                "SerfPortLAN": gossip?.lan?.port ?? config.ports.serfLAN,
                "SerfPortWAN": gossip?.wan?.port ?? config.ports.serfWAN,
                "BootstrapExpect": config.bootstrapExpect,
                "DevMode": config.dev,
                "LogLevel": config.logLevel.uppercased(),
            ] as [String: Any],
            "Coord": NSNull(),
            "Member": [
                "Name": config.nodeName,
                "Addr": gossip?.lan.map { AgentGossip.host(of: $0.advertiseAddress) } ?? advertise,
                "Port": gossip?.lan?.port ?? config.ports.serfLAN,
                "Tags": gossip?.lan?.members.first { $0.member.name == config.nodeName }?.member.tags ?? tags,
                "Status": 1,
                "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
            ] as [String: Any],
            "Stats": [
                "agent": ["checks": String(localState?.checks.count ?? 0), "services": String(localState?.services.count ?? 0)],
                "build": ["version": ConclaveVersion.version, "revision": ConclaveVersion.revision, "prerelease": ""],
                "consul": [
                    "server": String(config.server),
                    "leader": String(isLeader),
                    "leader_addr": log?.leaderAddress ?? "",
                    "bootstrap": String(config.bootstrap),
                    "known_datacenters": "1",
                ],
                "raft": [
                    "state": isLeader ? "Leader" : "Follower",
                    "applied_index": String(log?.lastAppliedIndex ?? 0),
                    "commit_index": String(raft?.commitIndex ?? log?.lastAppliedIndex ?? 0),
                    "num_peers": String(max(0, (log?.voterAddresses.count ?? 1) - 1)),
                    "term": String(raft?.term ?? 0),
                    "last_snapshot_index": String(raft?.lastSnapshotIndex ?? 0),
                    "last_snapshot_term": String(raft?.lastSnapshotTerm ?? 0),
                ],
                "serf_lan": serfStats(gossip?.lan),
                "serf_wan": serfStats(gossip?.wan),
                "runtime": [
                    "arch": "amd64", "os": "linux",
                    "cpu_count": String(ProcessInfo.processInfo.activeProcessorCount),
                    "uptime_seconds": String(uptimeSeconds),
                ],
            ] as [String: Any],
            "Meta": [String: String](),
        ]
    }

    /// Consul's Stats.serf_lan / serf_wan (the counters we have), all strings.
    func serfStats(_ pool: GossipPool?) -> [String: String] {
        guard let pool else { return [:] }
        let members = pool.members
        return [
            "members": String(members.count),
            "failed": String(members.filter { $0.serfStatus == 4 }.count),
            "left": String(members.filter { $0.serfStatus == 3 }.count),
            "health_score": String(pool.healthScore),
            "encrypted": String(pool.isEncrypted),
            "decrypt_failures": String(pool.decryptFailures),
        ]
    }

    func jsonBytes(_ object: Any) -> [UInt8] {
        let options: JSONSerialization.WritingOptions = [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: options) else {
            preconditionFailure("agent JSON is built from plain values and always serializes")
        }
        return Array(data)
    }
}

public enum ConclaveVersion {
    /// A plain version number, as Consul reports in /v1/agent/self Config.Version.
    public static let version = "0.1.0"
    public static let revision = "dev"
}
