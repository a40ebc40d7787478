// The KV tables of the replicated state machine, with Consul's semantics
// (agent/consul/state/kvs.go, https://developer.hashicorp.com/consul/api-docs/kv).
// Databases: "kv" (key → KVEntry), "kv_tombstones" (key → deletion index, Consul's graveyard)
// and "meta" ("kvIndex": the KV table index, "appliedIndex": the last applied log index).
// Tombstones are never reaped yet: reaping comes with the leader's tombstone GC.
import Storage

public enum ApplyResult: Sendable, Equatable {
    /// The command ran; the Bool is its answer (PUT, CAS and DELETE answer true or false).
    case success(Bool)
    /// The command could not run (undecodable, key too large); the index still advances.
    case failed(String)
}

public struct AppliedBatch: Sendable {
    /// One result per command of the batch, in order.
    public var results: [ApplyResult]
    /// Every key set or deleted, once each, in the order first changed (to wake blocking queries).
    public var changedKeys: [String]
    /// The applied index after the batch.
    public var lastIndex: UInt64
    /// Catalog tables the batch changed (CatalogStore.swift), for table-wide watchers.
    public var changedCatalogTables: CatalogTableSet = []
    /// Service names whose per-service index moved, once each, for /v1/health/service/<name>
    /// and /v1/catalog/service/<name> watchers.
    public var changedServiceNames: [String] = []
}

extension AppliedBatch {
    /// A later batch folded into this one: its answers after this one's, its keys and service
    /// names added once each, for watchers woken once for several batches.
    public mutating func absorb(_ later: AppliedBatch) {
        results += later.results
        var seenKeys = Set(changedKeys)
        for key in later.changedKeys where seenKeys.insert(key).inserted { changedKeys.append(key) }
        var seenServices = Set(changedServiceNames)
        for name in later.changedServiceNames where seenServices.insert(name).inserted { changedServiceNames.append(name) }
        changedCatalogTables.formUnion(later.changedCatalogTables)
        lastIndex = max(lastIndex, later.lastIndex)
    }
}

/// Sendable: only immutable references to a Sendable environment; `apply` is meant for one
/// writer thread (the environment serialises writes anyway), reads may come from any thread.
public final class StateStore: Sendable {
    public let environment: Environment
    private let kv: Database
    private let tombstones: Database
    private let meta: Database
    let catalog: CatalogTables

    private static let kvIndexKey = Array("kvIndex".utf8)
    private static let appliedIndexKey = Array("appliedIndex".utf8)

    public init(environment: Environment) throws {
        self.environment = environment
        kv = try environment.openDatabase("kv")
        tombstones = try environment.openDatabase("kv_tombstones")
        meta = try environment.openDatabase("meta")
        catalog = try CatalogTables(environment: environment)
    }

    /// The index of the last applied log entry; 0 before the first.
    public func appliedIndex() throws -> UInt64 {
        try environment.read { txn in try metaValue(txn, StateStore.appliedIndexKey) }
    }

    /// Applies a batch of committed log entries in one write transaction, which also records
    /// the applied index, so a crash leaves either the whole batch or none of it.
    /// Entries at or below the applied index are skipped (`.failed("already applied")`), so
    /// replay after a restart is idempotent. Indexes must be >= 1 and increase within a batch
    /// (gaps are fine: not every log entry is a KV command); anything else stops the process.
    public func apply(_ batch: [(index: UInt64, command: [UInt8])]) throws -> AppliedBatch {
        try environment.write { txn in try self.apply(batch, in: txn) }
    }

    /// `apply` in the environment's held write (`Environment.writeHeld`): the answers are final,
    /// but readers see the batch only after `commitHeld()`, together with the batches held
    /// before and after it. Same thread for both calls.
    public func applyHeld(_ batch: [(index: UInt64, command: [UInt8])]) throws -> AppliedBatch {
        try environment.writeHeld { txn in try self.apply(batch, in: txn) }
    }

