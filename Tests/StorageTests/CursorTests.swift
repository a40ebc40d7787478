import Storage
import Testing

@Suite struct CursorTests {
    @Test func walksKeysInByteOrderBothWays() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                for key in ["b", "a", "d", "c"] { try txn.put(db, key: bytes(key), value: bytes(key.uppercased())) }
            }
            try env.read { txn throws in
                let cursor = try txn.cursor(db)
                var forward: [String] = []
                var record = try cursor.first()
                while let (key, _) = record {
                    forward.append(String(decoding: key, as: UTF8.self))
                    record = try cursor.next()
                }
                #expect(forward == ["a", "b", "c", "d"])
                var backward: [String] = []
                record = try cursor.last()
                while let (key, value) = record {
                    backward.append(String(decoding: key, as: UTF8.self))
                    #expect(value == bytes(String(decoding: key, as: UTF8.self).uppercased()))
                    record = try cursor.prev()
                }
                #expect(backward == ["d", "c", "b", "a"])
            }
        }
    }

    @Test func seekFindsFirstKeyAtOrAfter() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                for key in ["apple", "banana", "cherry"] { try txn.put(db, key: bytes(key), value: []) }
            }
            try env.read { txn throws in
                let cursor = try txn.cursor(db)
                let cases: [(seek: String, found: String?)] = [
                    ("", "apple"), ("a", "apple"), ("apple", "apple"), ("apricot", "banana"),
                    ("cherry", "cherry"), ("d", nil),
                ]
                for (seek, found) in cases {
                    let key = try cursor.seek(atOrAfter: bytes(seek))?.key
                    #expect(key.map { String(decoding: $0, as: UTF8.self) } == found, "seek \(seek)")
                }
            }
        }
    }

    @Test func prefixIterationVisitsOnlyMatchingKeys() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            try env.write { txn throws in
                for key in ["a", "a/", "a/b", "a/c/d", "a0", "ab", "b/a"] { try txn.put(db, key: bytes(key), value: []) }
            }
            let cases: [(prefix: String, keys: [String])] = [
                ("a/", ["a/", "a/b", "a/c/d"]),
                ("a", ["a", "a/", "a/b", "a/c/d", "a0", "ab"]),
                ("b", ["b/a"]),
                ("c", []),
                ("", ["a", "a/", "a/b", "a/c/d", "a0", "ab", "b/a"]),
            ]
            try env.read { txn throws in
                for (prefix, expected) in cases {
                    var keys: [String] = []
                    try txn.cursor(db).forEach(prefix: bytes(prefix)) { key, _ in
                        keys.append(String(decoding: key, as: UTF8.self))
                        return true
                    }
                    #expect(keys == expected, "prefix \(prefix)")
                }
                var firstOnly: [[UInt8]] = []
                try txn.cursor(db).forEach(prefix: bytes("a")) { key, _ in firstOnly.append(key); return false }
                #expect(firstOnly == [bytes("a")])
            }
        }
    }

    @Test func bigEndianKeysSortNumerically() throws {
        try withEnvironment { env throws in
            let db = try env.openDatabase("t")
            let numbers: [UInt64] = [300, 2, 1 << 40, 0, 256, 1, UInt64.max, 255]
            try env.write { txn throws in
                for n in numbers { try txn.put(db, key: n.bigEndianBytes, value: []) }
            }
            let stored = try env.read { txn throws in
                let cursor = try txn.cursor(db)
                var result: [UInt64] = []
                var record = try cursor.first()
                while let (key, _) = record {
                    result.append(try #require(UInt64(bigEndianBytes: key)))
                    record = try cursor.next()
                }
                return result
            }
            #expect(stored == numbers.sorted())
        }
    }

    @Test func bigEndianBytesRoundTripAndRejectWrongLengths() {
        for n: UInt64 in [0, 1, 255, 256, 0x0102_0304_0506_0708, .max] {
            #expect(UInt64(bigEndianBytes: n.bigEndianBytes) == n)
        }
        #expect(UInt64(1).bigEndianBytes == [0, 0, 0, 0, 0, 0, 0, 1])
        #expect(UInt64(bigEndianBytes: [1, 2, 3]) == nil)
        #expect(UInt64(bigEndianBytes: [UInt8](repeating: 0, count: 9)) == nil)
    }
}
