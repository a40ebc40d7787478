// Membership changes one server at a time (thesis §4.1): a configuration entry takes effect
// on every server as soon as it is in its log, and a leader allows one uncommitted change.

extension RaftNode {
    public func proposeConfigurationChange(_ change: ConfigurationChange) -> ProposeResult {
        guard role == .leader else { return .notLeader(leader: leader) }
        if transferTarget != nil { return .leadershipTransferInProgress }
        if pendingConfigurationIndex > commitIndex || configurationIndex > commitIndex {
            return .configurationChangeInProgress
        }
        switch configuration.applying(change) {
        case let .failure(error):
            return .invalidConfigurationChange(error)
        case let .success(next):
            let index = appendAsLeader(kind: .configuration, data: next.encoded())
            pendingConfigurationIndex = index
            broadcastAppend()
            return .accepted(index: index, term: term)
        }
    }

    /// The configuration in force at `index`: the last configuration entry at or below it, or
    /// the snapshot's.
    func latestConfiguration(atOrBelow index: UInt64) -> (Configuration, UInt64) {
        var i = min(index, log.lastIndex)
        while i > log.snapshot.index {
            let e = log.entry(at: i)!
            if e.kind == .configuration { return (decodeConfiguration(e), i) }
            i -= 1
        }
        return (log.snapshot.configuration, log.snapshot.index)
    }

    func decodeConfiguration(_ entry: Entry) -> Configuration {
        do {
            return try Configuration.decode(entry.data)
        } catch {
            preconditionFailure("configuration entry \(entry.index) does not decode: \(error)")
        }
    }

    /// Keeps the leader's progress map in step with the configuration.
    func configurationChanged() {
        guard role == .leader else { return }
        for member in configuration.members where progress[member] == nil { addProgress(for: member) }
        for peer in progress.keys where peer != id && !configuration.isMember(peer) { progress[peer] = nil }
        if let target = transferTarget, !configuration.isVoter(target) { abortLeadershipTransfer() }
    }
}
