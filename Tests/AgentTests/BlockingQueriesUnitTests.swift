// Which parked queries a batch of changed keys wakes.
@testable import Agent
import Testing

@Suite("Blocking query matching")
struct BlockingQueriesUnitTests {
    @Test(arguments: [
        (["a/b", "c"], "a/", true),
        (["a/b", "c"], "", true),
        (["ab", "b"], "a/", false),
        (["a", "a/", "a/z"], "a/z", true),
        (["a/y"], "a/z", false),
        (["zz"], "z", true),
        (["é/x"], "é/", true),
        (["e\u{301}/x"], "é/", false),   // decomposed bytes differ from the precomposed prefix
    ])
    func prefixMatchingIsOnUTF8Bytes(keys: [String], prefix: String, expected: Bool) {
        let sorted = keys.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        #expect(BlockingQueries.anyKey(in: sorted, hasPrefix: Array(prefix.utf8)) == expected)
    }
}
