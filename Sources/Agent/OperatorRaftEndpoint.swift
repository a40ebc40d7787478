// /v1/operator/raft: Consul's Raft operator API (configuration, remove-peer, transfer-leader).
// Raft server IDs are the first 8 bytes of the node ID (RaftServerID); the LAN pool's members
// carry the full node ID and the node name, which is what Consul shows.
import Foundation
import HTTP
import RaftCore
import Replication

extension HTTPAPI {
    func handleOperatorRaft(_ responder: HTTPResponder) {
        let path = responder.request.path
        let methods: [String]
        switch path {
        case "/v1/operator/raft/configuration": methods = ["GET"]
        case "/v1/operator/raft/peer": methods = ["DELETE"]
        case "/v1/operator/raft/transfer-leader": methods = ["POST"]
        default:
            responder.respond(.text(status: 404, "404 page not found"))
            return
        }
        guard allow(responder, methods), inLocalDatacenter(responder) else { return }
        guard config.server else {
            // Consul's clients forward these to a server over RPC; that forwarding is not built yet.
            responder.respond(.text(status: 500, "No known Consul servers"))
            return
        }
        switch path {
        case "/v1/operator/raft/configuration": raftConfiguration(responder)
        case "/v1/operator/raft/peer": raftRemovePeer(responder)
        default: raftTransferLeader(responder)
        }
    }

    /// Runs `body` with the replicator once this server has caught up with the leader's commit
    /// index (Consul's default mode), or at once with `?stale`.
    private func withRaftView(_ responder: HTTPResponder, stale: Bool, _ body: @escaping (RaftReplicator) -> Void) {
        guard let replicator = raft else { respondCommitError(responder, .notLeader(leaderAddress: nil)); return }
        if stale { body(replicator); return }
        holdForLeader({ (done: @escaping (Result<UInt64, RaftCommitError>) -> Void) in
            replicator.leaderReadBarrier(completion: done)
        }) { [weak self] result in
            switch result {
            case .success: body(replicator)
            case .failure(let error): self?.respondCommitError(responder, error)
            }
        }
    }

    private func raftConfiguration(_ responder: HTTPResponder) {
        let query = responder.request.query
        if query.has("stale") && query.has("consistent") {
            responder.respond(.text(status: 400, "Cannot specify ?stale with ?consistent, conflicting semantics."))
            return
        }
        withRaftView(responder, stale: query.has("stale")) { [weak self] replicator in
            guard let self else { return }
            let identities = self.gossip?.serverIdentities() ?? [:]
            let servers: [[String: Any]] = replicator.servers.map { server in
                let identity = identities[server.id]
                return ["ID": identity?.nodeID ?? RaftServerID.display(server.id),
                        "Node": identity?.name ?? "(unknown)",
                        "Address": server.address,
                        "Leader": server.leader,
                        "ProtocolVersion": "3",
                        "Voter": server.voter]
            }
            var response = HTTPResponse.json(status: 200, self.jsonBytes(["Servers": servers, "Index": Int(clamping: replicator.configurationIndex)]))
            self.addQueryMeta(&response, index: replicator.configurationIndex,
                              consistency: query.has("stale") ? "stale" : "leader")
            responder.respond(response)
        }
    }

    private func raftRemovePeer(_ responder: HTTPResponder) {
        let query = responder.request.query
        let id = query.first("id") ?? ""
        let address = query.first("address") ?? ""
        guard !id.isEmpty || !address.isEmpty else {
            responder.respond(.text(status: 400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"))
            return
        }
        withRaftView(responder, stale: false) { [weak self] replicator in
            guard let self else { return }
            let target: NodeID
            if !id.isEmpty {
                guard let found = self.resolveRaftServer(id: id, in: replicator) else {
                    responder.respond(.text(status: 500, "id \"\(id)\" was not found in the Raft configuration"))
                    return
                }
                target = found
            } else {
                guard let found = replicator.servers.first(where: { $0.address == address })?.id else {
                    responder.respond(.text(status: 500, "address \"\(address)\" was not found in the Raft configuration"))
                    return
                }
                target = found
            }
            self.logger.info("removing Raft peer on operator request", metadata: ["id": "\(RaftServerID.display(target))"])
            replicator.removePeer(target) { [weak self] result in
                switch result {
                case .success: responder.respond(HTTPResponse(status: 200))
                case .failure(let error): self?.respondOperatorError(responder, error)
                }
            }
        }
    }

    private func raftTransferLeader(_ responder: HTTPResponder) {
        let id = responder.request.query.first("id") ?? ""
        withRaftView(responder, stale: false) { [weak self] replicator in
            guard let self else { return }
            var target: NodeID?
            if !id.isEmpty {
                guard let found = self.resolveRaftServer(id: id, in: replicator) else {
                    responder.respond(.text(status: 500, "id \"\(id)\" was not found in the Raft configuration"))
                    return
                }
                target = found
            }
            replicator.transferLeadership(to: target) { [weak self] result in
                guard let self else { return }
                switch result {
                case .success: responder.respond(.json(status: 200, self.jsonBytes(["Success": true])))
                case .failure(let error): self.respondOperatorError(responder, error)
                }
            }
        }
    }

    /// A member of the configuration named by its node ID (the form the configuration shows),
    /// the 8-byte Raft ID prefix of one, or its node name.
    private func resolveRaftServer(id: String, in replicator: RaftReplicator) -> NodeID? {
        let members = Set(replicator.servers.map(\.id))
        if let raftID = RaftServerID.parse(id), members.contains(raftID) { return raftID }
        if let (raftID, _) = gossip?.serverIdentities().first(where: { $0.value.name == id }), members.contains(raftID) {
            return raftID
        }
        return nil
    }

    private func respondOperatorError(_ responder: HTTPResponder, _ error: RaftCommitError) {
        switch error {
        case .notLeader, .leadershipTransferInProgress, .overloaded:
            respondCommitError(responder, error)
        default:
            responder.respond(.text(status: 500, error.description))
        }
    }
}

extension RaftServerID {
    /// How an ID shows when no LAN member carries the full node ID: the node ID's first
    /// 8 bytes in UUID notation ("0102abcd-0506-0708").
    static func display(_ id: NodeID) -> String {
        let hex = String(id, radix: 16)
        let padded = String(repeating: "0", count: max(0, 16 - hex.count)) + hex
        let chars = Array(padded)
        return String(chars[0..<8]) + "-" + String(chars[8..<12]) + "-" + String(chars[12..<16])
    }

    /// A full node ID, or the 8-byte prefix as `display` writes it (dashes optional).
    static func parse(_ text: String) -> NodeID? {
        if let id = from(nodeID: text) { return id }
        let hex = text.replacingOccurrences(of: "-", with: "")
        guard hex.count == 16, let value = UInt64(hex, radix: 16) else { return nil }
        return value == 0 ? 1 : value
    }
}

extension AgentGossip {
    /// Servers of the LAN pool in any state (a failed server stays in the configuration until
    /// removed), by Raft ID: their node name and full node ID.
    func serverIdentities() -> [NodeID: (name: String, nodeID: String)] {
        var out: [NodeID: (name: String, nodeID: String)] = [:]
        for status in lan?.members ?? [] {
            let tags = status.member.tags
            guard tags["role"] == "consul", let nodeID = tags["id"], let raftID = RaftServerID.from(nodeID: nodeID) else { continue }
            out[raftID] = (status.member.name, nodeID)
        }
        return out
    }
}
