// Response serialization, JSON string escaping and base64: exact bytes for known cases and
// properties checked against Foundation for random inputs.

import TestSupport
import Foundation
import Testing
@testable import HTTP

@Suite struct ResponseTests {
    @Test func serializesStatusLineHeadersLengthAndBodyExactly() {
        let r = HTTPResponse(status: 200, headers: ["Content-Type": "application/json", "X-Consul-Index": "7"], body: Array("true".utf8))
        #expect(String(decoding: r.serialized(keepAlive: true), as: UTF8.self) ==
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 7\r\nContent-Length: 4\r\n\r\ntrue")
    }

    @Test func closingResponseSaysConnectionClose() {
        let s = String(decoding: HTTPResponse.text(status: 404, "not found").serialized(keepAlive: false), as: UTF8.self)
        #expect(s == "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found")
    }

    @Test func contentLengthIsAlwaysTheBodyLengthEvenIfAHeaderSaysOtherwise() throws {
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<200 {
            let n = Int(rng.next() % 5000)
            let body = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let r = HTTPResponse(status: 200, headers: ["Content-Length": "1"], body: body)
            var out: [UInt8] = Array("prefix".utf8)
            r.serialize(keepAlive: true, into: &out)
            #expect(out.starts(with: Array("prefix".utf8)))
            let text = String(decoding: out, as: UTF8.self)
            #expect(text.components(separatedBy: "Content-Length").count == 2)
            #expect(text.contains("Content-Length: \(n)\r\n"))
            #expect(Array(out.suffix(n)) == body)
        }
    }

    @Test func reasonPhrasesForConsulStatusCodes() {
        let table: [(Int, String)] = [(200, "OK"), (400, "Bad Request"), (403, "Forbidden"), (404, "Not Found"),
                                      (405, "Method Not Allowed"), (413, "Request Entity Too Large"),
                                      (429, "Too Many Requests"), (431, "Request Header Fields Too Large"),
                                      (500, "Internal Server Error"), (599, "Unknown")]
        for (status, phrase) in table { #expect(HTTPResponse.reasonPhrase(status) == phrase) }
    }

    @Test func serializedResponseParsesBackWithTheClientDecoder() throws {
        let r = HTTPResponse.json(status: 201, Array("{\"a\":1}".utf8))
        let decoded = try #require(try decodeResponse(r.serialized(keepAlive: true)))
        #expect(decoded.status == 201)
        #expect(decoded.headers["content-type"] == "application/json")
        #expect(decoded.body == Array("{\"a\":1}".utf8))
    }
}

@Suite struct JSONTextTests {
    static func escaped(_ s: String) -> String {
        var out: [UInt8] = []
        JSONText.appendEscaped(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func escapesLikeGoEncodingJSON() {
        let table: [(String, String)] = [
            ("plain", "plain"),
            ("", ""),
            ("a\"b\\c", "a\\\"b\\\\c"),
            ("line\nfeed\r\ttab", "line\\nfeed\\r\\ttab"),
            ("\u{0}\u{1}\u{8}\u{c}\u{1f}", "\\u0000\\u0001\\u0008\\u000c\\u001f"),
            ("<script>&", "\\u003cscript\\u003e\\u0026"),
            ("é中😀", "é中😀"),
            ("\u{2028}x\u{2029}", "\\u2028x\\u2029"),
            ("\u{7f}/", "\u{7f}/"),
        ]
        for (input, expected) in table { #expect(Self.escaped(input) == expected, "\(input.debugDescription)") }
        var quoted: [UInt8] = []
        JSONText.appendQuoted("k\"", to: &quoted)
        #expect(String(decoding: quoted, as: UTF8.self) == "\"k\\\"\"")
    }

    @Test func escapedRandomStringsDecodeBackWithJSONSerialization() throws {
        var rng = SeededGenerator(seed: 7)
        let alphabet: [Unicode.Scalar] = (0..<0x80).compactMap(Unicode.Scalar.init) + ["é", "中", "😀", "\u{2028}", "\u{2029}"]
        for i in 0..<500 {
            var s = String.UnicodeScalarView()
            for _ in 0..<Int(rng.next() % 40) { s.append(alphabet[Int(rng.next() % UInt64(alphabet.count))]) }
            let original = String(s)
            var out: [UInt8] = Array("[".utf8)
            JSONText.appendQuoted(original, to: &out)
            out.append(contentsOf: "]".utf8)
            let decoded = try JSONSerialization.jsonObject(with: Data(out)) as? [String]
            #expect(decoded == [original], "seed 7 iteration \(i)")
        }
    }
}

@Suite struct Base64Tests {
    @Test func knownVectorsFromRFC4648() {
        let table = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="),
                     ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in table {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Base64.decode(encoded) == Array(plain.utf8))
        }
    }

    @Test func encodeMatchesFoundationAndRoundTripsForRandomInputs() {
        var rng = SeededGenerator(seed: 99)
        for i in 0..<2000 {
            let bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let ours = Base64.encode(bytes)
            #expect(ours == Data(bytes).base64EncodedString(), "seed 99 iteration \(i)")
            #expect(Base64.decode(ours) == bytes, "seed 99 iteration \(i)")
            var appended: [UInt8] = [1, 2]
            Base64.encode(bytes, into: &appended)
            #expect(appended == [1, 2] + Array(ours.utf8))
        }
    }

    /// Go's StdEncoding rejects these; swift-corelibs-foundation accepts some ("Zm9v=", "7Y=m"),
    /// so it is no oracle for invalid input.
    @Test func decodeRejectsWhatGoRejects() {
        let invalid = ["Zg", "Zg=", "Z===", "Zm9v=", "Zm9v====", "Zg==Zg==", "Zm9*", "Zm 9v", "=Zm9", "7Y=m", "\u{e9}AAA"]
        for s in invalid { #expect(Base64.decode(s) == nil, "\(s)") }
    }

    @Test func whateverWeDecodeFoundationDecodesTheSame() {
        var rng = SeededGenerator(seed: 5)
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=".utf8)
        var accepted = 0
        for i in 0..<5000 {
            // Mostly well-formed lengths, with '=' sprinkled in.
            let n = Int(rng.next() % 4) * 4 + (rng.next() % 8 == 0 ? Int(rng.next() % 4) : 0)
            let s = String(decoding: (0..<n).map { _ in alphabet[Int(rng.next() % UInt64(rng.next() % 4 == 0 ? 65 : 64))] }, as: UTF8.self)
            guard let ours = Base64.decode(s) else { continue }
            accepted += 1
            #expect(Data(base64Encoded: s).map { Array($0) } == ours, "seed 5 iteration \(i): \(s)")
        }
        #expect(accepted > 1000)
    }

    @Test func decodeIgnoresLineBreaksLikeGo() {
        #expect(Base64.decode("Zm9v\r\nYmFy\n") == Array("foobar".utf8))
    }
}
