// A write-ahead journal: the one synced write of a durable Raft log batch.
//
// Why: a durable LMDB commit writes every page on the B-tree paths it touched plus the free list
// and a meta page, then syncs twice (data, then meta). On this machine's disk that was about 7
// pages per log commit on each server, and the disk's bandwidth, not its sync rate, capped
// writes. The journal appends one small record to a file that is already allocated and
// written (so the synced write touches no file-system metadata) and syncs once; the LMDB log is
// then written in batches without syncing, and checkpointed (`EnvironmentCheckpoint`). A record
// may be overwritten only once the caller has made it durable elsewhere (`markCovered`).
//
// Two files of fixed size, `journal-0` and `journal-1`, zero-filled when created, written
// alternately from their start, whole blocks at a time (O_DIRECT | O_DSYNC). A record's frame:
// payload length u32, CRC-32C u32 of the sequence and payload, sequence u64 (all
// little-endian), payload. Reading a file stops at
// the first frame that is not whole (a zeroed tail, a torn last write, the remains of an older
// record) or whose sequence does not follow the previous one in that file.
#if canImport(Glibc)
import Glibc
#endif

/// Owned by one thread (the Raft disk thread).
public final class Journal {
    public struct Record: Equatable, Sendable {
        public var sequence: UInt64
        public var payload: [UInt8]
        public init(sequence: UInt64, payload: [UInt8]) {
            self.sequence = sequence
            self.payload = payload
        }
    }

    public static let frameHeaderBytes = 16
    public static let fileNames = ["journal-0", "journal-1"]

    public let directory: String
    /// The size of each file (the size a file was created with).
    public let fileBytes: [Int]
    /// The sequence the next record gets.
    public private(set) var nextSequence: UInt64 = 1
    /// Records up to here are durable elsewhere and may be overwritten.
    public private(set) var coveredSequence: UInt64 = 0
    /// For creating and reading the files.
    private var descriptors: [Int32] = []
    /// For appending: O_DSYNC (each write returns once durable), and O_DIRECT where the file
    /// system takes it. Three servers syncing at once on this machine's disk took 0.35 ms a
    /// write with O_DIRECT against 0.5 ms through the page cache.
    private var writeDescriptors: [Int32] = []
    private var current = 0
    private var offset = 0
    /// The bytes of the current file since its last page boundary, before `offset`: every write
    /// covers whole blocks (O_DIRECT), so the block is written again with them in front of the
    /// record (the same bytes: a torn write leaves the records before it whole).
    private var tail: [UInt8] = []
    /// Page-aligned, for O_DIRECT.
    private var buffer: UnsafeMutableRawPointer?
    private var bufferBytes = 0
    static let pageBytes = 4096
    /// The unit of each write: 512 bytes (the logical block of most devices; three servers
    /// writing at once took 0.26 ms a write here, against 0.35 ms for 4 KiB), or a page if the
    /// device refuses that.
    private var blockBytes = 512
    /// The highest sequence written to each file since `startWriting` (0: none).
    private var highestWritten = [UInt64](repeating: 0, count: 2)
    private var writing = false

    /// Opens both files, creating (zero-filled, synced) any that is missing or empty, and the
    /// directory if it is missing.
    public init(directory: String, fileBytes: Int) throws(StorageError) {
        precondition(fileBytes >= 4096, "journal files must hold at least a page")
        self.directory = directory
        if mkdir(directory, 0o755) != 0, errno != EEXIST { throw StorageError.from(errno, "mkdir \(directory)") }
        var sizes: [Int] = []
        var created = false
        do {
            for name in Self.fileNames {
                let path = directory + "/" + name
                let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
                guard fd >= 0 else { throw StorageError.from(errno, "open \(path)") }
                descriptors.append(fd)
                var info = stat()
                guard fstat(fd, &info) == 0 else { throw StorageError.from(errno, "fstat \(path)") }
                if info.st_size == 0 {
                    try Self.zeroFill(fd, bytes: fileBytes, path: path)
                    sizes.append(fileBytes)
                    created = true
                } else {
                    sizes.append(Int(info.st_size))
                }
            }
            if created { try syncDirectory(directory) }
            for name in Self.fileNames {
                let path = directory + "/" + name
                var fd = open(path, O_WRONLY | O_DSYNC | O_CLOEXEC | Self.directFlag)
                if fd < 0, errno == EINVAL { fd = open(path, O_WRONLY | O_DSYNC | O_CLOEXEC) }  // tmpfs, for one
                guard fd >= 0 else { throw StorageError.from(errno, "open \(path)") }
                writeDescriptors.append(fd)
            }
        } catch let error as StorageError {
            for fd in descriptors + writeDescriptors { close(fd) }
            throw error
        } catch {
            preconditionFailure("unreachable: \(error)")
        }
        self.fileBytes = sizes
    }

