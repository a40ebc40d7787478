// The blocking client against a tiny in-test server on 127.0.0.1 (POSIX sockets on a thread).

import Foundation
import Glibc
import Testing
@testable import HTTP

/// Listens on 127.0.0.1 with an ephemeral port.
func listenLocal() -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            _ = bind(fd, p, len)
            _ = getsockname(fd, p, &len)
        }
    }
    listen(fd, 8)
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

/// Serves `count` requests on one accepted connection, echoing each as text, then closes it.
/// The last response of the last connection is chunked, to exercise that path.
func serve(listener: Int32, requestsPerConnection: [Int]) {
    for (ci, count) in requestsPerConnection.enumerated() {
        let conn = accept(listener, nil, nil)
        guard conn >= 0 else { return }
        let parser = HTTPRequestParser()
        var served = 0
        var buf = [UInt8](repeating: 0, count: 4096)
        reading: while served < count {
            let n = recv(conn, &buf, buf.count, 0)
            if n <= 0 { break }
            for req in parser.feed(Array(buf[0..<n])).requests {
                let echo = "\(req.method) \(req.path) q=\(req.query.first("q") ?? "-") body=\(String(decoding: req.body, as: UTF8.self)) conn=\(ci)"
                var out: [UInt8]
                if ci == requestsPerConnection.count - 1 && served == count - 1 {
                    out = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Test: chunked\r\n\r\n\(String(echo.utf8.count, radix: 16))\r\n\(echo)\r\n0\r\n\r\n".utf8)
                } else {
                    out = HTTPResponse.text(status: 200, echo).serialized(keepAlive: true)
                }
                _ = out.withUnsafeBytes { send(conn, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                served += 1
                if served == count { break reading }
            }
        }
        close(conn)
    }
}

@Suite struct ClientTests {
    @Test func clientKeepsAliveDecodesBodiesAndReconnectsOnceAfterServerClose() throws {
        let (listener, port) = listenLocal()
        defer { close(listener) }
        let server = Thread { serve(listener: listener, requestsPerConnection: [2, 1]) }
        server.start()

        var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 5)
        let r1 = try client.request(method: "GET", path: "/v1/kv/a?q=x%20y")
        #expect(r1.status == 200)
        #expect(r1.headers["content-type"] == "text/plain; charset=utf-8")
        #expect(String(decoding: r1.body, as: UTF8.self) == "GET /v1/kv/a q=x y body= conn=0")
        let r2 = try client.request(method: "PUT", path: "/v1/kv/b", headers: [("X-Consul-Token", "t")], body: Array("value".utf8))
        #expect(String(decoding: r2.body, as: UTF8.self) == "PUT /v1/kv/b q=- body=value conn=0")
        // The server closed connection 0; the client reconnects once and gets a chunked answer.
        let r3 = try client.request(method: "DELETE", path: "/v1/kv/c")
        #expect(r3.headers["x-test"] == "chunked")
        #expect(String(decoding: r3.body, as: UTF8.self) == "DELETE /v1/kv/c q=- body= conn=1")
        client.close()
    }

    @Test func connectionRefusedErrorNamesTheAddress() throws {
        let (listener, port) = listenLocal()
        close(listener)  // nothing listens on this port now
        var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 2)
        #expect(throws: HTTPClientError("connect 127.0.0.1:\(port): Connection refused")) {
            _ = try client.request(method: "GET", path: "/")
        }
    }

    @Test func silentServerTimesOut() throws {
        let (listener, port) = listenLocal()
        defer { close(listener) }
        var client = HTTPClient(host: "127.0.0.1", port: port, timeoutSeconds: 0.2)
        let error = #expect(throws: HTTPClientError.self) { _ = try client.request(method: "GET", path: "/slow") }
        #expect(error?.message == "GET /slow to 127.0.0.1:\(port): timed out after 0.2s")
    }

    @Test func parseAddressAcceptsConsulHTTPAddrForms() {
        let table: [(String, String?, Int?)] = [
            ("127.0.0.1:8500", "127.0.0.1", 8500),
            ("http://127.0.0.1:8500", "127.0.0.1", 8500),
            ("HTTP://localhost:8500/", "localhost", 8500),
            ("localhost:8500", "localhost", 8500),
            (" 10.0.0.1:1 ", "10.0.0.1", 1),
            ("[::1]:8500", "::1", 8500),
            ("http://example.com", "example.com", 80),
            ("https://127.0.0.1:8501", nil, nil),
            ("unix:///tmp/consul.sock", nil, nil),
            ("127.0.0.1:0", nil, nil),
            ("127.0.0.1:99999", nil, nil),
            ("127.0.0.1:http", nil, nil),
            (":8500", nil, nil),
            ("", nil, nil),
        ]
        for (input, host, port) in table {
            let parsed = HTTPClient.parseAddress(input)
            #expect(parsed?.host == host, "\(input)")
            #expect(parsed?.port == port, "\(input)")
        }
    }
}

extension HTTPClientError: Equatable {
    public static func == (a: HTTPClientError, b: HTTPClientError) -> Bool { a.message == b.message }
}
