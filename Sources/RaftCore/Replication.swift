// Log replication (§5.3) with etcd-style per-follower progress: probe one message at a time
// until the match is found, then pipeline within the in-flight window; commit by counting
// replicas of current-term entries (§5.4.2).

extension RaftNode {
    // MARK: Leader side

    /// Appends one entry of the current term; returns its index.
    @discardableResult
    func appendAsLeader(kind: EntryKind, data: [UInt8]) -> UInt64 {
        let entry = Entry(index: log.lastIndex + 1, term: term, kind: kind, data: data)
        appendToLog([entry])
        return entry.index
    }

    func broadcastAppend(sendIfEmpty: Bool = true) {
        for peer in sortedPeers() { sendAppend(to: peer, sendIfEmpty: sendIfEmpty) }
    }

    /// Sends the next AppendEntries (or the snapshot) to `peer` if its progress allows.
    /// Returns whether a message carrying entries went out.
    @discardableResult
    func sendAppend(to peer: NodeID, sendIfEmpty: Bool) -> Bool {
        guard var p = progress[peer], !p.isPaused else { return false }
        let prevIndex = p.next - 1
        guard let prevTerm = log.term(at: prevIndex) else {
            // The entries the follower needs were compacted away: send the snapshot (§7).
            p.becomeSnapshot(at: log.snapshot.index)
            progress[peer] = p
            send(.installSnapshot(InstallSnapshot(snapshot: Snapshot(metadata: log.snapshot))), to: peer, early: true)
            return false
        }
        let entries = log.entries(from: p.next, through: log.lastIndex,
                                  maxCount: config.maxAppendEntries, maxBytes: config.maxAppendBytes)
        if entries.isEmpty && !sendIfEmpty { return false }
        switch p.state {
        case .replicate:
            if let last = entries.last {
                p.next = last.index + 1
                p.inflights.add(last.index)
            }
        case .probe:
            p.probeSent = true
        case .snapshot:
            preconditionFailure("a paused progress sends nothing")
        }
        progress[peer] = p
        send(.appendEntries(AppendEntries(prevLogIndex: prevIndex, prevLogTerm: prevTerm,
                                          entries: entries, leaderCommit: commitIndex)), to: peer, early: true)
        return !entries.isEmpty
    }

    func broadcastHeartbeat() {
        let round = reads.latestRound
        for peer in sortedPeers() {
            let commit = min(commitIndex, progress[peer]!.match)
            send(.heartbeat(Heartbeat(commit: commit, readRound: round)), to: peer, early: true)
        }
    }

    func handleAppendResponse(from peer: NodeID, _ response: AppendEntriesResponse) {
        guard var p = progress[peer] else { return }
        p.recentActive = true
        if !response.success {
            // Stale rejections (for a message sent before the current probe) are ignored.
            switch p.state {
            case .replicate where response.index <= p.match: progress[peer] = p; return
            case .probe where response.index != p.next - 1: progress[peer] = p; return
            case .snapshot: progress[peer] = p; return
            default: break
            }
            p.next = nextAfterRejection(response, match: p.match)
            if p.state == .replicate {
                p.state = .probe
                p.inflights.reset()
            }
            p.probeSent = false
            progress[peer] = p
            sendAppend(to: peer, sendIfEmpty: true)
            return
        }
        let wasPaused = p.isPaused
        guard p.maybeUpdate(response.index) else { progress[peer] = p; return }
        switch p.state {
        case .probe:
            p.becomeReplicate()
        case let .snapshot(pending) where p.match >= pending:
            p.becomeReplicate()
        case .snapshot:
            break
        case .replicate:
            p.inflights.free(upTo: p.match)
        }
        progress[peer] = p
        if maybeCommit() {
            broadcastAppend()
        } else if wasPaused {
            sendAppend(to: peer, sendIfEmpty: false)
        }
        while role == .leader, sendAppend(to: peer, sendIfEmpty: false) {}
        if role == .leader, peer == transferTarget, progress[peer]?.match == log.lastIndex {
            send(.timeoutNow, to: peer, early: true)
        }
    }

    /// Fast back-off (§5.3, "the follower can include the term of the conflicting entry and
    /// the first index it stores for that term"): skip a whole conflicting term at once.
    func nextAfterRejection(_ response: AppendEntriesResponse, match: UInt64) -> UInt64 {
        var next = response.hintIndex
        if response.hintTerm > 0 {
            // If we hold the follower's conflicting term, resume right after our last entry of it.
            var index = min(response.index, log.lastIndex)
            while index > log.snapshot.index, let t = log.term(at: index), t > response.hintTerm { index -= 1 }
            if log.term(at: index) == response.hintTerm { next = index + 1 }
        }
        return max(min(next, response.index), match + 1)
    }

