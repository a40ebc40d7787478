// Log lines when the leader starts or stops pipelining to a follower, in hashicorp/raft's words
// ("pipelining replication", "aborting pipeline replication"): the core's per-follower state
// moves between probe (one AppendEntries at a time, looking for the match), replicate (many in
// flight) and snapshot. Checked once a tick, so a flapping follower cannot flood the log.
import Logging
import RaftCore

extension RaftReplicator {
    func logReplicationModeChanges() {
        let followers = node.followers
        if followers.isEmpty {
            loggedReplicationModes = [:]
            return
        }
        for (peer, progress) in followers.sorted(by: { $0.key < $1.key }) {
            let before = loggedReplicationModes[peer]
            guard before != progress.state else { continue }
            loggedReplicationModes[peer] = progress.state
            let meta: Logger.Metadata = ["peer": "\(peer)", "address": "\(addressBook[peer] ?? "unknown")", "next": "\(progress.next)"]
            switch progress.state {
            case "replicate": logger.info("raft: pipelining replication", metadata: meta)
            case "snapshot": logger.info("raft: follower needs a snapshot, pipelining stopped", metadata: meta)
            default:
                if before == "replicate" { logger.info("raft: aborting pipeline replication", metadata: meta) }
            }
        }
        for peer in loggedReplicationModes.keys where followers[peer] == nil { loggedReplicationModes[peer] = nil }
    }
}
