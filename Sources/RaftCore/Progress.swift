// A leader's view of one follower (etcd's tracker.Progress): how far it matches, what to send
// next, and whether to probe, pipeline, or wait for a snapshot.

/// The bounded window of AppendEntries sent in the replicate state and not yet acknowledged,
/// each remembered by the last index it carried.
struct Inflights {
    let capacity: Int
    private(set) var lastIndexes: [UInt64] = []

    init(capacity: Int) { self.capacity = capacity }

    var isFull: Bool { lastIndexes.count >= capacity }
    var count: Int { lastIndexes.count }

    mutating func add(_ lastIndex: UInt64) {
        precondition(!isFull, "in-flight window overflow")
        lastIndexes.append(lastIndex)
    }
    /// Forgets every message acknowledged by a match at `index`.
    mutating func free(upTo index: UInt64) {
        lastIndexes.removeAll { $0 <= index }
    }
    mutating func freeFirst() {
        if !lastIndexes.isEmpty { lastIndexes.removeFirst() }
    }
    mutating func reset() { lastIndexes.removeAll() }
}

enum ReplicationState: Equatable {
    /// One AppendEntries at a time until the follower's match is found.
    case probe
    /// Match known: send optimistically, advancing `next` on send, within the window.
    case replicate
    /// Waiting for the follower to install the snapshot at `pendingIndex`.
    case snapshot(pendingIndex: UInt64)
}

struct Progress {
    var match: UInt64 = 0
    var next: UInt64
    var state: ReplicationState = .probe
    /// In probe: an append is out, wait for its answer (or the next heartbeat answer).
    var probeSent = false
    var inflights: Inflights
    /// Heard from since the last check-quorum round.
    var recentActive = false
    /// Ticks spent in the snapshot state; after an election timeout the snapshot is resent.
    var snapshotElapsed = 0
    /// Highest ReadIndex round this follower acknowledged in the current term.
    var readRoundAcked: UInt64 = 0

    init(next: UInt64, maxInflight: Int) {
        self.next = next
        self.inflights = Inflights(capacity: maxInflight)
    }

    var isPaused: Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflights.isFull
        case .snapshot: return true
        }
    }

    mutating func becomeProbe() {
        if case let .snapshot(pending) = state {
            next = max(match + 1, pending + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        inflights.reset()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        probeSent = false
        inflights.reset()
    }

    mutating func becomeSnapshot(at index: UInt64) {
        state = .snapshot(pendingIndex: index)
        probeSent = false
        snapshotElapsed = 0
        inflights.reset()
    }

    /// Records an acknowledgement of `index`; false if it tells nothing new.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if index > match {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }
}