    deinit {
        for fd in descriptors + writeDescriptors { close(fd) }
        buffer?.deallocate()
    }

    #if arch(x86_64)
    private static let directFlag: Int32 = 0o40000
    #elseif arch(arm64)
    private static let directFlag: Int32 = 0o200000
    #else
    private static let directFlag: Int32 = 0
    #endif

    /// Every whole record with a sequence above `after`, in order, up to the first gap. Call
    /// before `startWriting`.
    public func records(after: UInt64) throws(StorageError) -> (records: [Record], highestSequence: UInt64) {
        var all: [Record] = []
        var highest: UInt64 = 0
        for (file, fd) in descriptors.enumerated() {
            let contents = try Self.readAll(fd, bytes: fileBytes[file], path: directory + "/" + Self.fileNames[file])
            let records = Self.decodeFile(contents)
            highest = max(highest, records.last?.sequence ?? 0)
            all += records.filter { $0.sequence > after }
        }
        all.sort { $0.sequence < $1.sequence }
        var result: [Record] = []
        var expected = after + 1
        for record in all {
            guard record.sequence == expected else { break }
            result.append(record)
            expected += 1
        }
        return (result, highest)
    }

    /// Starts appending at the beginning of `journal-0`. Every record already in the files must
    /// be durable elsewhere; `nextSequence` must be above all of them.
    public func startWriting(nextSequence: UInt64) {
        precondition(nextSequence > 0)
        self.nextSequence = nextSequence
        coveredSequence = nextSequence - 1
        current = 0
        offset = 0
        tail = []
        highestWritten = [0, 0]
        writing = true
    }

    /// The frame of a record (also what `append` writes).
    public static func frame(sequence: UInt64, payload: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = []
        frame.reserveCapacity(frameHeaderBytes + payload.count)
        LittleEndian.append(&frame, UInt32(payload.count))
        var sequenceBytes: [UInt8] = []
        LittleEndian.append(&sequenceBytes, sequence)
        LittleEndian.append(&frame, CRC32C.checksum(payload, continuing: CRC32C.checksum(sequenceBytes)))
        frame += sequenceBytes
        frame += payload
        return frame
    }

    /// Whether a payload of this size can ever be journaled (it fits in a file).
    public func fits(payloadBytes: Int) -> Bool {
        Self.frameHeaderBytes + payloadBytes <= usableBytes.min()!
    }

    /// Whole pages only, so that a write padded to whole blocks stays inside the file.
    private var usableBytes: [Int] { fileBytes.map { $0 / Self.pageBytes * Self.pageBytes } }

