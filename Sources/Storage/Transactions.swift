// Read and write transactions and cursors. Keys and values cross into Swift as copies
// ([UInt8]); LMDB's pointers into the map never leave this file.
import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// A read-only view of one committed state. Valid only inside the closure that received it.
public class ReadTransaction {
    let txn: OpaquePointer
    let maxKeySize: Int
    private var isLive = true
    private var cursors: [Cursor] = []

    init(_ txn: OpaquePointer, maxKeySize: Int) {
        self.txn = txn
        self.maxKeySize = maxKeySize
    }

    /// The value stored under `key`, copied out; nil when absent.
    public func get(_ db: Database, _ key: [UInt8]) throws(StorageError) -> [UInt8]? {
        try checkUsable(key: key)
        if key.isEmpty { return nil }  // LMDB stores no empty keys
        var value = MDB_val()
        let code = withValue(key) { keyValue in mdb_get(txn, db.handle, &keyValue, &value) }
        if code == MDB_NOTFOUND { return nil }
        try check(code, "mdb_get \(db.name)")
        return copyBytes(value)
    }

    /// A cursor over `db`, closed when the transaction ends.
    public func cursor(_ db: Database) throws(StorageError) -> Cursor {
        try checkUsable()
        var handle: OpaquePointer?
        try check(mdb_cursor_open(txn, db.handle, &handle), "mdb_cursor_open \(db.name)")
        guard let handle else { throw StorageError.from(ENOMEM, "mdb_cursor_open") }
        let cursor = Cursor(handle, database: db, maxKeySize: maxKeySize)
        cursors.append(cursor)
        return cursor
    }

    /// The number of keys in `db`.
    public func count(_ db: Database) throws(StorageError) -> Int {
        try checkUsable()
        var stat = MDB_stat()
        try check(mdb_stat(txn, db.handle, &stat), "mdb_stat \(db.name)")
        return stat.ms_entries
    }

    var isEnded: Bool { !isLive }

    func checkUsable(key: [UInt8]? = nil) throws(StorageError) {
        precondition(isLive, "transaction used outside the closure that received it")
        if let key, key.count > maxKeySize {
            throw StorageError.keyTooLarge(size: key.count, limit: maxKeySize)
        }
    }

    /// Closes the cursors (allowed in both kinds of transaction before they end) and makes
    /// every later use a precondition failure.
    func end() {
        precondition(isLive, "transaction ended twice")
        isLive = false
        for cursor in cursors { cursor.close() }
        cursors.removeAll()
    }

    func abort() {
        end()
        mdb_txn_abort(txn)
    }
}

/// A read-write transaction. Valid only inside the `Environment.write` closure that received it.
public final class WriteTransaction: ReadTransaction {
    /// Some write returned MDB_MAP_FULL: the transaction is dead and `write` will grow the map
    /// and run the body again, even if the body caught the error.
    private(set) var sawMapFull = false
    private var afterCommitActions: [() -> Void] = []

    /// Stores `value` under `key`. With `noOverwrite`, leaves an existing value alone and
    /// returns false; otherwise returns true.
    @discardableResult
    public func put(_ db: Database, key: [UInt8], value: [UInt8], noOverwrite: Bool = false) throws(StorageError) -> Bool {
        try checkUsable(key: key)
        let flags = noOverwrite ? UInt32(MDB_NOOVERWRITE) : 0
        let code = withValue(key) { keyValue in
            withValue(value) { dataValue in mdb_put(txn, db.handle, &keyValue, &dataValue, flags) }
        }
        if code == MDB_KEYEXIST && noOverwrite { return false }
        try checkWrite(code, "mdb_put \(db.name)")
        return true
    }

    /// Deletes `key`; returns whether it was present.
    @discardableResult
    public func delete(_ db: Database, key: [UInt8]) throws(StorageError) -> Bool {
        try checkUsable(key: key)
        if key.isEmpty { return false }
        let code = withValue(key) { keyValue in mdb_del(txn, db.handle, &keyValue, nil) }
        if code == MDB_NOTFOUND { return false }
        try checkWrite(code, "mdb_del \(db.name)")
        return true
    }

    /// Deletes every key in `db` (the database itself stays).
    public func clear(_ db: Database) throws(StorageError) {
        try checkUsable()
        try checkWrite(mdb_drop(txn, db.handle, 0), "mdb_drop \(db.name)")
    }

