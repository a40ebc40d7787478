// A read-only view of the leader's per-follower replication state (`Progress`), for the
// operator API and metrics (in-flight depth per follower). Nothing here changes the core.

/// What the leader knows of one follower's replication.
public struct FollowerProgress: Sendable, Equatable {
    /// Highest index the follower acknowledged as matching the leader's log.
    public var match: UInt64
    /// Next index the leader will send it.
    public var next: UInt64
    /// AppendEntries sent in the pipelined state and not yet acknowledged.
    public var inflight: Int
    /// "probe", "replicate" or "snapshot" (etcd's tracker states).
    public var state: String
}

extension RaftNode {
    /// The leader's view of `peer`; nil when this node is not the leader or `peer` is not a
    /// member other than this node.
    public func followerProgress(_ peer: NodeID) -> FollowerProgress? {
        guard role == .leader, peer != id, let progress = progress[peer] else { return nil }
        let state: String
        switch progress.state {
        case .probe: state = "probe"
        case .replicate: state = "replicate"
        case .snapshot: state = "snapshot"
        }
        return FollowerProgress(match: progress.match, next: progress.next, inflight: progress.inflights.count, state: state)
    }

    /// Every follower's progress while this node leads (empty otherwise).
    public var followers: [NodeID: FollowerProgress] {
        guard role == .leader else { return [:] }
        var out: [NodeID: FollowerProgress] = [:]
        for peer in progress.keys where peer != id { out[peer] = followerProgress(peer) }
        return out
    }
}
