// Request decoding: framing, keep-alive, limits and malformed input.

import Testing
@testable import HTTP

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Feeds `chunks` in order and collects every request and the first error.
func parse(_ chunks: [[UInt8]], limits: HTTPLimits = HTTPLimits(), eof: Bool = false) -> HTTPParseResult {
    let parser = HTTPRequestParser(limits: limits)
    var all = HTTPParseResult()
    for chunk in chunks {
        let r = parser.feed(chunk)
        all.requests += r.requests
        if let e = r.error { all.error = e; return all }
    }
    if eof {
        let r = parser.feedEOF()
        all.requests += r.requests
        all.error = r.error
    }
    return all
}

func parse(_ s: String, limits: HTTPLimits = HTTPLimits()) -> HTTPParseResult {
    parse([bytes(s)], limits: limits)
}

@Suite struct RequestParserTests {
    @Test func simpleGetYieldsMethodPathHeadersAndEmptyBody() throws {
        let r = parse("GET /v1/kv/foo HTTP/1.1\r\nHost: localhost\r\nX-Consul-Token: abc\r\n\r\n")
        #expect(r.error == nil)
        let req = try #require(r.requests.first)
        #expect(r.requests.count == 1)
        #expect(req.method == "GET")
        #expect(req.target == "/v1/kv/foo")
        #expect(req.path == "/v1/kv/foo")
        #expect(req.query.isEmpty)
        #expect(req.headers["host"] == "localhost")
        #expect(req.headers["X-CONSUL-TOKEN"] == "abc")
        #expect(req.headers.fields.map(\.name) == ["Host", "X-Consul-Token"])
        #expect(req.body.isEmpty)
        #expect(req.keepAlive)
        #expect(req.versionMajor == 1 && req.versionMinor == 1)
    }

    @Test func queryFlagsArePresentWithEmptyValue() throws {
        let req = try #require(parse("GET /v1/kv/?recurse&keys&separator=/&raw HTTP/1.1\r\n\r\n").requests.first)
        #expect(req.path == "/v1/kv/")
        #expect(req.query.has("recurse"))
        #expect(req.query.first("recurse") == "")
        #expect(req.query.has("keys") && req.query.has("raw"))
        #expect(req.query.first("separator") == "/")
        #expect(!req.query.has("cas"))
        #expect(req.query.first("cas") == nil)
    }

    @Test func queryValuesArePercentDecodedWithPlusAsSpace() throws {
        let req = try #require(parse("GET /v1/x?a=1&b=hello+world&c=%2Fx%3D%26&a=2&d%20e=f%2B&&=v HTTP/1.1\r\n\r\n").requests.first)
        #expect(req.query.all("a") == ["1", "2"])
        #expect(req.query.first("b") == "hello world")
        #expect(req.query.first("c") == "/x=&")
        #expect(req.query.first("d e") == "f+")
        #expect(req.query.first("") == "v")
    }

    @Test func pathIsPercentDecodedButPlusStays() throws {
        let table: [(target: String, path: String)] = [
            ("/v1/kv/a%2Fb", "/v1/kv/a/b"),
            ("/v1/kv/a+b", "/v1/kv/a+b"),
            ("/v1/kv/sp%20ace?x=1", "/v1/kv/sp ace"),
            ("/v1/kv/%C3%A9t%C3%A9", "/v1/kv/été"),
            ("/p#frag", "/p"),
            ("http://example.com:8500/v1/kv/k?raw", "/v1/kv/k"),
            ("http://example.com", "/"),
            ("*", "*"),
        ]
        for row in table {
            let req = try #require(parse("OPTIONS \(row.target) HTTP/1.1\r\n\r\n").requests.first, "\(row.target)")
            #expect(req.path == row.path, "\(row.target)")
            #expect(req.target == row.target)
        }
    }

    @Test func invalidPercentEscapeIs400() {
        for target in ["/v1/kv/a%zz", "/v1/kv/a%2", "/v1/kv?x=%g1", "/v1/kv?%=1"] {
            let r = parse("GET \(target) HTTP/1.1\r\n\r\n")
            #expect(r.requests.isEmpty)
            #expect(r.error?.status == 400, "\(target)")
        }
        #expect(parse("GET /a%zz HTTP/1.1\r\n\r\n").error?.message == "Bad Request: invalid URL escape \"%zz\"")
    }

