// Listing and opening every named database of an environment. LMDB records each named
// database as a key of its unnamed main database, so a whole-environment dump (the Raft
// snapshot of the state store) finds tables it was never told about.
import CLMDB

extension ReadTransaction {
    /// The names of every named database in the environment, in byte order.
    public func databaseNames() throws(StorageError) -> [String] {
        try checkUsable()
        var main: MDB_dbi = 0
        // The main database is always open; opening it with a nil name just returns its handle.
        try check(mdb_dbi_open(txn, nil, 0, &main), "mdb_dbi_open main")
        let cursor = try self.cursor(Database(name: "(main)", handle: main))
        var names: [String] = []
        var record = try cursor.first()
        while let (key, _) = record {
            names.append(String(decoding: key, as: UTF8.self))
            record = try cursor.next()
        }
        return names
    }
}

extension WriteTransaction {
    /// Opens (creating if missing) the named database `name` inside this transaction. The
    /// handle stays valid after a commit; an abort closes a handle this transaction created.
    public func openOrCreateDatabase(_ name: String) throws(StorageError) -> Database {
        try openDatabase(name)
    }
}
