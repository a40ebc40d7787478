// /v1/kv against a live agent: every parameter Consul documents for the endpoint.
import Foundation
import HTTP
import Testing

@Suite("KV HTTP API")
struct KVAPITests {
    @Test func putThenGetReturnsConsulShapedEntry() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let put = try agent.request("PUT", "/v1/kv/web/config", body: Array("bar".utf8))
        #expect(put.status == 200)
        #expect(put.text == "true")
        #expect(put.headers["Content-Type"] == "application/json")

        let get = try agent.request("GET", "/v1/kv/web/config")
        #expect(get.status == 200)
        let entry = try #require(get.entries.first)
        #expect(entry["Key"] as? String == "web/config")
        #expect(entry["Value"] as? String == "YmFy")
        #expect((entry["Flags"] as? NSNumber)?.intValue == 0)
        #expect((entry["LockIndex"] as? NSNumber)?.intValue == 0)
        let create = try #require((entry["CreateIndex"] as? NSNumber)?.uint64Value)
        #expect((entry["ModifyIndex"] as? NSNumber)?.uint64Value == create)
        #expect(entry["Session"] == nil)
        #expect(get.consulIndex == create)
        #expect(get.headers["X-Consul-KnownLeader"] == "true")
        #expect(get.headers["X-Consul-LastContact"] == "0")
    }

    @Test func overwriteKeepsCreateIndexAndAdvancesModifyIndex() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/k", body: Array("1".utf8))
        _ = try agent.request("PUT", "/v1/kv/other", body: Array("x".utf8))
        _ = try agent.request("PUT", "/v1/kv/k", body: Array("2".utf8))
        let entry = try #require(try agent.request("GET", "/v1/kv/k").entries.first)
        let create = (entry["CreateIndex"] as? NSNumber)?.uint64Value ?? 0
        let modify = (entry["ModifyIndex"] as? NSNumber)?.uint64Value ?? 0
        #expect(modify > create)
        #expect(entry["Value"] as? String == "Mg==")
    }

    @Test func missingKeyIs404WithIndexHeader() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/present", body: Array("v".utf8))
        let get = try agent.request("GET", "/v1/kv/absent")
        #expect(get.status == 404)
        #expect(get.body.isEmpty)
        #expect((get.consulIndex ?? 0) >= 1)
    }

    @Test func emptyValueRendersAsNull() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/empty")
        let get = try agent.request("GET", "/v1/kv/empty")
        #expect(get.text.contains("\"Value\":null"))
    }

    @Test func rawReturnsTheValueBytes() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let value: [UInt8] = [0, 1, 2, 255, 10, 13]
        _ = try agent.request("PUT", "/v1/kv/bin", body: value)
        let get = try agent.request("GET", "/v1/kv/bin?raw")
        #expect(get.status == 200)
        #expect(get.body == value)
    }

    @Test func recurseListsEveryKeyUnderThePrefixInOrder() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        for key in ["app/b", "app/a", "app/c/d", "apple", "other"] {
            _ = try agent.request("PUT", "/v1/kv/\(key)", body: Array(key.utf8))
        }
        let list = try agent.request("GET", "/v1/kv/app/?recurse")
        #expect(list.entries.compactMap { $0["Key"] as? String } == ["app/a", "app/b", "app/c/d"])
        let all = try agent.request("GET", "/v1/kv/?recurse")
        #expect(all.entries.count == 5)
        let none = try agent.request("GET", "/v1/kv/nothing/?recurse")
        #expect(none.status == 404)
    }

    @Test func keysWithAndWithoutSeparator() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        for key in ["a/b", "a/c/d", "a/c/e", "b"] {
            _ = try agent.request("PUT", "/v1/kv/\(key)", body: [1])
        }
        let flat = try agent.request("GET", "/v1/kv/a/?keys")
        #expect(flat.json as? [String] == ["a/b", "a/c/d", "a/c/e"])
        let folded = try agent.request("GET", "/v1/kv/a/?keys&separator=/")
        #expect(folded.json as? [String] == ["a/b", "a/c/"])
        let root = try agent.request("GET", "/v1/kv/?keys&separator=/")
        #expect(root.json as? [String] == ["a/", "b"])
        let none = try agent.request("GET", "/v1/kv/zzz?keys")
        #expect(none.status == 404)
    }

    @Test func flagsAreStoredAndInvalidFlagsRejected() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("PUT", "/v1/kv/f?flags=42", body: [1]).text == "true")
        let entry = try #require(try agent.request("GET", "/v1/kv/f").entries.first)
        #expect((entry["Flags"] as? NSNumber)?.uint64Value == 42)
        let bad = try agent.request("PUT", "/v1/kv/f?flags=-1", body: [1])
        #expect(bad.status == 400)
        #expect(bad.text.contains("Invalid flags"))
    }

    @Test func checkAndSetFollowsModifyIndex() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("PUT", "/v1/kv/c?cas=0", body: Array("first".utf8)).text == "true")
        #expect(try agent.request("PUT", "/v1/kv/c?cas=0", body: Array("second".utf8)).text == "false")
        let entry = try #require(try agent.request("GET", "/v1/kv/c").entries.first)
        let modify = (entry["ModifyIndex"] as? NSNumber)?.uint64Value ?? 0
        #expect(try agent.request("PUT", "/v1/kv/c?cas=\(modify + 100)", body: [2]).text == "false")
        #expect(try agent.request("PUT", "/v1/kv/c?cas=\(modify)", body: Array("third".utf8)).text == "true")
        #expect(try agent.request("GET", "/v1/kv/c?raw").text == "third")
        let bad = try agent.request("PUT", "/v1/kv/c?cas=abc", body: [1])
        #expect(bad.status == 400)
    }

    @Test func deleteSingleRecurseAndCAS() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        for key in ["d/1", "d/2", "d/3/x", "keep"] { _ = try agent.request("PUT", "/v1/kv/\(key)", body: [1]) }
        #expect(try agent.request("DELETE", "/v1/kv/d/1").text == "true")
        #expect(try agent.request("GET", "/v1/kv/d/1").status == 404)
        #expect(try agent.request("DELETE", "/v1/kv/never-existed").text == "true")

        let entry = try #require(try agent.request("GET", "/v1/kv/d/2").entries.first)
        let modify = (entry["ModifyIndex"] as? NSNumber)?.uint64Value ?? 0
        #expect(try agent.request("DELETE", "/v1/kv/d/2?cas=\(modify + 1)").text == "false")
        #expect(try agent.request("GET", "/v1/kv/d/2").status == 200)
        #expect(try agent.request("DELETE", "/v1/kv/d/2?cas=\(modify)").text == "true")
        #expect(try agent.request("GET", "/v1/kv/d/2").status == 404)

        #expect(try agent.request("DELETE", "/v1/kv/d/?recurse").text == "true")
        #expect(try agent.request("GET", "/v1/kv/d/?recurse").status == 404)
        #expect(try agent.request("GET", "/v1/kv/keep").status == 200)
    }

    @Test func listIndexReflectsDeletionsUnderThePrefix() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/p/a", body: [1])
        _ = try agent.request("PUT", "/v1/kv/p/b", body: [1])
        _ = try agent.request("PUT", "/v1/kv/q", body: [1])
        _ = try agent.request("DELETE", "/v1/kv/p/b")
        let tableIndex = try #require(try agent.request("GET", "/v1/kv/q").consulIndex)
        _ = try agent.request("PUT", "/v1/kv/q", body: [2])
        let list = try agent.request("GET", "/v1/kv/p/?recurse")
        // The prefix index is the deletion of p/b, not the later write to q.
        #expect(list.consulIndex == tableIndex)
    }

    @Test func valueOver512KiBIsRefusedWith413() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        let exact = try agent.request("PUT", "/v1/kv/big", body: [UInt8](repeating: 7, count: 512 * 1024))
        #expect(exact.status == 200)
        let over = try agent.request("PUT", "/v1/kv/big2", body: [UInt8](repeating: 7, count: 512 * 1024 + 1))
        #expect(over.status == 413)
        #expect(over.text.contains("too large"))
        #expect(try agent.request("GET", "/v1/kv/big2").status == 404)
        #expect(try agent.request("GET", "/v1/kv/big?raw").body.count == 512 * 1024)
    }

    @Test func badRequestsGetClearErrors() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        #expect(try agent.request("PUT", "/v1/kv/", body: [1]).status == 400)
        #expect(try agent.request("GET", "/v1/kv/").status == 400)
        #expect(try agent.request("DELETE", "/v1/kv/").status == 400)
        #expect(try agent.request("PATCH", "/v1/kv/x").status == 405)
        #expect(try agent.request("GET", "/v1/kv/x?index=abc").status == 400)
        #expect(try agent.request("GET", "/v1/kv/x?index=1&wait=5").status == 400)
        #expect(try agent.request("GET", "/v1/kv/x?stale&consistent").status == 400)
        #expect(try agent.request("GET", "/v1/kv/x?dc=elsewhere").status == 500)
        let longKey = String(repeating: "k", count: 600)
        let tooLong = try agent.request("PUT", "/v1/kv/\(longKey)", body: [1])
        #expect(tooLong.status == 400)
        #expect(tooLong.text.contains("Key too large"))
        #expect(try agent.request("PUT", "/v1/kv/s?acquire=abc", body: [1]).status == 400)
    }

    @Test func consistencyModesAreAccepted() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/m", body: [1])
        for mode in ["stale", "consistent", "dc=dc1"] {
            #expect(try agent.request("GET", "/v1/kv/m?\(mode)").status == 200)
        }
    }

    @Test func encodedSlashInPathIsPartOfTheKey() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/sp%20ace/x", body: [1])
        let keys = try agent.request("GET", "/v1/kv/?keys")
        #expect(keys.json as? [String] == ["sp ace/x"])
    }
}
