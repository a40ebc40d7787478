// What one journal record holds: the log part of one disk job (Journal.swift says why the log
// is journaled). Replayed into the LMDB log after a crash, it does what `RaftLogWriter` does
// with the job: drop the suffix from the first entry's index, append, store the hard state and
// the address book.
import RaftCore
import Storage

struct RaftJournalBatch: Equatable {
    var hardState: HardState?
    var addressBook: [NodeID: String]?
    var entries: [Entry]

    private static let hasHardState: UInt8 = 1
    private static let hasAddressBook: UInt8 = 2

    /// flags u8; [term u64, vote u64, commit u64]; [address book length u32, bytes];
    /// entry count u32; per entry: index u64, term u64, stored kind u8, length u32, data.
    /// Big-endian, like the rest of the log's bytes.
    func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(40 + entries.reduce(0) { $0 + 21 + $1.data.count })
        bytes.append((hardState == nil ? 0 : Self.hasHardState) | (addressBook == nil ? 0 : Self.hasAddressBook))
        if let hardState {
            bytes += hardState.term.bigEndianBytes
            bytes += (hardState.votedFor ?? 0).bigEndianBytes
            bytes += hardState.commitIndex.bigEndianBytes
        }
        if let addressBook {
            let book = AddressBookCodec.encode(addressBook)
            Self.appendU32(&bytes, book.count)
            bytes += book
        }
        Self.appendU32(&bytes, entries.count)
        for entry in entries {
            bytes += entry.index.bigEndianBytes
            bytes += entry.term.bigEndianBytes
            bytes.append(entry.kind.storedKind)
            Self.appendU32(&bytes, entry.data.count)
            bytes += entry.data
        }
        return bytes
    }

    /// Total: any bytes give a batch or `.corrupt` (a record passed its CRC, so a failure
    /// here means a writer bug or a foreign file, and the server must not start on it).
    static func decode(_ bytes: [UInt8]) throws(StorageError) -> RaftJournalBatch {
        var reader = Reader(bytes: bytes)
        let flags = try reader.byte()
        guard flags & ~(hasHardState | hasAddressBook) == 0 else { throw .corrupt("journal batch: unknown flags \(flags)") }
        var batch = RaftJournalBatch(hardState: nil, addressBook: nil, entries: [])
        if flags & hasHardState != 0 {
            let term = try reader.u64()
            let vote = try reader.u64()
            batch.hardState = HardState(term: term, votedFor: vote == 0 ? nil : vote, commitIndex: try reader.u64())
        }
        if flags & hasAddressBook != 0 {
            let length = try reader.u32()
            batch.addressBook = try AddressBookCodec.decode(try reader.take(length))
        }
        let count = try reader.u32()
        // Each entry takes at least 21 bytes: a count past that is corrupt, not a reason to allocate.
        guard count <= (bytes.count - reader.offset) / 21 else { throw .corrupt("journal batch: \(count) entries in \(bytes.count) bytes") }
        batch.entries.reserveCapacity(count)
        for _ in 0..<count {
            let index = try reader.u64()
            let term = try reader.u64()
            let storedKind = try reader.byte()
            guard let kind = EntryKind(storedKind: storedKind) else { throw .corrupt("journal batch: entry \(index) has kind \(storedKind)") }
            let data = try reader.take(try reader.u32())
            if let previous = batch.entries.last, index != previous.index + 1 {
                throw .corrupt("journal batch: entry \(index) follows \(previous.index)")
            }
            batch.entries.append(Entry(index: index, term: term, kind: kind, data: data))
        }
        guard reader.offset == bytes.count else { throw .corrupt("journal batch: \(bytes.count - reader.offset) trailing bytes") }
        return batch
    }

    private static func appendU32(_ bytes: inout [UInt8], _ value: Int) {
        precondition(value <= Int(UInt32.max))
        bytes += UInt64(value).bigEndianBytes[4...]
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take(_ count: Int) throws(StorageError) -> [UInt8] {
            guard count <= bytes.count - offset else { throw .corrupt("journal batch truncated at byte \(offset)") }
            defer { offset += count }
            return Array(bytes[offset ..< offset + count])
        }
        mutating func byte() throws(StorageError) -> UInt8 { try take(1)[0] }
        mutating func u64() throws(StorageError) -> UInt64 { UInt64(bigEndianBytes: try take(8))! }
        mutating func u32() throws(StorageError) -> Int { Int(UInt64(bigEndianBytes: [0, 0, 0, 0] + (try take(4)))!) }
    }
}
