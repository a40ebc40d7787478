// Blocking queries: `?index=N&wait=D` holds a read until what it reads changes past N.
import Foundation
import HTTP
import Testing

/// Runs a request on another thread so the test can write while it is parked.
final class BackgroundRequest: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private(set) var response: HTTPClientResponse?
    private(set) var error: Error?
    private(set) var elapsedMilliseconds: UInt64 = 0

    init(port: Int, path: String) {
        Thread.detachNewThread { [self] in
            let start = monotonicMilliseconds()
            var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 30)
            do { response = try client.request(method: "GET", path: path) } catch { self.error = error }
            elapsedMilliseconds = monotonicMilliseconds() - start
            done.signal()
        }
    }

    /// True when the request finished within `milliseconds`.
    func finished(within milliseconds: Int) -> Bool {
        done.wait(timeout: .now() + .milliseconds(milliseconds)) == .success
    }
}

@Suite("Blocking queries")
struct BlockingQueryTests {
    @Test func parkedGetReturnsWhenTheKeyChanges() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/watched", body: Array("v1".utf8))
        let index = try #require(try agent.request("GET", "/v1/kv/watched").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/kv/watched?index=\(index)&wait=20s")
        #expect(!parked.finished(within: 300), "the query must park while nothing changed")
        _ = try agent.request("PUT", "/v1/kv/watched", body: Array("v2".utf8))
        #expect(parked.finished(within: 10_000))
        let response = try #require(parked.response)
        #expect(response.status == 200)
        #expect((response.consulIndex ?? 0) > index)
        #expect(response.entries.first?["Value"] as? String == "djI=")
    }

    @Test func parkedListIgnoresWritesOutsideItsPrefixAndTimesOutWithTheSameIndex() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/a/x", body: [1])
        // A list's index is the prefix's own (not the table's), so the unrelated write below
        // cannot wake it whether it lands before or after the request arrives.
        let index = try #require(try agent.request("GET", "/v1/kv/a/?recurse").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/kv/a/?recurse&index=\(index)&wait=600ms")
        _ = try agent.request("PUT", "/v1/kv/elsewhere/b", body: [1])
        #expect(parked.finished(within: 10_000))
        // It ran to its wait (600ms, plus jitter).
        #expect(parked.elapsedMilliseconds >= 590)
        #expect(parked.response?.status == 200)
        #expect(parked.response?.consulIndex == index)
    }

    @Test func waitIsHonouredForAMissingKey() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/x", body: [1])
        let index = try #require(try agent.request("GET", "/v1/kv/missing").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/kv/missing?index=\(index)&wait=300ms")
        #expect(parked.finished(within: 10_000))
        #expect(parked.response?.status == 404)
        #expect(parked.elapsedMilliseconds >= 290)
    }

    @Test func recurseWatcherWakesOnAnyKeyUnderThePrefix() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/svc/a", body: [1])
        let index = try #require(try agent.request("GET", "/v1/kv/svc/?recurse").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/kv/svc/?recurse&index=\(index)&wait=20s")
        #expect(!parked.finished(within: 300))
        _ = try agent.request("PUT", "/v1/kv/svc/new", body: [2])
        #expect(parked.finished(within: 10_000))
        #expect(parked.response?.entries.count == 2)
    }

    @Test func keysWatcherWakesOnDeleteUnderThePrefix() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/k/a", body: [1])
        _ = try agent.request("PUT", "/v1/kv/k/b", body: [1])
        let index = try #require(try agent.request("GET", "/v1/kv/k/?keys").consulIndex)
        let parked = BackgroundRequest(port: agent.port, path: "/v1/kv/k/?keys&index=\(index)&wait=20s")
        #expect(!parked.finished(within: 300))
        _ = try agent.request("DELETE", "/v1/kv/k/a")
        #expect(parked.finished(within: 10_000))
        #expect(parked.response?.json as? [String] == ["k/b"])
    }

    @Test func staleIndexAnswersAtOnce() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/a", body: [1])
        _ = try agent.request("PUT", "/v1/kv/a", body: [2])
        let parked = BackgroundRequest(port: agent.port, path: "/v1/kv/a?index=1&wait=20s")
        #expect(parked.finished(within: 5_000))
        #expect(parked.response?.status == 200)
    }

    @Test func manyParkedQueriesAllWakeOnOneWrite() throws {
        let agent = try TestAgent()
        defer { agent.stop() }
        _ = try agent.request("PUT", "/v1/kv/hot", body: [1])
        let index = try #require(try agent.request("GET", "/v1/kv/hot").consulIndex)
        let parked = (0..<50).map { _ in BackgroundRequest(port: agent.port, path: "/v1/kv/hot?index=\(index)&wait=30s") }
        #expect(!parked[0].finished(within: 300))
        _ = try agent.request("PUT", "/v1/kv/hot", body: [2])
        for request in parked {
            #expect(request.finished(within: 10_000))
            #expect((request.response?.consulIndex ?? 0) > index)
        }
    }
}
