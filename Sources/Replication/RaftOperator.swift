// The operator surface of the replicator (Consul's /v1/operator/raft): the servers of the
// configuration, removing a server and handing leadership over (thesis §3.10). A follower
// forwards removals and transfers to the leader, as Consul's servers forward the RPC.
import EventLoop
import RaftCore

/// One server of the Raft configuration, as this server sees it.
public struct RaftServerStatus: Sendable, Equatable {
    public var id: NodeID
    /// "host:port" of its Raft transport; "" when unknown here.
    public var address: String
    public var voter: Bool
    public var leader: Bool
}

extension RaftReplicator {
    /// Index of the log entry (or snapshot) that carried the current configuration.
    public var configurationIndex: UInt64 { node.configurationIndex }

    /// Every member of the current configuration, by ID.
    public var servers: [RaftServerStatus] {
        let configuration = node.configuration
        return configuration.members.sorted().map { member in
            RaftServerStatus(id: member, address: addressBook[member] ?? "", voter: configuration.isVoter(member),
                             leader: member == node.leader)
        }
    }

    /// The leader's view of each follower (empty on a follower).
    public var followerProgress: [NodeID: FollowerProgress] { node.followers }

    /// Removes `server` from the configuration. On a follower the request goes to the
    /// leader when `forwardToLeader` (default: `config.forwardWritesToLeader`).
    public func removePeer(_ server: NodeID, forwardToLeader: Bool? = nil,
                           completion: @escaping (Result<Void, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed else { completion(.failure(.closed)); return }
        if node.role == .leader {
            removeServer(server, completion: completion)
        } else if forwardToLeader ?? config.forwardWritesToLeader, let leader = node.leader, leader != id {
            forwardOperator(.removeServer, target: server, to: leader) { completion($0.map { _ in () }) }
        } else {
            completion(.failure(.notLeader(leaderAddress: leaderAddress)))
        }
    }

    /// Hands leadership to `target`, or when nil to the voter whose log is most up to date
    /// (hashicorp/raft picks the same way). Completes with the target once this server no
    /// longer leads, or fails when the target did not take over within an election timeout.
    public func transferLeadership(to target: NodeID?, forwardToLeader: Bool? = nil,
                                   completion: @escaping (Result<NodeID, RaftCommitError>) -> Void) {
        loop.assertInLoopThread()
        guard started, !closed else { completion(.failure(.closed)); return }
        guard node.role == .leader else {
            if forwardToLeader ?? config.forwardWritesToLeader, let leader = node.leader, leader != id {
                forwardOperator(.transferLeadership, target: target ?? 0, to: leader, completion: completion)
            } else {
                completion(.failure(.notLeader(leaderAddress: leaderAddress)))
            }
            return
        }
        guard node.leadershipTransferTarget == nil else { completion(.failure(.leadershipTransferInProgress)); return }
        let followers = node.followers
        let chosen = target ?? node.configuration.voters.filter { $0 != id }
            .max { (followers[$0]?.match ?? 0, $1) < (followers[$1]?.match ?? 0, $0) }
        guard let chosen else { completion(.failure(.rejected("cannot find peer: no other voter to transfer leadership to"))); return }
        switch node.transferLeadership(to: chosen) {
        case .started:
            logger.info("raft: starting leadership transfer", metadata: ["target": "\(chosen)",
                                                                        "address": "\(addressBook[chosen] ?? "unknown")"])
            drain()
            watchTransfer(to: chosen, completion: completion)
        case .alreadyLeader:
            completion(.success(id))
        case let .targetNotAVoter(server):
            completion(.failure(.rejected("server \(server) is not a voter of the configuration")))
        case let .notLeader(leader):
            completion(.failure(.notLeader(leaderAddress: leader.flatMap { addressBook[$0] })))
        }
    }

    /// Polls once a tick: the core ends a transfer by stepping down (done) or by dropping its
    /// target after an election timeout (failed).
    private func watchTransfer(to target: NodeID, completion: @escaping (Result<NodeID, RaftCommitError>) -> Void) {
        let timer = LoopTimer(loop: loop)
        let ticks = UInt64(node.config.electionTicks)
        let deadline = loop.nowMilliseconds + 2 * ticks * config.tickIntervalMilliseconds
        timer.start(afterMilliseconds: config.tickIntervalMilliseconds, repeatMilliseconds: config.tickIntervalMilliseconds) {
            [weak self] in
            guard let self, !self.closed else {
                timer.close()
                completion(.failure(.closed))
                return
            }
            if self.node.role != .leader {
                timer.close()
                completion(.success(target))
            } else if self.node.leadershipTransferTarget == nil || self.loop.nowMilliseconds >= deadline {
                timer.close()
                completion(.failure(.timeout("server \(target) did not take over the leadership within an election timeout")))
            }
        }
    }
}
