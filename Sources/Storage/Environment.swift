// One LMDB environment (a directory holding data.mdb and lock.mdb): opening it, running read
// and write transactions, and growing the memory map when a write runs out of room, so
// MDB_MAP_FULL never reaches callers (below `maxMapSizeBytes`).
import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// How much a commit promises after it returns.
public enum Durability: Sendable {
    /// fsync data and meta page on every commit: a committed transaction survives an OS crash.
    case full
    /// MDB_NOMETASYNC: atomicity, consistency and isolation are kept, but an OS crash may
    /// undo the last committed transaction (the meta page is flushed by the next commit's sync).
    case noMetaSync
    /// MDB_NOSYNC: commits are never flushed by LMDB; only `sync()` makes them durable. A process
    /// crash loses nothing (the writes are in the page cache), but an OS crash may lose any
    /// commit since the last `sync()` and, because LMDB's page and meta writes may then reach the
    /// disk out of order, can leave the latest meta page pointing at pages that never arrived.
    /// Only for data that can be rebuilt: `StateCheckpoint` pins a synced snapshot and rolls the
    /// meta pages back to it after an unclean stop, and the Raft log replays the rest.
    case noSync
}

/// A named database (LMDB's MDB_dbi) inside an environment. Valid until the environment closes.
public struct Database: Sendable, Hashable {
    public let name: String
    let handle: MDB_dbi
}

/// An LMDB environment.
///
/// Thread confinement (why `@unchecked Sendable` is sound):
/// - Read transactions may run on any thread, many at once: the environment is opened with
///   MDB_NOTLS, so a reader slot belongs to the transaction, not to the thread.
/// - Write transactions run one at a time (`writerMutex`; LMDB also serialises writers).
/// - Resizing the map needs no transaction active in this process (LMDB's rule for
///   mdb_env_set_mapsize). Every transaction holds `resizeLock` shared for its lifetime and the
///   resize holds it exclusive; the lock prefers the exclusive side so readers that loop can't
///   starve a resize.
/// - A transaction, and any cursor opened in it, belongs to the closure that received it, on
///   that closure's thread; using one after the closure returns stops the process.
/// - A `read` may nest inside a `read` or a `write` on the same thread. A `write` must not be
///   started inside any transaction on the same thread (it could deadlock against a resize);
///   that is checked and stops the process.
/// - `close()` may be called only when no other thread uses the environment.
public final class Environment: @unchecked Sendable {
    /// LMDB's maximum key length in bytes (mdb_env_get_maxkeysize; 511 for LMDB 0.9.24).
    public let maxKeySize: Int
    /// The map never grows beyond this; a write needing more fails with MDB_MAP_FULL.
    public let maxMapSizeBytes: Int
    public let directory: String

    private var env: OpaquePointer?
    /// The write transaction `writeHeld` keeps open, with every body run in it (to run them
    /// again in a fresh transaction). Touched only by its owner thread.
    private var held: (transaction: WriteTransaction, owner: pthread_t, bodies: [(WriteTransaction) throws -> Void])?
    private let resizeLock: UnsafeMutablePointer<pthread_rwlock_t>
    private let writerMutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Per thread: how many of this environment's transactions the thread has open (they
    /// share one hold of `resizeLock`).
    private let depthKey: pthread_key_t

