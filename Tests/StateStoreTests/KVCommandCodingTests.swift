// The command encoding: round trips, specific malformed inputs, and a seeded property test
// that decoding is total and canonical.
import TestSupport
import StateStore
import Testing

@Suite struct KVCommandCodingTests {
    static let examples: [KVCommand] = [
        .set(key: "a", value: bytes("v"), flags: 0),
        .set(key: "ünïcode/ключ/🔑", value: [], flags: .max),
        .set(key: "", value: [0, 0xff], flags: 1),
        .checkAndSet(key: "k", value: [UInt8](repeating: 9, count: 300), flags: 42, modifyIndex: 0),
        .checkAndSet(key: "k", value: [], flags: 0, modifyIndex: .max),
        .delete(key: "some/key"),
        .deleteCAS(key: "k", modifyIndex: 1 << 40),
        .deleteTree(prefix: ""),
        .deleteTree(prefix: "a/"),
    ]

    @Test(arguments: examples)
    func roundTrips(command: KVCommand) throws {
        #expect(try KVCommand(decoding: command.encoded()) == command)
    }

    @Test func encodingIsCompact() {
        #expect(KVCommand.delete(key: "a").encoded() == [3, 1, 0x61])
        #expect(KVCommand.set(key: "k", value: [7], flags: 1).encoded() == [1, 1, 0x6b, 1, 7, 0, 0, 0, 0, 0, 0, 0, 1])
        let long = KVCommand.set(key: "k", value: [UInt8](repeating: 0, count: 300), flags: 0).encoded()
        #expect(Array(long[3...4]) == [0xac, 0x02], "300 as a two-byte varint")
    }

    @Test func malformedInputsAreRejectedWithReasons() {
        let cases: [(bytes: [UInt8], reason: String)] = [
            ([], "missing tag"),
            ([0], "unknown tag 0"),
            ([6], "unknown tag 6"),
            ([3], "missing key length"),
            ([3, 5, 0x61], "key length 5 exceeds the 1 bytes left"),
            ([3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "key length 9223372036854775807 exceeds the 0 bytes left"),
            ([3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "key length: varint overflows 64 bits"),
            ([3, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], "key length: varint longer than 10 bytes"),
            ([3, 0x81, 0x00], "key length: non-minimal varint"),
            ([3, 0x80], "missing key length"),
            ([3, 1, 0xff], "key is not valid UTF-8"),
            ([3, 1, 0x61, 0], "1 trailing bytes"),
            ([1, 1, 0x61, 0], "flags: 0 of 8 bytes"),
            ([4, 1, 0x61, 0, 0, 0], "modify index: 3 of 8 bytes"),
        ]
        for (input, reason) in cases {
            #expect(throws: StateStoreError.malformedCommand(reason), "\(input)") { try KVCommand(decoding: input) }
        }
    }

    /// Thousands of random byte strings and mutations of valid encodings: decoding never
    /// crashes, and whatever decodes re-encodes to the same bytes.
    @Test(arguments: [1, 2, 3, UInt64.random(in: 4...UInt64.max)])
    func decodingIsTotalAndCanonical(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var decoded = 0
        for round in 0..<5_000 {
            var input: [UInt8]
            if round % 2 == 0 {
                let length = Int.random(in: 0...40, using: &generator)
                input = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if !input.isEmpty && Bool.random(using: &generator) { input[0] = UInt8.random(in: 1...5, using: &generator) }
            } else {
                let command = randomCommand(&generator)
                let valid = command.encoded()
                if (try? KVCommand(decoding: valid)) != command {
                    Issue.record("seed \(seed) round \(round): \(command) does not round-trip")
                    return
                }
                input = mutate(valid, &generator)
            }
            do {
                let command = try KVCommand(decoding: input)
                decoded += 1
                if command.encoded() != input {
                    Issue.record("seed \(seed) round \(round): \(input) decoded to \(command), which encodes differently")
                    return
                }
            } catch {
                // Rejected: that is a fine outcome for random bytes.
            }
        }
        #expect(decoded > 0, "seed \(seed): some mutations should still decode")
    }

    private func randomCommand(_ g: inout SeededGenerator) -> KVCommand {
        let key = randomString(&g)
        let value = (0..<Int.random(in: 0...200, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
        let number = Bool.random(using: &g) ? UInt64.random(in: 0...300, using: &g) : g.next()
        switch Int.random(in: 0..<5, using: &g) {
        case 0: return .set(key: key, value: value, flags: number)
        case 1: return .checkAndSet(key: key, value: value, flags: g.next(), modifyIndex: number)
        case 2: return .delete(key: key)
        case 3: return .deleteCAS(key: key, modifyIndex: number)
        default: return .deleteTree(prefix: key)
        }
    }

    private func randomString(_ g: inout SeededGenerator) -> String {
        let alphabet: [Character] = ["a", "b", "/", "-", "é", "🔑", "0", " "]
        return String((0..<Int.random(in: 0...20, using: &g)).map { _ in alphabet.randomElement(using: &g)! })
    }

    private func mutate(_ valid: [UInt8], _ g: inout SeededGenerator) -> [UInt8] {
        var bytes = valid
        for _ in 0..<Int.random(in: 1...3, using: &g) {
            switch Int.random(in: 0..<6, using: &g) {
            case 0 where !bytes.isEmpty:  // flip a byte
                bytes[Int.random(in: 0..<bytes.count, using: &g)] = UInt8.random(in: 0...255, using: &g)
            case 1 where !bytes.isEmpty:  // truncate
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &g))
            case 2:  // append junk
                bytes.append(UInt8.random(in: 0...255, using: &g))
            case 3 where bytes.count > 1:  // forge a huge length right after the tag
                bytes.replaceSubrange(1..<2, with: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
            case 4 where !bytes.isEmpty:  // drop one byte from the middle
                bytes.remove(at: Int.random(in: 0..<bytes.count, using: &g))
            default:  // insert a byte
                bytes.insert(UInt8.random(in: 0...255, using: &g), at: Int.random(in: 0...bytes.count, using: &g))
            }
        }
        return bytes
    }
}