    /// Commits the batches `applyHeld` gave this thread (nothing if none).
    public func commitHeld() throws { try environment.commitHeld() }

    private func apply(_ batch: [(index: UInt64, command: [UInt8])], in txn: WriteTransaction) throws -> AppliedBatch {
        // May run again from scratch (the map had to grow), so nothing here escapes the txn.
        let startIndex = try metaValue(txn, StateStore.appliedIndexKey)
        var applied = startIndex
        var results: [ApplyResult] = []
        results.reserveCapacity(batch.count)
        var changes = ChangedKeys()
        var catalogChanges = CatalogChanges()
        var previous: UInt64 = 0
        for (index, bytes) in batch {
            precondition(index > previous, "apply: index \(index) after \(previous); indexes must increase")
            previous = index
            guard index > applied else {
                results.append(.failed("already applied"))
                continue
            }
            applied = index
            if let tag = bytes.first, CatalogCommand.tags.contains(tag) {
                let command: CatalogCommand
                do throws(StateStoreError) {
                    command = try CatalogCommand(decoding: bytes)
                } catch {
                    results.append(.failed(error.description))
                    continue
                }
                results.append(try catalog.apply(command, at: index, txn, &catalogChanges))
                continue
            }
            let command: KVCommand
            do throws(StateStoreError) {
                command = try KVCommand(decoding: bytes)
            } catch {
                results.append(.failed(error.description))
                continue
            }
            results.append(try apply(command, at: index, txn, &changes))
        }
        if applied != startIndex {
            try txn.put(meta, key: StateStore.appliedIndexKey, value: applied.bigEndianBytes)
        }
        return AppliedBatch(results: results, changedKeys: changes.keys, lastIndex: applied,
                            changedCatalogTables: catalogChanges.tables,
                            changedServiceNames: catalogChanges.serviceNames)
    }

    /// The entry under `key` (nil when absent, or too long to exist) and the KV table index,
    /// as Consul's KVSGet.
    public func get(_ key: String) throws -> (index: UInt64, entry: KVEntry?) {
        try environment.read { txn in
            let index = try metaValue(txn, StateStore.kvIndexKey)
            return (index, try entry(txn, key))
        }
    }

    /// Entries whose key starts with `prefix`, in key order, and the index Consul's KVSList
    /// reports: the table index for "", else the highest ModifyIndex among the entries and the
    /// tombstones under the prefix, or the table index when that is 0.
    public func list(prefix: String) throws -> (index: UInt64, entries: [KVEntry]) {
        try environment.read { txn in
            var entries: [KVEntry] = []
            var highest: UInt64 = 0
            try forEachEntry(txn, prefix: prefix) { key, stored in
                let entry = try KVEntry(key: String(decoding: key, as: UTF8.self), storedValue: stored)
                highest = max(highest, entry.modifyIndex)
                entries.append(entry)
            }
            return (try listIndex(txn, prefix: prefix, highestModifyIndex: highest), entries)
        }
    }

    /// Keys starting with `prefix`, in key order, as Consul's KVSListKeys: with a separator, a
    /// key whose remainder after the prefix contains it is cut just after its first occurrence
    /// and duplicates collapse ("a/b", "a/c/d", "a/c/e" under "a/" with "/" → "a/b", "a/c/").
    /// The index follows `list`'s rule, over every entry under the prefix.
    public func keys(prefix: String, separator: String?) throws -> (index: UInt64, keys: [String]) {
        let prefixBytes = Array(prefix.utf8)
        let separatorBytes = Array((separator ?? "").utf8)
        return try environment.read { txn in
            var keys: [String] = []
            var lastCollapsed: ArraySlice<UInt8>?
            var highest: UInt64 = 0
            try forEachEntry(txn, prefix: prefix) { key, stored in
                highest = max(highest, try KVEntry.storedModifyIndex(key: key, stored))
                guard !separatorBytes.isEmpty,
                      let cut = firstRange(of: separatorBytes, in: key, from: prefixBytes.count) else {
                    keys.append(String(decoding: key, as: UTF8.self))
                    return
                }
                let collapsed = key[..<cut.upperBound]
                if collapsed != lastCollapsed {
                    keys.append(String(decoding: collapsed, as: UTF8.self))
                    lastCollapsed = collapsed
                }
            }
            return (try listIndex(txn, prefix: prefix, highestModifyIndex: highest), keys)
        }
    }

