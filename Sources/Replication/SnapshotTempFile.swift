// Temporary files of snapshot streams (a leader's dump being sent, a follower's dump being
// received) under the data dir, so a large state is never held in memory whole. They are
// removed when a stream ends, however it ends, and any left over are removed at start.
#if canImport(Glibc)
import Glibc
#endif

/// Thread confinement (why `@unchecked Sendable`): created on the loop thread, then used only
/// by jobs on the replicator's snapshot thread, which run one at a time in submission order.
final class SnapshotTempFile: @unchecked Sendable {
    let path: String
    private var fd: Int32 = -1
    private(set) var failure: String?

    init(path: String) { self.path = path }

    /// Creates (truncating) the file for writing and reading.
    func create() {
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { failure = "create \(path): errno \(errno)" }
    }

    func append(_ bytes: [UInt8]) {
        guard failure == nil, fd >= 0 else { return }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                failure = "write \(path): errno \(errno)"
                return
            }
            written += n
        }
    }

    /// `count` bytes at `offset` (fewer only at the end of the file).
    func read(at offset: Int, count: Int) -> [UInt8]? {
        guard failure == nil, fd >= 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(offset + got)) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { failure = "read \(path): errno \(errno)"; return nil }
            if n == 0 { break }
            got += n
        }
        bytes.removeSubrange(got...)
        return bytes
    }

    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    /// Closes and deletes the file.
    func remove() {
        close()
        unlink(path)
    }

    /// Creates `directory` if missing and deletes every file in it (streams a crash left behind).
    static func prepare(directory: String) {
        mkdir(directory, 0o755)
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasSuffix(".tmp") { unlink(directory + "/" + name) }
        }
    }
}
