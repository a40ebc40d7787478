// The log as the core sees it: a snapshot point (index, term, configuration) followed by the
// entries since. `RaftLogStorage` is the seam for a durable implementation (LMDB later); for
// now `MemoryRaftLog` holds the whole log in memory. The node appends to it at once and hands
// new entries to the caller via Ready; a durable implementation must therefore keep entries
// not yet persisted in memory (etcd's "unstable" part) in front of its disk.

public protocol RaftLogStorage {
    /// The compaction point; index 0 / term 0 with the bootstrap configuration for a new log.
    var snapshot: SnapshotMetadata { get }
    /// snapshot.index + 1.
    var firstIndex: UInt64 { get }
    /// The last entry's index, or snapshot.index when there are no entries.
    var lastIndex: UInt64 { get }
    /// The term at `index`: snapshot.term at the snapshot index, nil if compacted or absent.
    func term(at index: UInt64) -> UInt64?
    func entry(at index: UInt64) -> Entry?
    /// Entries in [from, through], at most `maxCount`, and at most `maxBytes` except that the
    /// first entry is always included.
    func entries(from: UInt64, through: UInt64, maxCount: Int, maxBytes: Int) -> [Entry]
    /// Appends `entries` (consecutive), first truncating any suffix from entries[0].index.
    mutating func append(_ entries: [Entry])
    /// Drops entries up to `index`, which becomes the snapshot point.
    mutating func compact(through index: UInt64, configuration: Configuration)
    /// Replaces the whole log by a snapshot point.
    mutating func restore(_ snapshot: SnapshotMetadata)
}

public struct MemoryRaftLog: RaftLogStorage, Sendable {
    public private(set) var snapshot: SnapshotMetadata
    private var storedEntries: [Entry]

    /// A log starting at `snapshot` holding `entries` (which must follow it consecutively).
    public init(snapshot: SnapshotMetadata, entries: [Entry] = []) {
        for (offset, e) in entries.enumerated() {
            precondition(e.index == snapshot.index + 1 + UInt64(offset), "log entries must be consecutive")
        }
        self.snapshot = snapshot
        self.storedEntries = entries
    }

    public var firstIndex: UInt64 { snapshot.index + 1 }
    public var lastIndex: UInt64 { snapshot.index + UInt64(storedEntries.count) }

    public func term(at index: UInt64) -> UInt64? {
        if index == snapshot.index { return snapshot.term }
        return entry(at: index)?.term
    }

    public func entry(at index: UInt64) -> Entry? {
        guard index > snapshot.index, index <= lastIndex else { return nil }
        return storedEntries[Int(index - snapshot.index - 1)]
    }

    public func entries(from: UInt64, through: UInt64, maxCount: Int, maxBytes: Int) -> [Entry] {
        guard from <= through, from > snapshot.index, through <= lastIndex else { return [] }
        var result: [Entry] = []
        var bytes = 0
        var index = from
        while index <= through, result.count < maxCount {
            let e = storedEntries[Int(index - snapshot.index - 1)]
            if !result.isEmpty, bytes + e.byteCount > maxBytes { break }
            bytes += e.byteCount
            result.append(e)
            index += 1
        }
        return result
    }

    public mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index > snapshot.index && first.index <= lastIndex + 1, "append leaves a gap")
        storedEntries.removeSubrange(Int(first.index - snapshot.index - 1)...)
        for e in entries {
            precondition(e.index == lastIndex + 1, "log entries must be consecutive")
            storedEntries.append(e)
        }
    }

    public mutating func compact(through index: UInt64, configuration: Configuration) {
        guard index > snapshot.index else { return }
        precondition(index <= lastIndex, "compacting past the last entry")
        let term = term(at: index)!
        storedEntries.removeFirst(Int(index - snapshot.index))
        snapshot = SnapshotMetadata(index: index, term: term, configuration: configuration)
    }

    public mutating func restore(_ snapshot: SnapshotMetadata) {
        self.snapshot = snapshot
        storedEntries = []
    }
}
