// Small drivers for unit tests: build a node, drain its Ready with an instant disk, win an
// election by hand.

import RaftCore
import Testing

func bootstrapLog(voters: [NodeID], nonVoters: [NodeID] = [], entries: [Entry] = []) -> MemoryRaftLog {
    MemoryRaftLog(snapshot: SnapshotMetadata(index: 0, term: 0, configuration: Configuration(voters: voters, nonVoters: nonVoters)),
                  entries: entries)
}

func makeNode(id: NodeID = 1, voters: [NodeID] = [1, 2, 3], nonVoters: [NodeID] = [], entries: [Entry] = [],
              hardState: HardState = HardState(), config: RaftConfig = RaftConfig(), seed: UInt64 = 1) -> RaftNode {
    RaftNode(id: id, config: config, log: bootstrapLog(voters: voters, nonVoters: nonVoters, entries: entries),
             hardState: hardState, seed: seed)
}

/// Takes every Ready, acknowledges it as if the disk were instant, and returns the messages.
@discardableResult
func drain(_ node: RaftNode, persist: Bool = true) -> [OutgoingMessage] {
    var out: [OutgoingMessage] = []
    while let ready = node.ready() {
        out += ready.messages
        node.advance(ready)
        if persist {
            if let last = ready.entries.last { node.persisted(upTo: last.index, term: last.term) }
            else if let s = ready.snapshot { node.persisted(upTo: s.metadata.index, term: s.metadata.term) }
        }
    }
    return out
}

func messages(_ out: [OutgoingMessage]) -> [Message] { out.map(\.message) }

func msg(_ from: NodeID, _ to: NodeID, term: UInt64, _ body: MessageBody) -> Message {
    Message(from: from, to: to, term: term, body: body)
}

/// Ticks until the node leaves the follower role (at most 2 * electionTicks).
func tickUntilCampaign(_ node: RaftNode) -> Int {
    var ticks = 0
    while node.role == .follower && ticks < 2 * node.config.electionTicks {
        node.tick()
        ticks += 1
    }
    return ticks
}

/// Makes `node` leader with pre-vote and vote grants from every other voter.
func elect(_ node: RaftNode) {
    _ = tickUntilCampaign(node)
    drain(node)
    let peers = node.configuration.voters.filter { $0 != node.id }
    if node.role == .preCandidate {
        for p in peers { node.step(msg(p, node.id, term: node.term + 1, .requestVoteResponse(VoteResponse(granted: true, preVote: true)))) }
        drain(node)
    }
    for p in peers where node.role == .candidate {
        node.step(msg(p, node.id, term: node.term, .requestVoteResponse(VoteResponse(granted: true, preVote: false))))
    }
    drain(node)
    precondition(node.role == .leader, "test helper failed to elect node \(node.id)")
}

/// Acknowledges everything a follower was sent: success up to `index`.
func ack(_ leader: RaftNode, from peer: NodeID, index: UInt64) {
    leader.step(msg(peer, leader.id, term: leader.term, .appendEntriesResponse(AppendEntriesResponse(success: true, index: index))))
}

func appends(_ out: [OutgoingMessage], to peer: NodeID) -> [AppendEntries] {
    out.compactMap {
        guard $0.message.to == peer, case let .appendEntries(a) = $0.message.body else { return nil }
        return a
    }
}