    /// Opens (creating if needed) the environment in `directory`, creating the directory too.
    /// - Parameters:
    ///   - initialMapSizeBytes: starting map size; it doubles whenever a write runs out of room.
    ///     An existing environment keeps its larger size.
    ///   - maxReaders: concurrent read transactions allowed (LMDB's reader table size).
    public init(directory: String, maxDatabases: Int = 16, initialMapSizeBytes: Int = 64 << 20,
                durability: Durability = .full, maxReaders: Int = 256,
                maxMapSizeBytes: Int = 1 << 40) throws(StorageError) {
        precondition(maxDatabases > 0 && maxReaders > 0, "maxDatabases and maxReaders must be positive")
        precondition(initialMapSizeBytes > 0 && maxMapSizeBytes >= initialMapSizeBytes,
                     "need 0 < initialMapSizeBytes <= maxMapSizeBytes")
        try Environment.makeDirectories(directory)

        var handle: OpaquePointer?
        try check(mdb_env_create(&handle), "mdb_env_create")
        guard let handle else { throw StorageError.from(ENOMEM, "mdb_env_create") }
        do throws(StorageError) {
            try check(mdb_env_set_maxdbs(handle, MDB_dbi(maxDatabases)), "mdb_env_set_maxdbs")
            try check(mdb_env_set_mapsize(handle, initialMapSizeBytes), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxreaders(handle, UInt32(maxReaders)), "mdb_env_set_maxreaders")
            var flags = UInt32(MDB_NOTLS)
            switch durability {
            case .full: break
            case .noMetaSync: flags |= UInt32(MDB_NOMETASYNC)
            case .noSync: flags |= UInt32(MDB_NOSYNC)
            }
            try check(mdb_env_open(handle, directory, flags, 0o644), "mdb_env_open \(directory)")
            var deadReaders: Int32 = 0
            try check(mdb_reader_check(handle, &deadReaders), "mdb_reader_check")
        } catch {
            mdb_env_close(handle)
            throw error
        }

        self.env = handle
        self.directory = directory
        self.maxKeySize = Int(mdb_env_get_maxkeysize(handle))
        self.maxMapSizeBytes = maxMapSizeBytes

        resizeLock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(resizeLock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
        writerMutex = .allocate(capacity: 1)
        pthread_mutex_init(writerMutex, nil)
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        depthKey = key
    }

    deinit {
        close()
        pthread_key_delete(depthKey)
        pthread_rwlock_destroy(resizeLock)
        resizeLock.deallocate()
        pthread_mutex_destroy(writerMutex)
        writerMutex.deallocate()
    }

    /// Closes the environment. Only when no other thread uses it; idempotent.
    public func close() {
        if let env {
            mdb_env_close(env)
            self.env = nil
        }
    }

    /// Opens (creating if missing) a named database, in its own write transaction.
    public func openDatabase(_ name: String) throws(StorageError) -> Database {
        do {
            return try write { txn in try txn.openDatabase(name) }
        } catch let error as StorageError {
            throw error
        } catch {
            preconditionFailure("openDatabase threw a non-storage error: \(error)")
        }
    }

    /// Runs `body` in a read-only transaction: a consistent snapshot of the last commit.
    /// Byte arrays returned by the transaction are copies and outlive it.
    public func read<T>(_ body: (ReadTransaction) throws -> T) throws -> T {
        let handle = openHandle()
        enterTransaction()
        defer { leaveTransaction() }
        let txn = try beginTransaction(handle, flags: UInt32(MDB_RDONLY))
        let transaction = ReadTransaction(txn, maxKeySize: maxKeySize)
        defer { transaction.abort() }
        return try body(transaction)
    }

    /// Runs `body` in a write transaction: commits when it returns, aborts when it throws.
    ///
    /// `body` may run more than once: when the map is full, the transaction is aborted, the map
    /// doubled and `body` run again from the start in a fresh transaction. So `body` must be
    /// re-runnable: keep side effects outside LMDB out of it, or make them idempotent.
    @discardableResult
    public func write<T>(_ body: (WriteTransaction) throws -> T) throws -> T {
        precondition(transactionDepth == 0,
                     "Environment.write inside another transaction on the same thread")
        let handle = openHandle()
        pthread_mutex_lock(writerMutex)
        defer { pthread_mutex_unlock(writerMutex) }
        enterTransaction()
        defer { leaveTransaction() }

        while true {
            let txn = try beginTransaction(handle, flags: 0)
            let transaction = WriteTransaction(txn, maxKeySize: maxKeySize)
            let result: T
            do {
                result = try body(transaction)
            } catch {
                let mapFull = transaction.sawMapFull
                transaction.abort()
                if mapFull { try growMap(handle); continue }
                throw error
            }
            if transaction.sawMapFull {  // body caught MDB_MAP_FULL and carried on
                transaction.abort()
                try growMap(handle)
                continue
            }
            do throws(StorageError) {
                try transaction.commit()
            } catch {
                if error.isMapFull { try growMap(handle); continue }
                throw error
            }
            transaction.runAfterCommit()
            return result
        }
    }

    /// Runs `body` in a write transaction that stays open after it returns: later `writeHeld`
    /// calls on the same thread add to it, and `commitHeld` commits them all at once. Readers
    /// (and checkpoints) see none of it until then.
    ///
    /// Why: a commit writes every page it touched, and under a checkpoint's pin each commit's
    /// pages are new ones, so many small commits write the same leaves many times. One commit
    /// for many bodies writes each leaf once.
    ///
    /// - The thread holds the writer lock until `commitHeld`: other threads' `write`s wait, and a
    ///   `write` on this thread stops the process (commit first).
    /// - A body that throws leaves no trace: the transaction is rebuilt from the earlier bodies.
    ///   When the map is full it is grown and every body runs again, so bodies must be
    ///   re-runnable and deterministic (`write`'s rule), and they are kept until the commit.
    @discardableResult
    public func writeHeld<T>(_ body: @escaping (WriteTransaction) throws -> T) throws -> T {
        let handle = openHandle()
        if held == nil {
            precondition(transactionDepth == 0, "Environment.writeHeld inside another transaction on the same thread")
            pthread_mutex_lock(writerMutex)
            enterTransaction()
            do {
                held = (WriteTransaction(try beginTransaction(handle, flags: 0), maxKeySize: maxKeySize), pthread_self(), [])
            } catch {
                leaveTransaction()
                pthread_mutex_unlock(writerMutex)
                throw error
            }
        }
        precondition(pthread_equal(held!.owner, pthread_self()) != 0, "Environment.writeHeld from a thread that does not hold it")
        while true {
            let transaction = held!.transaction
            do {
                let result = try body(transaction)
                if !transaction.sawMapFull {
                    held!.bodies.append { _ = try body($0) }
                    return result
                }
            } catch {
                if !transaction.sawMapFull {
                    try rebuildHeld(handle, grow: false)
                    throw error
                }
            }
            try rebuildHeld(handle, grow: true)
        }
    }

    /// Whether this thread holds a `writeHeld` transaction not yet committed.
    public var holdsWrite: Bool {
        guard let held else { return false }
        return pthread_equal(held.owner, pthread_self()) != 0
    }

    /// Commits the `writeHeld` transaction (nothing when there is none) and lets go of the
    /// writer lock. On the thread that holds it.
    public func commitHeld() throws {
        guard held != nil else { return }
        precondition(holdsWrite, "Environment.commitHeld from a thread that does not hold the write")
        let handle = openHandle()
        defer {
            held = nil
            leaveTransaction()
            pthread_mutex_unlock(writerMutex)
        }
        while true {
            let transaction = held!.transaction
            if !transaction.sawMapFull {
                do throws(StorageError) {
                    try transaction.commit()
                    transaction.runAfterCommit()
                    return
                } catch {
                    // LMDB has freed the transaction either way.
                    guard error.isMapFull else { throw error }
                }
            }
            try rebuildHeld(handle, grow: true)
        }
    }

    /// Aborts the held transaction and runs its bodies again in a fresh one, after doubling the
    /// map when `grow`.
    private func rebuildHeld(_ handle: OpaquePointer, grow: Bool) throws {
        var grow = grow
        while true {
            let stale = held!.transaction
            if !stale.isEnded { stale.abort() }
            if grow { try growMap(handle) }
            let fresh = WriteTransaction(try beginTransaction(handle, flags: 0), maxKeySize: maxKeySize)
            held!.transaction = fresh
            do {
                for body in held!.bodies { try body(fresh) }
            } catch {
                if !fresh.sawMapFull { throw error }
            }
            if !fresh.sawMapFull { return }
            grow = true
        }
    }

    /// The current size of the memory map in bytes.
    public var mapSizeBytes: Int {
        let handle = openHandle()
        enterTransaction()
        defer { leaveTransaction() }
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        return info.me_mapsize
    }

    /// LMDB's page size for this environment (the size of each of the two meta pages).
    public var pageSize: Int {
        var stat = MDB_stat()
        mdb_env_stat(openHandle(), &stat)
        return Int(stat.ms_psize)
    }

    /// The id of the last committed write transaction.
    public var lastTransactionID: UInt64 {
        let handle = openHandle()
        enterTransaction()
        defer { leaveTransaction() }
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        return UInt64(info.me_last_txnid)
    }

    /// Opens a read transaction that is never read from: while it is open, LMDB does not reuse
    /// any page of the snapshot it saw (the oldest reader bounds page reuse), so that snapshot
    /// stays whole on disk whatever later commits write. It holds no pointer into the map,
    /// so the map may still grow while it is open. Release it before `close()`.
    public func pinSnapshot() throws(StorageError) -> SnapshotPin {
        let handle = openHandle()
        enterTransaction()
        defer { leaveTransaction() }
        let txn = try beginTransaction(handle, flags: UInt32(MDB_RDONLY))
        return SnapshotPin(txn: txn, transactionID: UInt64(mdb_txn_id(txn)))
    }

    /// Flushes to disk whatever commits have not been synced (matters with `.noMetaSync`).
    public func sync() throws(StorageError) {
        try check(mdb_env_sync(openHandle(), 1), "mdb_env_sync")
    }

    /// Writes a consistent copy of the environment (as of one read transaction) into
    /// `toDirectory`, which is created if missing and must not already hold an environment.
    /// `compact` omits free pages and renumbers them (slower, smaller).
    public func copy(toDirectory: String, compact: Bool) throws(StorageError) {
        let handle = openHandle()
        try Environment.makeDirectories(toDirectory)
        enterTransaction()
        defer { leaveTransaction() }
        try check(mdb_env_copy2(handle, toDirectory, compact ? UInt32(MDB_CP_COMPACT) : 0),
                  "mdb_env_copy2 \(toDirectory)")
    }

    // MARK: - Transactions and the resize lock

    private func openHandle() -> OpaquePointer {
        guard let env else { preconditionFailure("environment \(directory) used after close()") }
        return env
    }

    private var transactionDepth: Int {
        get { Int(bitPattern: pthread_getspecific(depthKey)) }
        set { pthread_setspecific(depthKey, UnsafeRawPointer(bitPattern: newValue)) }
    }

    /// Takes `resizeLock` shared unless this thread already holds it for an outer transaction.
    private func enterTransaction() {
        if transactionDepth == 0 { pthread_rwlock_rdlock(resizeLock) }
        transactionDepth += 1
    }

    private func leaveTransaction() {
        transactionDepth -= 1
        if transactionDepth == 0 { pthread_rwlock_unlock(resizeLock) }
    }

    private func beginTransaction(_ handle: OpaquePointer, flags: UInt32) throws(StorageError) -> OpaquePointer {
        var adoptedNewSize = false
        while true {
            var txn: OpaquePointer?
            let code = mdb_txn_begin(handle, nil, flags, &txn)
            if code == MDB_SUCCESS, let txn { return txn }
            if code == MDB_MAP_RESIZED && !adoptedNewSize {
                // Another process grew the map: adopt its size (set_mapsize(0)), then retry.
                adoptedNewSize = true
                try withNoTransactions(StorageError.from(code, "mdb_txn_begin")) {
                    mdb_env_set_mapsize(handle, 0)
                }
                continue
            }
            throw StorageError.from(code, "mdb_txn_begin")
        }
    }

    /// Doubles the map (up to `maxMapSizeBytes`). Called by `write` after aborting its
    /// transaction.
    private func growMap(_ handle: OpaquePointer) throws(StorageError) {
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        let current = info.me_mapsize
        let full = StorageError.lmdb(
            operation: "grow map beyond maxMapSizeBytes (\(maxMapSizeBytes))",
            code: MDB_MAP_FULL, message: String(cString: mdb_strerror(MDB_MAP_FULL)))
        guard current < maxMapSizeBytes else { throw full }
        let newSize = current > maxMapSizeBytes / 2 ? maxMapSizeBytes : current * 2
        try withNoTransactions(full) { mdb_env_set_mapsize(handle, newSize) }
    }

    /// Runs `change` while no transaction is active in this process. The caller holds
    /// `resizeLock` shared exactly once, for its own (already ended) transaction; a caller nested
    /// in an outer transaction cannot let go of it, and gets `blocked` instead.
    private func withNoTransactions(_ blocked: StorageError, _ change: () -> Int32) throws(StorageError) {
        guard transactionDepth == 1 else { throw blocked }
        pthread_rwlock_unlock(resizeLock)
        pthread_rwlock_wrlock(resizeLock)
        let code = change()
        pthread_rwlock_unlock(resizeLock)
        pthread_rwlock_rdlock(resizeLock)
        try check(code, "mdb_env_set_mapsize")
    }

    private static func makeDirectories(_ path: String) throws(StorageError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw StorageError.from(errno, "mkdir \(current)")
            }
        }
    }
}

/// See `Environment.pinSnapshot`. Used by one thread at a time; `release` is idempotent.
public final class SnapshotPin: @unchecked Sendable {
    private var txn: OpaquePointer?
    /// The transaction whose snapshot is pinned.
    public let transactionID: UInt64

    init(txn: OpaquePointer, transactionID: UInt64) {
        self.txn = txn
        self.transactionID = transactionID
    }

    public func release() {
        if let txn { mdb_txn_abort(txn) }
        txn = nil
    }

    deinit { release() }
}
