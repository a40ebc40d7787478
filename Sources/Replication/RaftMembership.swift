// Membership on top of the core's single-server changes (thesis §4.1): hooks the replicator
// calls as configurations change and entries are applied.
import RaftCore

extension RaftReplicator {
    func configurationChanged(_ configuration: Configuration) {}
    func committedEntriesApplied(_ entries: [Entry]) {}
}
