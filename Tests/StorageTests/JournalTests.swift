// The write-ahead journal: records read back after reopening, a torn or stale tail is not a
// record, space is reused only once covered, and any bytes decode to a (possibly empty) prefix.
import Foundation
import Storage
import Testing

@Suite("Journal")
struct JournalTests {
    private func payload(_ sequence: UInt64, size: Int = 100) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: Int(sequence) &* 31 &+ $0) }
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
        // Continuing over two halves equals one pass.
        let bytes = Array("the quick brown fox".utf8)
        #expect(CRC32C.checksum(bytes[8...], continuing: CRC32C.checksum(bytes[..<8])) == CRC32C.checksum(bytes))
    }

    @Test func recordsSurviveReopenAndAreReadFromAGivenSequence() throws {
        try withTemporaryDirectory { dir in
            do {
                let journal = try Journal(directory: dir, fileBytes: 64 << 10)
                #expect(try journal.records(after: 0).records.isEmpty)
                journal.startWriting(nextSequence: 1)
                for sequence in 1...20 as ClosedRange<UInt64> {
                    #expect(try journal.append(payload(sequence)) == sequence)
                }
            }
            let reopened = try Journal(directory: dir, fileBytes: 64 << 10)
            let all = try reopened.records(after: 0)
            #expect(all.records.map(\.sequence) == Array(1...20))
            #expect(all.records.allSatisfy { $0.payload == payload($0.sequence) })
            #expect(all.highestSequence == 20)
            #expect(try reopened.records(after: 15).records.map(\.sequence) == [16, 17, 18, 19, 20])
            #expect(try reopened.records(after: 20).records.isEmpty)
        }
    }

    @Test func recordsOfAnySizeReadBackAcrossBlockAndPageBoundaries() throws {
        try withTemporaryDirectory { dir in
            var generator = SystemRandomNumberGenerator()
            var written: [Journal.Record] = []
            do {
                let journal = try Journal(directory: dir, fileBytes: 1 << 20)
                journal.startWriting(nextSequence: 1)
                var total = 0
                while total < (1 << 20) - 20_000 {
                    let sequence = UInt64(written.count + 1)
                    let record = Journal.Record(sequence: sequence,
                                                payload: payload(sequence, size: Int.random(in: 0...9000, using: &generator)))
                    #expect(try journal.append(record.payload) == sequence)
                    written.append(record)
                    total += Journal.frameHeaderBytes + record.payload.count
                }
            }
            let reopened = try Journal(directory: dir, fileBytes: 1 << 20)
            #expect(try reopened.records(after: 0).records == written)
        }
    }

    @Test func aTornLastRecordIsNotARecord() throws {
        try withTemporaryDirectory { dir in
            do {
                let journal = try Journal(directory: dir, fileBytes: 64 << 10)
                journal.startWriting(nextSequence: 1)
                for sequence in 1...3 as ClosedRange<UInt64> { _ = try journal.append(payload(sequence)) }
            }
            // Flip one byte of the third record's payload, as a write cut short would leave it.
            let path = dir + "/journal-0"
            var contents = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            let third = 2 * (Journal.frameHeaderBytes + 100) + Journal.frameHeaderBytes + 50
            contents[third] ^= 0xFF
            try Data(contents).write(to: URL(fileURLWithPath: path))
            let reopened = try Journal(directory: dir, fileBytes: 64 << 10)
            #expect(try reopened.records(after: 0).records.map(\.sequence) == [1, 2])
        }
    }

    @Test func aFullFileWaitsForItsRecordsToBeCoveredThenTheOtherIsUsed() throws {
        try withTemporaryDirectory { dir in
            let journal = try Journal(directory: dir, fileBytes: 64 << 10)
            journal.startWriting(nextSequence: 1)
            let size = 4000
            let perFile = (64 << 10) / (Journal.frameHeaderBytes + size)
            var sequence: UInt64 = 0
            // Fill journal-0, then journal-1 (journal-0's records were covered meanwhile)...
            for _ in 0..<perFile { sequence = try #require(try journal.append(payload(sequence + 1, size: size))) }
            journal.markCovered(through: sequence)
            for _ in 0..<perFile { sequence = try #require(try journal.append(payload(sequence + 1, size: size))) }
            // ...and now journal-0 may be reused, journal-1 may not: no room until covered.
            journal.markCovered(through: UInt64(perFile))
            #expect(try journal.append(payload(sequence + 1, size: size)) != nil)
            sequence += 1
            for _ in 1..<perFile { sequence = try #require(try journal.append(payload(sequence + 1, size: size))) }
            #expect(try journal.append(payload(sequence + 1, size: size)) == nil, "journal-1 holds records not covered")
            // The uncovered records read back in order across both files.
            let read = try journal.records(after: UInt64(perFile))
            #expect(read.records.map(\.sequence) == Array(UInt64(perFile + 1)...sequence))
            journal.markCovered(through: sequence)
            #expect(try journal.append(payload(sequence + 1, size: size)) == sequence + 1)
            // A payload larger than a file never fits.
            #expect(!journal.fits(payloadBytes: 64 << 10))
            #expect(try journal.append([UInt8](repeating: 1, count: 64 << 10)) == nil)
        }
    }

    @Test func writingAgainFromTheStartLeavesNoStaleRecordBehindTheNewOnes() throws {
        try withTemporaryDirectory { dir in
            do {
                let journal = try Journal(directory: dir, fileBytes: 64 << 10)
                journal.startWriting(nextSequence: 1)
                for sequence in 1...10 as ClosedRange<UInt64> { _ = try journal.append(payload(sequence, size: 200)) }
            }
            do {
                // A restart after everything was covered: new records overwrite the first ones.
                let journal = try Journal(directory: dir, fileBytes: 64 << 10)
                journal.startWriting(nextSequence: 11)
                for sequence in 11...13 as ClosedRange<UInt64> { _ = try journal.append(payload(sequence, size: 50)) }
            }
            let reopened = try Journal(directory: dir, fileBytes: 64 << 10)
            let read = try reopened.records(after: 10)
            #expect(read.records.map(\.sequence) == [11, 12, 13])
            #expect(read.highestSequence == 13)
        }
    }

    @Test func anyBytesDecodeToAPrefixOfTheRecordsAndNeverTrap() {
        var generator = SystemRandomNumberGenerator()
        var valid: [UInt8] = []
        var records: [Journal.Record] = []
        for sequence in 1...30 as ClosedRange<UInt64> {
            let record = Journal.Record(sequence: sequence, payload: payload(sequence, size: Int.random(in: 0...300, using: &generator)))
            records.append(record)
            valid += Journal.frame(sequence: record.sequence, payload: record.payload)
        }
        #expect(Journal.decodeFile(valid) == records)
        for _ in 0..<500 {
            // Cut anywhere, and corrupt one byte past the cut's last whole record or anywhere.
            var bytes = Array(valid[..<Int.random(in: 0...valid.count, using: &generator)])
            if !bytes.isEmpty, Bool.random(using: &generator) {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
            }
            let decoded = Journal.decodeFile(bytes)
            #expect(decoded.count <= records.count)
            #expect(Array(records.prefix(decoded.count)) == decoded)
        }
        for _ in 0..<500 {
            let noise = (0..<Int.random(in: 0...2000, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = Journal.decodeFile(noise)
        }
    }
}
