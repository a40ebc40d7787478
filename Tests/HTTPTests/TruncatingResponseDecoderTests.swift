// The response decoder in health-check mode (`truncatesBody`): keeps a bounded body prefix of
// any response, and stays total on arbitrary bytes split at arbitrary points.
import HTTP
import Testing
import TestSupport

@Suite("Truncating response decoder")
struct TruncatingResponseDecoderTests {
    private func decode(_ bytes: [UInt8], limit: Int, splits rng: inout SeededGenerator) -> HTTPResponseDecoder.Outcome {
        let decoder = HTTPResponseDecoder(maxBodyBytes: limit)
        decoder.truncatesBody = true
        var offset = 0
        while offset < bytes.count {
            let n = Int.random(in: 1...max(1, bytes.count - offset), using: &rng)
            let outcome = bytes[offset..<offset + n].withUnsafeBytes { decoder.feed($0) }
            offset += n
            if case .needMore = outcome { continue }
            return outcome
        }
        return decoder.feedEOF()
    }

    @Test(arguments: [
        ("Content-Length: 10000\r\n\r\n", false),
        ("Transfer-Encoding: chunked\r\n\r\n", true),
        ("Connection: close\r\n\r\n", false),
    ])
    func largeBodiesKeepTheirFirstBytes(header: String, chunked: Bool) {
        var rng = SeededGenerator(seed: 11)
        let body = (0..<10_000).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        var wire = Array("HTTP/1.1 503 Service Unavailable\r\n\(header)".utf8)
        if chunked {
            for start in stride(from: 0, to: body.count, by: 3000) {
                let chunk = body[start..<min(start + 3000, body.count)]
                wire += Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + Array("\r\n".utf8)
            }
            wire += Array("0\r\n\r\n".utf8)
        } else {
            wire += body
        }
        guard case .response(let response, _) = decode(wire, limit: 4096, splits: &rng) else {
            Issue.record("no response")
            return
        }
        #expect(response.status == 503)
        #expect(response.body == Array(body.prefix(4096)))
    }

    @Test func arbitraryBytesNeverCrashOrGrowPastTheLimit() {
        let seed: UInt64 = 20261124
        var rng = SeededGenerator(seed: seed)
        let prefixes = ["HTTP/1.1 200 OK\r\n", "HTTP/1.0 429 x\r\nContent-Length: 5\r\n\r\n", "", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
        for round in 0..<2000 {
            var bytes = Array(prefixes[round % prefixes.count].utf8)
            let count = Int.random(in: 0...600, using: &rng)
            for _ in 0..<count {
                // Mostly printable with CR/LF, sometimes anything.
                let pick = Int.random(in: 0..<10, using: &rng)
                bytes.append(pick == 0 ? UInt8.random(in: 0...255, using: &rng) : pick == 1 ? 13 : pick == 2 ? 10 : UInt8.random(in: 32...126, using: &rng))
            }
            if case .response(let response, _) = decode(bytes, limit: 64, splits: &rng) {
                #expect(response.body.count <= 64, "seed \(seed) round \(round)")
            }
        }
    }
}
