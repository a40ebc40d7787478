// The client-agent RPC frame codec: round trips, canonical encoding, and totality of the
// decoder on random, mutated and truncated input (seeded: a failure prints its seed).
import EventLoop
import HTTP
import Replication
import Testing
import TestSupport
@testable import Agent

@Suite("RPC wire codec")
struct RPCWireTests {
    private static let tokenBytes = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~".utf8)

    private func randomToken(_ g: inout SeededGenerator, max: Int) -> String {
        let n = Int.random(in: 1...max, using: &g)
        return String(decoding: (0..<n).map { _ in Self.tokenBytes.randomElement(using: &g)! }, as: UTF8.self)
    }

    private func randomHeaders(_ g: inout SeededGenerator) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for _ in 0..<Int.random(in: 0...6, using: &g) {
            let valueScalars = (0..<Int.random(in: 0...40, using: &g)).map { _ -> Character in
                // Printable ASCII, plus a few multi-byte characters.
                Bool.random(using: &g) ? Character(UnicodeScalar(UInt8.random(in: 0x20...0x7E, using: &g)))
                                       : ["é", "→", "日", "\t"].randomElement(using: &g)!
            }
            headers.add(randomToken(&g, max: 30), String(valueScalars))
        }
        return headers
    }

    private func randomMessage(_ g: inout SeededGenerator) -> RPCMessage {
        let body = (0..<Int.random(in: 0...300, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
        switch Int.random(in: 0..<4, using: &g) {
        case 0:
            let target = "/v1/" + (0..<Int.random(in: 0...60, using: &g)).map { _ in
                String(UnicodeScalar(UInt8.random(in: 0x21...0x7E, using: &g)))
            }.joined()
            return .request(RPCRequest(id: g.next(), method: randomToken(&g, max: 16), target: target,
                                       headers: randomHeaders(&g), body: body))
        case 1:
            return .response(RPCResponse(id: g.next(), status: Int.random(in: 100...999, using: &g),
                                         headers: randomHeaders(&g), body: body))
        case 2:
            return .cancel(id: g.next())
        default:
            return .hello(version: RPCWire.version)
        }
    }

    private func encode(_ message: RPCMessage) throws -> [UInt8] {
        switch message {
        case .request(let request): return try RPCWire.encode(request)
        case .response(let response): return try RPCWire.encode(response)
        case .cancel(let id): return RPCWire.cancel(id: id)
        case .hello: return RPCWire.hello()
        }
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func everyEncodedMessageDecodesToItselfAndNoPrefixDecodes(seed: UInt64) throws {
        var g = SeededGenerator(seed: seed)
        for round in 0..<1_500 {
            let message = randomMessage(&g)
            let bytes = try encode(message)
            #expect(try RPCWire.decode(bytes) == message, "seed \(seed) round \(round)")
            // Every strict prefix is an error (truncated), never a different message.
            for cut in [0, 1, bytes.count / 2, bytes.count - 1] where cut < bytes.count {
                #expect(throws: RPCWireError.self, "seed \(seed) round \(round) cut \(cut)") {
                    try RPCWire.decode(Array(bytes.prefix(cut)))
                }
            }
            #expect(throws: RPCWireError.trailingBytes(1)) { try RPCWire.decode(bytes + [0]) }
        }
    }

    /// Random and mutated payloads: decode answers (no crash, no hang), and whatever it accepts
    /// re-encodes to exactly the same bytes, so a decoded value is always a valid one.
    @Test(arguments: [11, 12, 13, 14] as [UInt64])
    func decoderIsTotalOnRandomAndMutatedInput(seed: UInt64) throws {
        var g = SeededGenerator(seed: seed)
        var accepted = 0
        for round in 0..<5_000 {
            var bytes: [UInt8]
            if round % 3 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &g)).map { _ in UInt8.random(in: 0...255, using: &g) }
                if !bytes.isEmpty { bytes[0] = [0x01, 0x02, 0x81, 0xE1].randomElement(using: &g)! }
            } else {
                bytes = try encode(randomMessage(&g))
                for _ in 0..<Int.random(in: 1...4, using: &g) {
                    let i = Int.random(in: 0..<bytes.count, using: &g)
                    switch Int.random(in: 0..<3, using: &g) {
                    case 0: bytes[i] = UInt8.random(in: 0...255, using: &g)
                    case 1: bytes.remove(at: i)
                    default: bytes.insert(UInt8.random(in: 0...255, using: &g), at: i)
                    }
                    if bytes.isEmpty { break }
                }
            }
            guard let message = try? RPCWire.decode(bytes) else { continue }
            accepted += 1
            if case .hello(let version) = message {
                #expect(bytes == [StreamKind.clientRPC, version], "seed \(seed) round \(round)")
            } else {
                #expect(try encode(message) == bytes, "seed \(seed) round \(round)")
            }
        }
        #expect(accepted > 0)
    }

    @Test func limitsAreEnforcedBeforeAllocating() throws {
        // A body length far beyond the frame is "truncated", not a 4 GiB allocation.
        var request = try RPCWire.encode(RPCRequest(id: 1, method: "GET", target: "/v1/kv/a", headers: [:], body: []))
        request.replaceSubrange(request.count - 4 ..< request.count, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: RPCWireError.truncated("body")) { try RPCWire.decode(request) }
        // Too many headers, an over-long target, a bad method or status: refused both ways.
        var many = HTTPHeaders()
        for i in 0...RPCWire.maxHeaders { many.add("X-\(i)", "v") }
        #expect(throws: RPCWireError.self) { try RPCWire.encode(RPCResponse(id: 1, status: 200, headers: many, body: [])) }
        let longTarget = "/" + String(repeating: "a", count: RPCWire.maxTargetBytes)
        #expect(throws: RPCWireError.self) { try RPCWire.encode(RPCRequest(id: 1, method: "GET", target: longTarget, headers: [:], body: [])) }
        #expect(throws: RPCWireError.self) { try RPCWire.encode(RPCRequest(id: 1, method: "G T", target: "/", headers: [:], body: [])) }
        #expect(throws: RPCWireError.self) { try RPCWire.encode(RPCResponse(id: 1, status: 42, headers: [:], body: [])) }
        // Header values that would split the client's HTTP response are refused.
        #expect(throws: RPCWireError.self) {
            try RPCWire.encode(RPCResponse(id: 1, status: 200, headers: ["X-A": "a\r\nX-B: b"], body: []))
        }
        var hostile: [UInt8] = [RPCWire.responseType, 0, 0, 0, 0, 0, 0, 0, 1, 0, 200, 1, 3]
        hostile += Array("X-A".utf8) + [0, 3] + Array("a\nb".utf8) + [0, 0, 0, 0]
        #expect(throws: RPCWireError.invalid("header value")) { try RPCWire.decode(hostile) }
        #expect(throws: RPCWireError.unknownType(0x7F)) { try RPCWire.decode([0x7F]) }
        #expect(throws: RPCWireError.truncated("type")) { try RPCWire.decode([]) }
    }

    @Test func forwardedPathsAreTheServerBackedOnes() {
        for path in ["/v1/kv", "/v1/kv/a/b", "/v1/status/leader", "/v1/catalog/services", "/v1/health/service/web",
                     "/v1/operator/raft/configuration", "/v1/txn", "/v1/session/create", "/v1/snapshot"] {
            #expect(ForwardedPaths.isForwarded(path), "\(path)")
        }
        for path in ["/v1/agent/self", "/v1/agent/members", "/v1/event/fire/x", "/v1/operator/keyring", "/v1/kvx",
                     "/v1/txnx", "/", "/v1/agent/metrics"] {
            #expect(!ForwardedPaths.isForwarded(path), "\(path)")
        }
    }

    @Test func blockingQueriesGetTheirWaitPlusJitterPlusHoldAsTimeout() throws {
        let client = RPCClient(loop: try Loop())
        func timeout(_ target: String) throws -> UInt64 {
            try client.timeoutMilliseconds(HTTPRequest.make(method: "GET", target: target).get())
        }
        #expect(try timeout("/v1/kv/a") == 60_000)
        #expect(try timeout("/v1/kv/a?wait=10s") == 60_000)                     // not blocking: no index
        #expect(try timeout("/v1/kv/a?index=5") == 300_000 + 300_000 / 16 + 7_000)  // default 5 min wait
        #expect(try timeout("/v1/kv/a?index=5&wait=2m") == 120_000 + 7_500 + 7_000)
        #expect(try timeout("/v1/kv/a?index=5&wait=1h") == 600_000 + 37_500 + 7_000)  // capped at 10 min
        #expect(try timeout("/v1/kv/a?index=5&wait=1s") == 60_000)               // never below rpc_client_timeout
        // Rebalance: at least 120 s + up to 60 s of jitter; in a huge cluster, members /
        // (servers × 64 per second).
        for _ in 0..<50 {
            let interval = RPCClient.rebalanceIntervalMilliseconds(config: client.config, servers: 3, lanMembers: 10)
            #expect((120_000...180_000).contains(interval))
        }
        #expect(RPCClient.rebalanceIntervalMilliseconds(config: client.config, servers: 3, lanMembers: 100_000) == 100_000 * 1_000 / 192)
        #expect(RPCClient.originForm("http://127.0.0.1:8500/v1/kv/a?raw") == "/v1/kv/a?raw")
    }
}