    @Test func putWithContentLengthCarriesBody() throws {
        let r = parse("PUT /v1/kv/k?cas=0 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        let req = try #require(r.requests.first)
        #expect(req.method == "PUT")
        #expect(req.body == bytes("hello"))
        #expect(req.query.first("cas") == "0")
    }

    @Test func chunkedBodyIsReassembled() throws {
        let r = parse("PUT /v1/kv/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n")
        #expect(r.error == nil)
        #expect(try #require(r.requests.first).body == bytes("hello world"))
    }

    @Test func twoPipelinedRequestsInOneFeedComeOutInOrder() {
        let r = parse("GET /a HTTP/1.1\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz")
        #expect(r.error == nil)
        #expect(r.requests.map(\.path) == ["/a", "/b"])
        #expect(r.requests.map(\.body) == [[], bytes("xyz")])
    }

    @Test func tenPipelinedRequestsInOneFeedComeOutInOrder() {
        var s = ""
        for i in 0..<10 { s += "PUT /k/\(i) HTTP/1.1\r\nContent-Length: \(String(i).count)\r\n\r\n\(i)" }
        let r = parse(s)
        #expect(r.error == nil)
        #expect(r.requests.map(\.path) == (0..<10).map { "/k/\($0)" })
        #expect(r.requests.map { String(decoding: $0.body, as: UTF8.self) } == (0..<10).map { String($0) })
    }

    static let sample = "PUT /v1/kv/a%2Fb?flags=42&recurse&x=a+b HTTP/1.1\r\nHost: h\r\nX-Multi: 1\r\nX-Multi: 2\r\n"
        + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        + "GET /v1/status/leader HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
        + "DELETE /x HTTP/1.1\r\nConnection: close\r\n\r\n"

    static func summary(_ r: HTTPParseResult) -> String {
        r.requests.map { "\($0.method) \($0.target) \($0.path) \($0.query) \($0.headers.fields) \($0.body) \($0.keepAlive)" }
            .joined(separator: "|") + " error=\(String(describing: r.error))"
    }

    @Test func requestSplitAtEveryByteBoundaryGivesSameResult() {
        let all = bytes(Self.sample)
        let expected = Self.summary(parse([all]))
        #expect(parse([all]).requests.count == 3)
        for cut in 0...all.count {
            let got = Self.summary(parse([Array(all[..<cut]), Array(all[cut...])]))
            #expect(got == expected, "cut at \(cut)")
        }
    }

    @Test func byteAtATimeFeedingGivesSameResult() {
        let all = bytes(Self.sample)
        let expected = Self.summary(parse([all]))
        #expect(Self.summary(parse(all.map { [$0] })) == expected)
    }

    @Test func keepAliveFollowsVersionAndConnectionHeader() throws {
        let table: [(request: String, keepAlive: Bool)] = [
            ("GET / HTTP/1.1\r\n\r\n", true),
            ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        ]
        for row in table {
            let req = try #require(parse(row.request).requests.first)
            #expect(req.keepAlive == row.keepAlive, "\(row.request)")
        }
    }

    @Test func bytesAfterConnectionCloseRequestAreIgnored() {
        let parser = HTTPRequestParser()
        let r = parser.feed(bytes("GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n"))
        #expect(r.requests.map(\.path) == ["/a"])
        #expect(r.error == nil)
        #expect(parser.feed(bytes("GET /c HTTP/1.1\r\n\r\n")).requests.isEmpty)
    }

    /// A request whose request line and headers are exactly `size` bytes.
    static func request(headBytes size: Int) -> String {
        let start = "GET / HTTP/1.1\r\nX-Pad: "
        let end = "\r\n\r\n"
        return start + String(repeating: "a", count: size - start.utf8.count - end.utf8.count) + end
    }

    @Test func headerAtTheLimitIsAcceptedAndOneByteOverIs431() {
        for limits in [HTTPLimits(), HTTPLimits(maxHeaderBytes: 1000)] {
            let max = limits.maxHeaderBytes
            let ok = parse(Self.request(headBytes: max), limits: limits)
            #expect(ok.error == nil && ok.requests.count == 1, "limit \(max)")
            let over = parse(Self.request(headBytes: max + 1), limits: limits)
            #expect(over.requests.isEmpty)
            #expect(over.error?.status == 431, "limit \(max)")
            // The same when fed byte by byte: the check does not depend on chunking.
            let slow = parse(bytes(Self.request(headBytes: max + 1)).map { [$0] }, limits: limits)
            #expect(slow.error?.status == 431)
        }
    }

    @Test func headerLimitAppliesPerRequestNotPerConnection() {
        let limits = HTTPLimits(maxHeaderBytes: 100)
        let one = Self.request(headBytes: 100)
        let stream = bytes(String(repeating: one, count: 50))
        // Chunks of 7 bytes end mid-header, so http-parser's own count is checked between feeds too.
        var chunks: [[UInt8]] = []
        for i in stride(from: 0, to: stream.count, by: 7) { chunks.append(Array(stream[i..<min(i + 7, stream.count)])) }
        let r = parse(chunks, limits: limits)
        #expect(r.error == nil)
        #expect(r.requests.count == 50)
    }

    @Test func manySmallHeadersHitTheHeaderLimit() {
        let s = "GET / HTTP/1.1\r\n" + String(repeating: "a:b\r\n", count: 20_000) + "\r\n"
        #expect(parse(s).error?.status == 431)
    }

    @Test func contentLengthOverBodyLimitIs413BeforeBodyArrives() {
        let r = parse("PUT /v1/kv/big HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n")
        #expect(r.requests.isEmpty)
        #expect(r.error == HTTPParseError(status: 413, message: "Request body(1048576 bytes) too large, max size: 524288 bytes"))
        let atLimit = parse([bytes("PUT /k HTTP/1.1\r\nContent-Length: 524288\r\n\r\n"), [UInt8](repeating: 1, count: 524288)])
        #expect(atLimit.error == nil && atLimit.requests.first?.body.count == 524288)
    }

    @Test func chunkedBodyOverLimitIs413() {
        let limits = HTTPLimits(maxBodyBytes: 10)
        // Each chunk fits, the sum does not.
        let r = parse("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n", limits: limits)
        #expect(r.requests.isEmpty)
        #expect(r.error?.status == 413)
        // A single huge announced chunk is refused before its data is buffered.
        let huge = parse("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n", limits: limits)
        #expect(huge.error?.status == 413)
        let ok = parse("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n", limits: limits)
        #expect(ok.error == nil && ok.requests.first?.body.count == 10)
    }

    @Test func aLargerBodyPathGetsItsOwnLimitAndOthersKeepTheDefault() {
        var limits = HTTPLimits(maxBodyBytes: 10)
        limits.largerBodyPaths["/v1/snapshot"] = 20
        let big = parse([bytes("PUT /v1/snapshot?dc=dc1 HTTP/1.1\r\nContent-Length: 20\r\n\r\n"), [UInt8](repeating: 1, count: 20)], limits: limits)
        #expect(big.error == nil && big.requests.first?.body.count == 20)
        #expect(parse("PUT /v1/snapshot HTTP/1.1\r\nContent-Length: 21\r\n\r\n", limits: limits).error?.status == 413)
        #expect(parse("PUT /v1/snapshots HTTP/1.1\r\nContent-Length: 11\r\n\r\n", limits: limits).error?.status == 413)
        #expect(parse("PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 11\r\n\r\n", limits: limits).error?.status == 413)
        let chunked = parse("PUT /v1/snapshot HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nf\r\nabcdefghijklmno\r\n0\r\n\r\n", limits: limits)
        #expect(chunked.error == nil && chunked.requests.first?.body.count == 15)
    }

    @Test func urlOverLimitIs414() {
        let limits = HTTPLimits(maxURLBytes: 100)
        #expect(parse("GET /\(String(repeating: "a", count: 99)) HTTP/1.1\r\n\r\n", limits: limits).error == nil)
        #expect(parse("GET /\(String(repeating: "a", count: 100)) HTTP/1.1\r\n\r\n", limits: limits).error?.status == 414)
    }

    @Test func http2VersionIs505() {
        #expect(parse("GET / HTTP/2.0\r\n\r\n").error?.status == 505)
    }

    @Test func malformedInputIs400AndParserStaysFailed() {
        let table = [
            "GET\r\n\r\n",
            "FOO / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]
        for s in table {
            let parser = HTTPRequestParser()
            let r = parser.feed(bytes(s))
            #expect(r.requests.isEmpty, "\(s)")
            #expect(r.error?.status == 400, "\(s)")
            #expect(r.error?.message.hasPrefix("Bad Request: ") == true)
            #expect(parser.hasFailed)
            // Stays failed, even for a valid request.
            #expect(parser.feed(bytes("GET / HTTP/1.1\r\n\r\n")) .error == r.error)
            #expect(parser.feedEOF().error == r.error)
        }
    }

    @Test func validRequestBeforeGarbageIsReturnedWithTheError() {
        let r = parse("GET /ok HTTP/1.1\r\n\r\n\u{1}garbage")
        #expect(r.requests.map(\.path) == ["/ok"])
        #expect(r.error?.status == 400)
    }

    @Test func eofInsideARequestIs400AndBetweenRequestsIsClean() {
        #expect(parse([bytes("GET / HTTP/1.1\r\nHost")], eof: true).error?.status == 400)
        #expect(parse([bytes("PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab")], eof: true).error?.status == 400)
        let clean = parse([bytes("GET / HTTP/1.1\r\n\r\n")], eof: true)
        #expect(clean.error == nil && clean.requests.count == 1)
        #expect(parse([], eof: true).error == nil)
    }

    @Test func headerValueWhitespaceIsTrimmed() throws {
        let req = try #require(parse("GET / HTTP/1.1\r\nA:   spaced   \r\nB:\r\n\r\n").requests.first)
        #expect(req.headers["a"] == "spaced")
        #expect(req.headers["b"] == "")
    }
}