    // MARK: - Commands

    private func apply(_ command: KVCommand, at index: UInt64, _ txn: WriteTransaction,
                       _ changes: inout ChangedKeys) throws -> ApplyResult {
        switch command {
        case let .set(key, value, flags):
            if let failure = invalidKey(key, forWrite: true) { return failure }
            try set(key, value: value, flags: flags, at: index, txn, &changes)
            return .success(true)

        case let .checkAndSet(key, value, flags, modifyIndex):
            if let failure = invalidKey(key, forWrite: true) { return failure }
            let existing = try entry(txn, key)
            if modifyIndex == 0 {
                guard existing == nil else { return .success(false) }
            } else {
                guard let existing, existing.modifyIndex == modifyIndex else { return .success(false) }
            }
            try set(key, value: value, flags: flags, at: index, txn, &changes)
            return .success(true)

        case let .delete(key):
            if let failure = invalidKey(key, forWrite: false) { return failure }
            if try entry(txn, key) != nil { try delete(key, at: index, txn, &changes) }
            return .success(true)

        case let .deleteCAS(key, modifyIndex):
            if let failure = invalidKey(key, forWrite: false) { return failure }
            guard let existing = try entry(txn, key) else { return .success(true) }  // nothing to do
            guard existing.modifyIndex == modifyIndex else { return .success(false) }
            try delete(key, at: index, txn, &changes)
            return .success(true)

        case let .deleteTree(prefix):
            if let failure = invalidKey(prefix, forWrite: false) { return failure }
            try deleteTree(prefix, at: index, txn, &changes)
            return .success(true)
        }
    }

    /// Consul's kvsSetTxn: CreateIndex kept, LockIndex and Session kept; a write that changes
    /// nothing (same value, flags, lock index and session) is skipped and bumps no index.
    private func set(_ key: String, value: [UInt8], flags: UInt64, at index: UInt64,
                     _ txn: WriteTransaction, _ changes: inout ChangedKeys) throws {
        let existing = try entry(txn, key)
        if let existing, existing.value == value, existing.flags == flags { return }
        let updated = KVEntry(key: key, value: value, flags: flags,
                              createIndex: existing?.createIndex ?? index, modifyIndex: index,
                              lockIndex: existing?.lockIndex ?? 0, session: existing?.session)
        try txn.put(kv, key: Array(key.utf8), value: updated.storedValue())
        try setTableIndex(index, txn)
        changes.insert(key)
    }

    /// Consul's kvsDeleteTxn for a present key: tombstone, delete, bump the table index.
    private func delete(_ key: String, at index: UInt64, _ txn: WriteTransaction,
                        _ changes: inout ChangedKeys) throws {
        let keyBytes = Array(key.utf8)
        try txn.put(tombstones, key: keyBytes, value: index.bigEndianBytes)
        try txn.delete(kv, key: keyBytes)
        try setTableIndex(index, txn)
        changes.insert(key)
    }

    /// Consul's kvsDeleteTreeTxn: delete every key under the prefix and, if any was deleted,
    /// leave ONE tombstone at the prefix itself (none for the empty prefix: every watcher then
    /// sees the table index) and bump the table index.
    private func deleteTree(_ prefix: String, at index: UInt64, _ txn: WriteTransaction,
                            _ changes: inout ChangedKeys) throws {
        var doomed: [[UInt8]] = []
        try forEachEntry(txn, prefix: prefix) { key, _ in doomed.append(key) }
        guard !doomed.isEmpty else { return }
        for key in doomed {
            try txn.delete(kv, key: key)
            changes.insert(String(decoding: key, as: UTF8.self))
        }
        if !prefix.isEmpty {
            try txn.put(tombstones, key: Array(prefix.utf8), value: index.bigEndianBytes)
        }
        try setTableIndex(index, txn)
    }