    func handleHeartbeatResponse(from peer: NodeID, _ response: HeartbeatResponse) {
        guard var p = progress[peer] else { return }
        p.recentActive = true
        p.probeSent = false
        if p.state == .replicate && p.inflights.isFull { p.inflights.freeFirst() }
        progress[peer] = p
        if p.match < log.lastIndex { sendAppend(to: peer, sendIfEmpty: true) }
        if response.readRound > 0 { acknowledgeReadRound(from: peer, round: response.readRound) }
    }

    func handleSnapshotResponse(from peer: NodeID, _ response: InstallSnapshotResponse) {
        handleAppendResponse(from: peer, AppendEntriesResponse(success: true, index: response.lastIndex))
    }

    /// Commits the highest index replicated on a quorum of voters, if it is of the current
    /// term (§5.4.2). This node counts only what it has persisted.
    @discardableResult
    func maybeCommit() -> Bool {
        guard role == .leader, !configuration.voters.isEmpty else { return false }
        precondition(progress[id]!.match <= persistedIndex, "leader counts an unpersisted entry of its own")
        let matches = configuration.voters.map { progress[$0]?.match ?? 0 }.sorted(by: >)
        let candidate = matches[configuration.quorum - 1]
        guard candidate > commitIndex, log.term(at: candidate) == term else { return false }
        commitIndex = candidate
        precondition(commitIndex <= log.lastIndex)
        leaderCommitted()
        return true
    }

    private func leaderCommitted() {
        startReadsWaitingForFirstCommit()
        // Thesis §4.2.2: a leader removed from the configuration steps down once the
        // configuration that removes it is committed (after telling the others).
        if commitIndex >= configurationIndex && !configuration.isVoter(id) {
            broadcastAppend()
            becomeFollower(term: term, leader: nil)
        }
    }

    /// The caller's storage made the log durable through `index` (whose entry had `term`).
    /// Acknowledgements for entries since overwritten are ignored.
    public func persisted(upTo index: UInt64, term entryTerm: UInt64) {
        guard index > persistedIndex, index <= log.lastIndex, log.term(at: index) == entryTerm else { return }
        persistedIndex = index
        if role == .leader, progress[id] != nil {
            _ = progress[id]!.maybeUpdate(index)
            if maybeCommit() { broadcastAppend() }
        }
    }

    // MARK: Follower side

    /// Appends to the in-memory log (which the next Ready hands out for persistence),
    /// tracking truncation and configuration entries.
    func appendToLog(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index > commitIndex, "a committed entry would be overwritten")
        let truncates = first.index <= log.lastIndex
        log.append(entries)
        unsentFrom = min(unsentFrom, first.index)
        persistedIndex = min(persistedIndex, first.index - 1)
        if truncates && configurationIndex >= first.index {
            (configuration, configurationIndex) = latestConfiguration(atOrBelow: first.index - 1)
            configurationChanged()
        }
        if let last = entries.last(where: { $0.kind == .configuration }) {
            configuration = decodeConfiguration(last)
            configurationIndex = last.index
            configurationChanged()
        }
    }

    func handleAppendEntries(from leaderID: NodeID, _ append: AppendEntries) {
        if append.prevLogIndex < commitIndex {
            send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: commitIndex)), to: leaderID, early: false)
            return
        }
        guard let ourTerm = log.term(at: append.prevLogIndex), ourTerm == append.prevLogTerm else {
            send(.appendEntriesResponse(rejection(at: append.prevLogIndex)), to: leaderID, early: false)
            return
        }
        // Skip entries we already hold; truncate from the first conflict (§5.3 step 3).
        var toAppend = append.entries[...]
        while let e = toAppend.first, log.term(at: e.index) == e.term { toAppend = toAppend.dropFirst() }
        if !toAppend.isEmpty { appendToLog(Array(toAppend)) }
        let lastNew = append.prevLogIndex + UInt64(append.entries.count)
        commitIndex = max(commitIndex, min(append.leaderCommit, lastNew))
        send(.appendEntriesResponse(AppendEntriesResponse(success: true, index: lastNew)), to: leaderID, early: false)
    }

    /// The hint for a rejected AppendEntries at `prevIndex`.
    func rejection(at prevIndex: UInt64) -> AppendEntriesResponse {
        if prevIndex > log.lastIndex {
            return AppendEntriesResponse(success: false, index: prevIndex, hintTerm: 0, hintIndex: log.lastIndex + 1)
        }
        let conflictTerm = log.term(at: prevIndex)!
        var first = prevIndex
        while first > commitIndex + 1, log.term(at: first - 1) == conflictTerm { first -= 1 }
        return AppendEntriesResponse(success: false, index: prevIndex, hintTerm: conflictTerm, hintIndex: first)
    }

    func handleHeartbeat(from leaderID: NodeID, _ heartbeat: Heartbeat) {
        commitIndex = max(commitIndex, min(heartbeat.commit, log.lastIndex))
        send(.heartbeatResponse(HeartbeatResponse(readRound: heartbeat.readRound)), to: leaderID, early: false)
    }
}
