// Property tests: the request parser is total. Random bytes and mutated valid requests, fed in
// random chunkings, always end in requests or an error, never a crash or a hang, and the
// outcome does not depend on how the bytes were chunked. A failure names its seed to replay.

import TestSupport
import Testing
@testable import HTTP


@Suite struct ParserFuzzTests {
    static let fragments: [String] = [
        "GET ", "PUT ", "DELETE ", "POST ", "HEAD ", "/", "/v1/kv/", "?", "&", "=", "%", "%2F", "%zz", "+",
        " HTTP/1.1\r\n", " HTTP/1.0\r\n", "\r\n", "\n", ": ", "Host", "Content-Length: ", "0", "5", "18446744073709551616",
        "Transfer-Encoding: chunked\r\n", "Connection: close\r\n", "Connection: keep-alive\r\n", "\r\n\r\n",
        "abc", " ", "\t", "\0", "\u{7f}", "é", "ffffffff\r\n", "0\r\n\r\n", "Upgrade: x\r\nConnection: upgrade\r\n",
    ]

    static let validRequests: [String] = [
        "GET /v1/kv/a%2Fb?recurse&x=a+b HTTP/1.1\r\nHost: h\r\n\r\n",
        "PUT /v1/kv/k?cas=3 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "PUT /v1/kv/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "DELETE /v1/kv/d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /v1/status/leader HTTP/1.1\r\n\r\nGET /v1/agent/self HTTP/1.1\r\nConnection: close\r\n\r\n",
    ]

    static func randomInput(_ rng: inout SeededGenerator) -> [UInt8] {
        switch rng.next() % 3 {
        case 0:
            return (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        case 1:
            var s = ""
            for _ in 0..<Int(rng.next() % 30) { s += fragments[Int(rng.next() % UInt64(fragments.count))] }
            return Array(s.utf8)
        default:
            var b = Array(validRequests[Int(rng.next() % UInt64(validRequests.count))].utf8)
            for _ in 0..<Int(rng.next() % 4) {
                guard !b.isEmpty else { break }
                let i = Int(rng.next() % UInt64(b.count))
                switch rng.next() % 4 {
                case 0: b[i] = UInt8(truncatingIfNeeded: rng.next())
                case 1: b.remove(at: i)
                case 2: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: i)
                default: b.removeSubrange(i...)  // truncation
                }
            }
            return b
        }
    }

    static func randomChunks(_ b: [UInt8], _ rng: inout SeededGenerator) -> [[UInt8]] {
        var chunks: [[UInt8]] = []
        var i = 0
        while i < b.count {
            let n = 1 + Int(rng.next() % 16)
            chunks.append(Array(b[i..<min(b.count, i + n)]))
            i += n
        }
        return chunks
    }

    static func outcome(_ r: HTTPParseResult) -> String {
        r.requests.map { "\($0.method) \($0.target) \($0.headers.fields) \($0.body) \($0.keepAlive)" }
            .joined(separator: "|") + " -> \(r.error.map { String($0.status) } ?? "ok")"
    }

    @Test func randomAndMutatedInputsAlwaysEndInRequestsOrAnErrorRegardlessOfChunking() {
        let baseSeed: UInt64 = 0xC0_4C1A_7E
        for n in 0..<5000 {
            let seed = baseSeed &+ UInt64(n)
            var rng = SeededGenerator(seed: seed)
            let input = Self.randomInput(&rng)
            let limits = HTTPLimits(maxHeaderBytes: 256, maxBodyBytes: 64, maxURLBytes: 64)
            let whole = parse([input], limits: limits, eof: true)
            let chunked = parse(Self.randomChunks(input, &rng), limits: limits, eof: true)
            #expect(Self.outcome(whole) == Self.outcome(chunked), "replay with seed \(seed)")
            if let e = whole.error {
                #expect([400, 413, 414, 431, 505].contains(e.status), "seed \(seed): \(e)")
            }
            for r in whole.requests {
                #expect(r.body.count <= limits.maxBodyBytes, "seed \(seed)")
                #expect(r.target.utf8.count <= limits.maxURLBytes, "seed \(seed)")
            }
        }
    }

    @Test func validRequestsMutatedAtEveryPositionNeverCrash() {
        for request in Self.validRequests {
            let b = Array(request.utf8)
            for i in b.indices {
                for replacement: UInt8 in [0, 0x0A, 0x20, 0x25, 0x3A, 0xFF] {
                    var m = b
                    m[i] = replacement
                    let r = parse([m], eof: true)
                    #expect(r.error != nil || !r.requests.isEmpty || m.allSatisfy { $0 == 0x0A || $0 == 0x0D })
                }
                _ = parse([Array(b[..<i])], eof: true)  // every truncation
            }
        }
    }

    @Test func hugeInputsStayWithinLimits() {
        // A header value that never ends, fed 4 KiB at a time: rejected at the limit, not buffered.
        let parser = HTTPRequestParser()
        _ = parser.feed(Array("GET / HTTP/1.1\r\nX: ".utf8))
        var result = HTTPParseResult()
        var fed = 0
        while result.error == nil, fed < 1 << 20 {
            result = parser.feed([UInt8](repeating: 0x61, count: 4096))
            fed += 4096
        }
        #expect(result.error?.status == 431)
        #expect(fed <= HTTPLimits.defaultMaxHeaderBytes + 4096)
        // A body that never ends is capped by Content-Length, and a chunked one by the limit.
        let chunked = HTTPRequestParser(limits: HTTPLimits(maxBodyBytes: 100_000))
        _ = chunked.feed(Array("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
        var r2 = HTTPParseResult()
        var chunks = 0
        while r2.error == nil, chunks < 1000 {
            r2 = chunked.feed(Array("400\r\n".utf8) + [UInt8](repeating: 0x62, count: 1024) + Array("\r\n".utf8))
            chunks += 1
        }
        #expect(r2.error?.status == 413)
        #expect(chunks <= 100)
    }
}
