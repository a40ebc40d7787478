// Durable checkpoints for an environment opened with `Durability.noSync` (the replicated state).
//
// Why: syncing the state store on every apply cost a third of a write's fsyncs, and the state
// can always be rebuilt from the Raft log past some durable point. But with MDB_NOSYNC an OS
// crash can leave LMDB's newest meta page on disk without the pages it points at (the kernel
// writes dirty pages back in any order), and LMDB would open that broken tree. So:
// - A checkpoint pins the last commit's snapshot with an idle read transaction, so no later
//   commit overwrites its pages, copies both meta pages, syncs the data file (possibly on
//   another thread while commits go on: `begin`/`complete`/`adopt`), saves the meta pages in a
//   side file (temporary file, fsync, rename, directory fsync), and only then lets go of the
//   previous checkpoint's pin.
// - `recover(directory:)`, before the environment is opened, compares the side file with the
//   data file's meta pages. If commits happened after the last checkpoint (the process or the OS
//   stopped without a final `take()`), it writes the saved meta pages back: the environment then
//   opens at the checkpoint, whose pages are all on disk and were never reused, and the caller
//   replays the log from there. A process crash alone would not need it (the page cache kept
//   every write in order), but telling the two apart is not worth a wrong guess.
// Layout (LMDB 0.9.x, 64-bit): pages 0 and 1 of data.mdb are the meta pages, each a 16-byte page
// header followed by MDB_meta, whose mm_magic is at byte 16 and mm_txnid at byte 144.
#if canImport(Glibc)
import Glibc
#endif

/// Thread confinement: the thread that writes the environment calls everything but `complete`,
/// which may run on another thread (so the sync does not stall commits).
public final class EnvironmentCheckpoint {
    public enum Recovery: Equatable, Sendable {
        /// No checkpoint on record (a new environment, or none taken yet).
        case noCheckpoint
        /// The data file's newest commit is the checkpoint: nothing to undo.
        case clean(transactionID: UInt64)
        /// Commits after the checkpoint were undone; the environment opens at `to`.
        case rolledBack(from: UInt64, to: UInt64)
    }

