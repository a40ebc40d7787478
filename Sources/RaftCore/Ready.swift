// The hand-off between the core and the caller's I/O (etcd's Ready/Advance). The caller
// persists, sends, applies, then acknowledges with `advance` and, as writes complete,
// `persisted(upTo:term:)`.

public struct Ready: Sendable, Equatable {
    /// Term, vote and commit to persist, if changed since the last Ready.
    public var hardState: HardState?
    /// A snapshot to persist and restore into the state machine before anything below.
    public var snapshot: Snapshot?
    /// Entries to persist. If the first index is at or below entries handed out earlier, the
    /// storage first drops its suffix from that index (a conflicting tail, §5.3).
    public var entries: [Entry] = []
    /// Messages to send. Those not marked `mayPrecedePersistence` must wait until this
    /// Ready's writes (and all earlier ones) are durable.
    public var messages: [OutgoingMessage] = []
    /// Committed entries to apply, in order. Only entries durable in this node's own log.
    public var committedEntries: [Entry] = []
    /// Reads that may be served now: the state machine has applied their index.
    public var readStates: [ReadState] = []

    var isEmpty: Bool {
        hardState == nil && snapshot == nil && entries.isEmpty && messages.isEmpty
            && committedEntries.isEmpty && readStates.isEmpty
    }
}

extension RaftNode {
    /// Takes everything the caller must do now, or nil if there is nothing.
    public func ready() -> Ready? {
        if proposalsAwaitingBroadcast {
            proposalsAwaitingBroadcast = false
            // A follower's progress may have sent these already (an answer freed the window).
            if role == .leader { broadcastAppend(sendIfEmpty: false) }
        }
        var r = Ready()
        let hs = hardState
        if hs != lastHardState { r.hardState = hs }
        r.snapshot = snapshotToInstall
        if unsentFrom <= log.lastIndex {
            r.entries = log.entries(from: unsentFrom, through: log.lastIndex, maxCount: Int.max, maxBytes: Int.max)
        }
        r.messages = outbox
        let applyThrough = min(commitIndex, persistedIndex)
        if applyThrough > appliedHandedOut {
            r.committedEntries = log.entries(from: appliedHandedOut + 1, through: applyThrough,
                                             maxCount: config.maxApplyEntriesPerReady, maxBytes: Int.max)
        }
        r.readStates = reads.confirmed.filter { $0.index <= appliedIndex }
        if r.isEmpty { return nil }

        lastHardState = hs
        snapshotToInstall = nil
        unsentFrom = log.lastIndex + 1
        outbox = []
        if let last = r.committedEntries.last { appliedHandedOut = last.index }
        if !r.readStates.isEmpty { reads.confirmed.removeAll { $0.index <= appliedIndex } }
        return r
    }

    /// The caller has applied the Ready's snapshot and committed entries.
    public func advance(_ ready: Ready) {
        if let snapshot = ready.snapshot { appliedIndex = max(appliedIndex, snapshot.metadata.index) }
        if let last = ready.committedEntries.last { appliedIndex = max(appliedIndex, last.index) }
        precondition(appliedIndex <= commitIndex, "applied index passed the commit index")
    }
}
