// Small pieces the storage files share: little-endian fields of the checkpoint side file and the
// journal's frames, and the directory sync that makes a created or renamed file's name durable.
#if canImport(Glibc)
import Glibc
#endif

enum LittleEndian {
    static func append<T: FixedWidthInteger>(_ bytes: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    /// The value at `offset`; bytes past the end read as zeros.
    static func read<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int) -> T {
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size where offset + i < bytes.count {
            value |= T(bytes[offset + i]) << (8 * i)
        }
        return value
    }
}

func syncDirectory(_ directory: String) throws(StorageError) {
    let fd = open(directory, O_RDONLY | O_DIRECTORY)
    guard fd >= 0 else { throw StorageError.from(errno, "open \(directory)") }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw StorageError.from(errno, "fsync \(directory)") }
}
