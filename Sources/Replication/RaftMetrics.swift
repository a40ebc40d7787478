// The replicator's metrics, through swift-metrics (the agent supplies the backend). Names are
// Consul's where Consul (hashicorp/raft, prefixed "consul.") has the same measurement, and ours
// under "consul.raft." otherwise, so dashboards port:
//   consul.raft.commitTime                        Consul: timer, leader, proposal until committed
//                                                 (here: until committed and applied on the leader)
//   consul.raft.apply                             Consul: counter of proposals committed on the leader
//   consul.raft.replication.appendEntries.logs    Consul: counter of entries sent, label peer_id
//   consul.raft.replication.appendEntries.rpc     Consul: timer, AppendEntries with entries sent
//                                                 until its acknowledgement, label peer_id (with
//                                                 pipelining: the round trip of each message)
//   consul.raft.replication.appendEntries.entries ours: entries per AppendEntries sent (histogram)
//   consul.raft.replication.appendEntries.bytes   ours: entry payload bytes per AppendEntries sent
//   consul.raft.replication.inflight              ours: gauge, unacknowledged AppendEntries per
//                                                 follower (label peer_id), sampled every tick
//   consul.raft.disk.batchEntries                 ours: log entries written per disk job (one
//                                                 synced write covers them all: the group-commit size)
//   consul.raft.disk.fsyncTime                    ours: timer, making one batch durable (one
//                                                 synced journal write; a synced LMDB commit for
//                                                 restores, compactions and oversized batches)
//   consul.raft.fsm.apply                         Consul: timer, applying a batch to the state store
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import Metrics
import RaftCore

/// Handles that may be recorded from any thread (the disk thread records the disk ones).
/// swift-metrics objects are Sendable; the backend decides what a record costs.
final class RaftMetrics: Sendable {
    let factory: any MetricsFactory
    let commitTime: Timer
    let apply: Counter
    let entriesPerAppend: Recorder
    let bytesPerAppend: Recorder
    let diskBatchEntries: Recorder
    let fsyncTime: Timer
    let fsmApply: Timer

    init(factory: any MetricsFactory) {
        self.factory = factory
        commitTime = Timer(label: "consul.raft.commitTime", factory: factory)
        apply = Counter(label: "consul.raft.apply", factory: factory)
        entriesPerAppend = Recorder(label: "consul.raft.replication.appendEntries.entries", factory: factory)
        bytesPerAppend = Recorder(label: "consul.raft.replication.appendEntries.bytes", factory: factory)
        diskBatchEntries = Recorder(label: "consul.raft.disk.batchEntries", factory: factory)
        fsyncTime = Timer(label: "consul.raft.disk.fsyncTime", factory: factory)
        fsmApply = Timer(label: "consul.raft.fsm.apply", factory: factory)
    }

    /// Per-follower handles, made on first use. Loop-confined (owned by the replicator).
    final class Peers {
        private var logs: [NodeID: Counter] = [:]
        private var inflight: [NodeID: Gauge] = [:]
        private var rpc: [NodeID: Timer] = [:]
        /// AppendEntries with entries awaiting acknowledgement, per follower: the last index
        /// each carried and when it was sent. Bounded: the oldest are forgotten past
        /// `maxTrackedPerPeer` (a window never holds more than maxInflightMessages anyway).
        private var unacknowledged: [NodeID: [(term: UInt64, lastIndex: UInt64, sentAtNanoseconds: UInt64)]] = [:]
        static let maxTrackedPerPeer = 256
        let factory: any MetricsFactory
        init(factory: any MetricsFactory) { self.factory = factory }

        static func label(_ peer: NodeID) -> String { String(peer, radix: 16) }

        func logs(_ peer: NodeID) -> Counter {
            if let counter = logs[peer] { return counter }
            let counter = Counter(label: "consul.raft.replication.appendEntries.logs",
                                  dimensions: [("peer_id", Self.label(peer))], factory: factory)
            logs[peer] = counter
            return counter
        }

        func inflight(_ peer: NodeID) -> Gauge {
            if let gauge = inflight[peer] { return gauge }
            let gauge = Gauge(label: "consul.raft.replication.inflight", dimensions: [("peer_id", Self.label(peer))], factory: factory)
            inflight[peer] = gauge
            return gauge
        }

        var trackedInflight: [NodeID] { Array(inflight.keys) }

        func appendSent(to peer: NodeID, term: UInt64, lastIndex: UInt64, at now: UInt64) {
            var list = unacknowledged[peer, default: []]
            if list.count >= Self.maxTrackedPerPeer { list.removeFirst(list.count - Self.maxTrackedPerPeer + 1) }
            list.append((term, lastIndex, now))
            unacknowledged[peer] = list
        }

        /// A success acknowledges every message up to `index`; a rejection makes the leader
        /// probe again, so what was in flight is forgotten rather than timed.
        func appendAnswered(by peer: NodeID, term: UInt64, success: Bool, index: UInt64, at now: UInt64) {
            guard var list = unacknowledged[peer], !list.isEmpty else { return }
            // Sent in an earlier term of ours: its answer will never come in this one.
            list.removeAll { $0.term != term }
            guard success else { unacknowledged[peer] = nil; return }
            var kept = 0
            for sent in list {
                guard sent.lastIndex <= index else { break }
                rpcTimer(peer).recordNanoseconds(now &- sent.sentAtNanoseconds)
                kept += 1
            }
            unacknowledged[peer] = Array(list.dropFirst(kept))
        }

        private func rpcTimer(_ peer: NodeID) -> Timer {
            if let timer = rpc[peer] { return timer }
            let timer = Timer(label: "consul.raft.replication.appendEntries.rpc", dimensions: [("peer_id", Self.label(peer))],
                              factory: factory)
            rpc[peer] = timer
            return timer
        }
    }
}

/// Monotonic nanoseconds for durations (never the wall clock); a vDSO call, no syscall.
func monotonicNanoseconds() -> UInt64 {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
}

extension RaftReplicator {
    /// Sends a message to its peer, counting what an AppendEntries carries.
    func sendCounted(_ message: Message) {
        if case let .appendEntries(append) = message.body, !append.entries.isEmpty {
            var bytes = 0
            for entry in append.entries { bytes += entry.data.count }
            metrics.entriesPerAppend.record(append.entries.count)
            metrics.bytesPerAppend.record(bytes)
            peerMetrics.logs(message.to).increment(by: append.entries.count)
            peerMetrics.appendSent(to: message.to, term: message.term, lastIndex: append.entries[append.entries.count - 1].index,
                                   at: monotonicNanoseconds())
        }
        transport.send(message)
    }

    /// The leader times each AppendEntries until the follower's answer covers it.
    func observeAppendResponse(_ message: Message) {
        guard case let .appendEntriesResponse(response) = message.body, node.role == .leader, message.term == node.term else { return }
        peerMetrics.appendAnswered(by: message.from, term: message.term, success: response.success, index: response.index, at: monotonicNanoseconds())
    }

    func recordCommit(_ proposal: PendingProposal) {
        metrics.commitTime.recordNanoseconds(monotonicNanoseconds() &- proposal.proposedAtNanoseconds)
        metrics.apply.increment()
    }

    /// Once a tick: each follower's in-flight window on the leader; 0 for peers it no longer
    /// replicates to (a deposed leader, a removed server), so a gauge never sticks.
    func sampleReplicationMetrics() {
        let followers = node.followers
        for (peer, progress) in followers { peerMetrics.inflight(peer).record(progress.inflight) }
        for peer in peerMetrics.trackedInflight where followers[peer] == nil { peerMetrics.inflight(peer).record(0) }
    }
}