    func openDatabase(_ name: String) throws(StorageError) -> Database {
        try checkUsable()
        var handle: MDB_dbi = 0
        try checkWrite(mdb_dbi_open(txn, name, UInt32(MDB_CREATE), &handle), "mdb_dbi_open \(name)")
        return Database(name: name, handle: handle)
    }

    /// Runs `action` after this transaction commits; never if it aborts (or is re-run after
    /// growing the map: the re-run registers its own).
    func afterCommit(_ action: @escaping () -> Void) {
        afterCommitActions.append(action)
    }

    func checkWrite(_ code: Int32, _ operation: String) throws(StorageError) {
        if code == MDB_MAP_FULL { sawMapFull = true }
        try check(code, operation)
    }

    /// Commits; LMDB frees the transaction whether or not the commit succeeds.
    func commit() throws(StorageError) {
        end()
        try check(mdb_txn_commit(txn), "mdb_txn_commit")
    }

    func runAfterCommit() {
        for action in afterCommitActions { action() }
        afterCommitActions.removeAll()
    }
}

/// A position in one database, ordered by key bytes. Closed when its transaction ends.
public final class Cursor {
    public typealias Record = (key: [UInt8], value: [UInt8])
    public let database: Database
    private let handle: OpaquePointer
    private let maxKeySize: Int
    private var isOpen = true

    init(_ handle: OpaquePointer, database: Database, maxKeySize: Int) {
        self.handle = handle
        self.database = database
        self.maxKeySize = maxKeySize
    }

    public func first() throws(StorageError) -> Record? { try move(MDB_FIRST) }
    public func last() throws(StorageError) -> Record? { try move(MDB_LAST) }
    public func next() throws(StorageError) -> Record? { try move(MDB_NEXT) }
    public func prev() throws(StorageError) -> Record? { try move(MDB_PREV) }

    /// Moves to the first key >= `key`.
    public func seek(atOrAfter key: [UInt8]) throws(StorageError) -> Record? {
        if key.count > maxKeySize { throw StorageError.keyTooLarge(size: key.count, limit: maxKeySize) }
        if key.isEmpty { return try first() }
        precondition(isOpen, "cursor used after its transaction ended")
        var value = MDB_val()
        // MDB_SET_RANGE overwrites the key MDB_val with the found key (a pointer into the map).
        let (code, foundKey) = withValue(key) { keyValue in
            let code = mdb_cursor_get(handle, &keyValue, &value, MDB_SET_RANGE)
            return (code, code == MDB_SUCCESS ? copyBytes(keyValue) : [])
        }
        if code == MDB_NOTFOUND { return nil }
        try check(code, "mdb_cursor_get \(database.name)")
        return (foundKey, copyBytes(value))
    }

    /// Calls `body` for every record whose key starts with `prefix`, in key order. `body`
    /// returns false to stop early.
    public func forEach(prefix: [UInt8], _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool) throws {
        var record = try seek(atOrAfter: prefix)
        while let current = record, current.key.starts(with: prefix) {
            guard try body(current.key, current.value) else { return }
            record = try next()
        }
    }

    private func move(_ operation: MDB_cursor_op) throws(StorageError) -> Record? {
        precondition(isOpen, "cursor used after its transaction ended")
        var key = MDB_val()
        var value = MDB_val()
        let code = mdb_cursor_get(handle, &key, &value, operation)
        if code == MDB_NOTFOUND { return nil }
        try check(code, "mdb_cursor_get \(database.name)")
        return (copyBytes(key), copyBytes(value))
    }

    func close() {
        if isOpen {
            isOpen = false
            mdb_cursor_close(handle)
        }
    }
}

/// Lends `bytes` to LMDB as an MDB_val for the duration of `body`.
private func withValue<R>(_ bytes: [UInt8], _ body: (inout MDB_val) -> R) -> R {
    bytes.withUnsafeBytes { raw in
        if let base = raw.baseAddress {
            var value = MDB_val(mv_size: raw.count, mv_data: UnsafeMutableRawPointer(mutating: base))
            return body(&value)
        }
        var placeholder: UInt8 = 0  // an empty array may have no storage; LMDB wants a pointer
        return withUnsafeMutableBytes(of: &placeholder) { empty in
            var value = MDB_val(mv_size: 0, mv_data: empty.baseAddress)
            return body(&value)
        }
    }
}

private func copyBytes(_ value: MDB_val) -> [UInt8] {
    guard value.mv_size > 0, let data = value.mv_data else { return [] }
    return Array(UnsafeRawBufferPointer(start: data, count: value.mv_size))
}