    // MARK: - Helpers

    /// Keys LMDB cannot hold. A write needs a non-empty key (Consul's "Missing key name");
    /// deleting the empty key is a no-op that answers true.
    private func invalidKey(_ key: String, forWrite: Bool) -> ApplyResult? {
        let size = key.utf8.count
        if size > environment.maxKeySize {
            return .failed(StorageError.keyTooLarge(size: size, limit: environment.maxKeySize).description)
        }
        if forWrite && size == 0 { return .failed("missing key name") }
        return nil
    }

    /// The stored entry; nil for keys LMDB cannot hold (empty, or over the maximum key size).
    private func entry(_ txn: ReadTransaction, _ key: String) throws -> KVEntry? {
        let keyBytes = Array(key.utf8)
        guard keyBytes.count <= environment.maxKeySize,
              let stored = try txn.get(kv, keyBytes) else { return nil }
        return try KVEntry(key: key, storedValue: stored)
    }

    private func forEachEntry(_ txn: ReadTransaction, prefix: String,
                              _ body: (_ key: [UInt8], _ stored: [UInt8]) throws -> Void) throws {
        let prefixBytes = Array(prefix.utf8)
        guard prefixBytes.count <= environment.maxKeySize else { return }  // no key that long exists
        try txn.cursor(kv).forEach(prefix: prefixBytes) { key, stored in
            try body(key, stored)
            return true
        }
    }

    private func listIndex(_ txn: ReadTransaction, prefix: String, highestModifyIndex: UInt64) throws -> UInt64 {
        let tableIndex = try metaValue(txn, StateStore.kvIndexKey)
        if prefix.isEmpty { return tableIndex }
        var highest = highestModifyIndex
        let prefixBytes = Array(prefix.utf8)
        if prefixBytes.count <= environment.maxKeySize {
            try txn.cursor(tombstones).forEach(prefix: prefixBytes) { key, value in
                guard let deletedAt = UInt64(bigEndianBytes: value) else {
                    throw StateStoreError.corrupt("tombstone \(String(decoding: key, as: UTF8.self)): \(value.count) bytes")
                }
                highest = max(highest, deletedAt)
                return true
            }
        }
        return highest != 0 ? highest : tableIndex
    }

    private func setTableIndex(_ index: UInt64, _ txn: WriteTransaction) throws {
        try txn.put(meta, key: StateStore.kvIndexKey, value: index.bigEndianBytes)
    }

    private func metaValue(_ txn: ReadTransaction, _ key: [UInt8]) throws -> UInt64 {
        guard let stored = try txn.get(meta, key) else { return 0 }
        guard let value = UInt64(bigEndianBytes: stored) else {
            throw StateStoreError.corrupt("meta \(String(decoding: key, as: UTF8.self)): \(stored.count) bytes")
        }
        return value
    }
}

/// Changed keys in first-change order, each once.
private struct ChangedKeys {
    private(set) var keys: [String] = []
    private var seen: Set<String> = []

    mutating func insert(_ key: String) {
        if seen.insert(key).inserted { keys.append(key) }
    }
}

/// The first occurrence of `needle` in `haystack` at or after `start`.
private func firstRange(of needle: [UInt8], in haystack: [UInt8], from start: Int) -> Range<Int>? {
    guard !needle.isEmpty, haystack.count - start >= needle.count else { return nil }
    for position in start...(haystack.count - needle.count)
    where haystack[position..<position + needle.count].elementsEqual(needle) {
        return position..<position + needle.count
    }
    return nil
}