    /// Writes one record durably; returns its sequence. Nil when there is no room: the
    /// current file is full and the other still holds records not yet covered (or the payload
    /// does not fit in a file at all). The caller then makes what it journaled durable
    /// another way, calls `markCovered`, and tries again.
    public func append(_ payload: [UInt8]) throws(StorageError) -> UInt64? {
        precondition(writing, "journal: append before startWriting")
        let frame = Self.frame(sequence: nextSequence, payload: payload)
        let usable = usableBytes
        if offset + frame.count > usable[current] {
            let other = 1 - current
            guard highestWritten[other] <= coveredSequence, frame.count <= usable[other] else { return nil }
            current = other
            offset = 0
            tail = []
            highestWritten[other] = 0
        }
        let fd = writeDescriptors[current]
        let path = directory + "/" + Self.fileNames[current]
        while true {
            let block = blockBytes
            let prefix = offset % block
            let total = prefix + frame.count
            let padded = (total + block - 1) / block * block
            if bufferBytes < padded {
                buffer?.deallocate()
                buffer = UnsafeMutableRawPointer.allocate(byteCount: padded, alignment: Self.pageBytes)
                bufferBytes = padded
            }
            let out = buffer!
            tail.withUnsafeBytes { out.copyMemory(from: $0.baseAddress! + (tail.count - prefix), byteCount: prefix) }
            frame.withUnsafeBytes { (out + prefix).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            (out + total).initializeMemory(as: UInt8.self, repeating: 0, count: padded - total)
            var written = 0
            var refused = false
            while written < padded {
                let count = pwrite(fd, out + written, padded - written, off_t(offset - prefix + written))
                if count < 0 {
                    if errno == EINTR { continue }
                    if errno == EINVAL, written == 0, block < Self.pageBytes {
                        refused = true
                        break
                    }
                    throw StorageError.from(errno, "pwrite \(path)")
                }
                written += count
            }
            if refused {
                blockBytes = Self.pageBytes
                continue
            }
            break
        }
        let keep = (offset + frame.count) % Self.pageBytes
        tail = keep <= frame.count ? Array(frame.suffix(keep)) : Array(tail.suffix(keep - frame.count)) + frame
        let sequence = nextSequence
        offset += frame.count
        highestWritten[current] = sequence
        nextSequence += 1
        return sequence
    }

    /// Records up to `sequence` are durable elsewhere: their space may be reused.
    public func markCovered(through sequence: UInt64) {
        coveredSequence = max(coveredSequence, min(sequence, nextSequence - 1))
    }

    // MARK: - Frames

    /// The records of one file's contents: from offset 0, while frames are whole and their
    /// sequences consecutive. Total: any bytes give a (possibly empty) list.
    public static func decodeFile(_ bytes: [UInt8]) -> [Record] {
        var records: [Record] = []
        var offset = 0
        while offset + frameHeaderBytes <= bytes.count {
            let length = Int(LittleEndian.read(bytes, offset) as UInt32)
            let checksum: UInt32 = LittleEndian.read(bytes, offset + 4)
            let sequence: UInt64 = LittleEndian.read(bytes, offset + 8)
            guard sequence > 0, length <= bytes.count - offset - frameHeaderBytes else { break }
            if let previous = records.last, sequence != previous.sequence + 1 { break }
            let payloadStart = offset + frameHeaderBytes
            let payload = bytes[payloadStart ..< payloadStart + length]
            guard CRC32C.checksum(payload, continuing: CRC32C.checksum(bytes[offset + 8 ..< offset + 16])) == checksum else { break }
            records.append(Record(sequence: sequence, payload: Array(payload)))
            offset = payloadStart + length
        }
        return records
    }

    // MARK: - Files

    private static func zeroFill(_ fd: Int32, bytes: Int, path: String) throws(StorageError) {
        let chunk = [UInt8](repeating: 0, count: min(bytes, 1 << 20))
        var done = 0
        while done < bytes {
            let size = min(chunk.count, bytes - done)
            let count = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, size, off_t(done)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw StorageError.from(errno, "pwrite \(path)")
            }
            done += count
        }
        // fsync, not fdatasync: the file's size and blocks are new.
        guard fsync(fd) == 0 else { throw StorageError.from(errno, "fsync \(path)") }
    }


    private static func readAll(_ fd: Int32, bytes: Int, path: String) throws(StorageError) -> [UInt8] {
        var contents = [UInt8](repeating: 0, count: bytes)
        var done = 0
        while done < bytes {
            let count = contents.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, bytes - done, off_t(done)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw StorageError.from(errno, "pread \(path)")
            }
            if count == 0 { break }  // shorter than at open: the rest reads as zeros
            done += count
        }
        return contents
    }
}