    public let environment: Environment
    /// The transaction of the last checkpoint made durable (by `take` or `complete`).
    public var transactionID: UInt64 {
        pthread_mutex_lock(mutex); defer { pthread_mutex_unlock(mutex) }
        return recordedTransactionID
    }
    private var pin: SnapshotPin?
    private var pinnedTransactionID: UInt64 = 0
    private var isReleased = false
    private var lastStartedNanoseconds: UInt64 = 0
    /// Guards `recordedTransactionID` and the side file: `complete` may run on another thread.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        return mutex
    }()
    private var recordedTransactionID: UInt64 = 0

    public static let sideFileName = "checkpoint"
    private static let magic: UInt32 = 0x4350_4B43  // "CKPC"
    private static let version: UInt32 = 1
    private static let lmdbMagic: UInt32 = 0xBEEF_C0DE
    private static let metaMagicOffset = 16
    private static let metaTxnOffset = 144
    private static let headerSize = 4 + 4 + 4 + 8

    /// A checkpoint begun on the writer thread: its snapshot is pinned, not yet synced.
    public struct Pending: @unchecked Sendable {
        public let transactionID: UInt64
        let pageSize: Int
        let metaPages: [UInt8]
        let pin: SnapshotPin
    }

    public init(environment: Environment) {
        self.environment = environment
    }

    deinit {
        pin?.release()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// A whole checkpoint, synchronously: `begin`, `complete`, `adopt`. Writer thread.
    public func take(nowNanoseconds: UInt64 = 0) throws(StorageError) {
        // Callers take a checkpoint to make durable what they applied: a held write
        // (`Environment.writeHeld`) would be left out of it.
        precondition(!environment.holdsWrite, "checkpoint taken while this thread holds an uncommitted write (commitHeld first)")
        let pending = try begin(nowNanoseconds: nowNanoseconds)
        do {
            try complete(pending)
        } catch {
            pending.pin.release()
            throw error
        }
        adopt(pending)
    }

    /// Writer thread, between commits: pins the last commit's snapshot and copies its meta
    /// pages. Cheap; the sync is `complete`'s.
    public func begin(nowNanoseconds: UInt64 = 0) throws(StorageError) -> Pending {
        let pageSize = environment.pageSize
        let directory = environment.directory
        let pin = try environment.pinSnapshot()
        let metaPages: [UInt8]
        do {
            metaPages = try Self.readMetaPages(dataFile: directory + "/data.mdb", pageSize: pageSize)
        } catch {
            pin.release()
            throw error
        }
        guard Self.newestTransaction(metaPages, pageSize: pageSize) == pin.transactionID else {
            pin.release()
            throw StorageError.from(EIO, "checkpoint: the meta pages of \(directory)/data.mdb are not those of transaction \(pin.transactionID)")
        }
        lastStartedNanoseconds = nowNanoseconds
        return Pending(transactionID: pin.transactionID, pageSize: pageSize, metaPages: metaPages, pin: pin)
    }

    /// Any thread, while the writer goes on committing: makes the pending snapshot durable
    /// (fdatasync of the data file covers every page written before it) and records it in the
    /// side file, unless a newer checkpoint was recorded meanwhile.
    public func complete(_ pending: Pending) throws(StorageError) {
        let directory = environment.directory
        let dataFile = directory + "/data.mdb"
        let fd = open(dataFile, O_RDONLY)
        guard fd >= 0 else { throw StorageError.from(errno, "open \(dataFile)") }
        let synced = fdatasync(fd) == 0
        let failure = errno
        close(fd)
        guard synced else { throw StorageError.from(failure, "fdatasync \(dataFile)") }
        var file: [UInt8] = []
        file.reserveCapacity(Self.headerSize + pending.metaPages.count)
        LittleEndian.append(&file, Self.magic)
        LittleEndian.append(&file, Self.version)
        LittleEndian.append(&file, UInt32(pending.pageSize))
        LittleEndian.append(&file, pending.transactionID)
        file += pending.metaPages
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard pending.transactionID > recordedTransactionID else { return }
        try Self.writeDurably(file, to: directory + "/" + Self.sideFileName, directory: directory)
        recordedTransactionID = pending.transactionID
    }

    /// Writer thread, after `complete`: the pending snapshot becomes the pinned one and the
    /// previous pin lets go (a pending older than the current pin is just dropped).
    public func adopt(_ pending: Pending) {
        // After `release()` nothing may stay pinned: the environment is about to close.
        guard !isReleased, pending.transactionID >= pinnedTransactionID else {
            pending.pin.release()
            return
        }
        pin?.release()
        pin = pending.pin
        pinnedTransactionID = pending.transactionID
    }

    /// Whether `intervalNanoseconds` have passed since the last checkpoint began.
    public func isDue(nowNanoseconds: UInt64, intervalNanoseconds: UInt64) -> Bool {
        nowNanoseconds &- lastStartedNanoseconds >= intervalNanoseconds
    }

    /// Lets LMDB reuse the pinned pages again, for good: a later `adopt` drops its pin too.
    /// Call before the environment closes.
    public func release() {
        isReleased = true
        pin?.release()
        pin = nil
    }

    /// Run before opening the environment in `directory`: rolls its meta pages back to the last
    /// checkpoint if commits followed it (see the file comment).
    public static func recover(directory: String) throws(StorageError) -> Recovery {
        let sidePath = directory + "/" + sideFileName
        let dataPath = directory + "/data.mdb"
        guard let side = try readWholeFile(sidePath) else { return .noCheckpoint }
        guard access(dataPath, F_OK) == 0 else {
            unlink(sidePath)  // the environment is gone; its checkpoint means nothing
            return .noCheckpoint
        }
        guard side.count >= headerSize, LittleEndian.read(side, 0) as UInt32 == magic,
              LittleEndian.read(side, 4) as UInt32 == version else {
            throw StorageError.from(EINVAL, "checkpoint: \(sidePath) is not a checkpoint file")
        }
        let pageSize = Int(LittleEndian.read(side, 8) as UInt32)
        let saved: UInt64 = LittleEndian.read(side, 12)
        guard pageSize >= 512, side.count == headerSize + 2 * pageSize else {
            throw StorageError.from(EINVAL, "checkpoint: \(sidePath) has the wrong size")
        }
        let current = try readMetaPages(dataFile: dataPath, pageSize: pageSize)
        let newest = newestTransaction(current, pageSize: pageSize)
        // LMDB refuses to open a file with either meta page invalid (a torn write): rewrite both then.
        if newest == saved, validMetaPages(current, pageSize: pageSize) == 2 { return .clean(transactionID: saved) }
        if let newest, newest < saved {
            // The data file is older than the checkpoint (replaced behind our back): the saved
            // pages would point at pages this file never had.
            throw StorageError.from(EINVAL, "checkpoint: \(dataPath) (transaction \(newest)) is older than its checkpoint (\(saved))")
        }
        let fd = open(dataPath, O_WRONLY)
        guard fd >= 0 else { throw StorageError.from(errno, "open \(dataPath)") }
        defer { close(fd) }
        let pages = Array(side[headerSize...])
        let written = pages.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == pages.count else { throw StorageError.from(written < 0 ? errno : EIO, "pwrite \(dataPath)") }
        guard fdatasync(fd) == 0 else { throw StorageError.from(errno, "fdatasync \(dataPath)") }
        return .rolledBack(from: newest ?? 0, to: saved)
    }

    // MARK: - Files

    static func readMetaPages(dataFile: String, pageSize: Int) throws(StorageError) -> [UInt8] {
        let fd = open(dataFile, O_RDONLY)
        guard fd >= 0 else { throw StorageError.from(errno, "open \(dataFile)") }
        defer { close(fd) }
        var pages = [UInt8](repeating: 0, count: 2 * pageSize)
        let count = pages.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw StorageError.from(errno, "pread \(dataFile)") }
        return pages  // a short file leaves zeros: no valid meta page there
    }

    static func validMetaPages(_ pages: [UInt8], pageSize: Int) -> Int {
        (0..<2).filter { LittleEndian.read(pages, $0 * pageSize + metaMagicOffset) as UInt32 == lmdbMagic }.count
    }

    /// The higher transaction id of the two meta pages that carry LMDB's magic, if any does.
    static func newestTransaction(_ pages: [UInt8], pageSize: Int) -> UInt64? {
        var newest: UInt64?
        for page in 0..<2 {
            let base = page * pageSize
            guard LittleEndian.read(pages, base + metaMagicOffset) as UInt32 == lmdbMagic else { continue }
            let txn: UInt64 = LittleEndian.read(pages, base + metaTxnOffset)
            newest = max(newest ?? 0, txn)
        }
        return newest
    }

    private static func writeDurably(_ bytes: [UInt8], to path: String, directory: String) throws(StorageError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw StorageError.from(errno, "open \(temporary)") }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = written == bytes.count && fdatasync(fd) == 0
        let failure = errno
        close(fd)
        guard synced else { throw StorageError.from(written < 0 || written == bytes.count ? failure : EIO, "write \(temporary)") }
        guard rename(temporary, path) == 0 else { throw StorageError.from(errno, "rename \(temporary)") }
        try syncDirectory(directory)
    }

    private static func readWholeFile(_ path: String) throws(StorageError) -> [UInt8]? {
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw StorageError.from(errno, "open \(path)")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 { throw StorageError.from(errno, "read \(path)") }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
    }
}
