// The HTTP server on a real loop over loopback: answers in request order, pipelining
// backpressure, idle timeouts, limits, and survival of arbitrary bytes from clients.
import EventLoop
import Foundation
import Glibc
@testable import HTTP
import Logging
import TestSupport
import Testing

/// A server on its own loop with a handler the test controls; responders are held here so
/// a test can answer them later, on the loop thread.
final class ServerHarness: @unchecked Sendable {
    let loop: Loop
    private let lock = NSLock()
    private var _port = 0
    private var _held: [HTTPResponder] = []   // touched only on the loop thread
    private var _dispatched = 0
    private var _cancelled = 0
    private var server: HTTPServer?            // loop thread only

    var port: Int { lock.withLock { _port } }
    var dispatched: Int { lock.withLock { _dispatched } }
    /// Held requests whose client went away before an answer.
    var cancelled: Int { lock.withLock { _cancelled } }

    /// `hold`: requests whose path starts with "/hold" are parked until `releaseAll`.
    init(config: HTTPServerConfig = HTTPServerConfig()) throws {
        loop = try Loop(name: "http-test")
        loop.start()
        let ready = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            server = try? HTTPServer(loop: loop, host: "127.0.0.1", port: 0, config: config,
                                     logger: Logger(label: "test")) { [self] responder in
                lock.withLock { _dispatched += 1 }
                let request = responder.request
                if request.path.hasPrefix("/hold") {
                    _held.append(responder)
                    responder.onCancel { [self] in lock.withLock { _cancelled += 1 } }
                } else if request.path.hasPrefix("/later/") {
                    // Answer after a delay that shrinks along the pipeline, so answers are
                    // produced in the reverse order of the requests.
                    let delay = UInt64(request.path.dropFirst("/later/".count)) ?? 0
                    let timer = LoopTimer(loop: loop)
                    timer.start(afterMilliseconds: delay) {
                        timer.close()
                        responder.respond(.text(status: 200, request.path))
                    }
                } else {
                    var body = Array(request.path.utf8)
                    body.append(contentsOf: request.body)
                    responder.respond(HTTPResponse(status: 200, body: body))
                }
            }
            lock.withLock { _port = server?.localPort ?? 0 }
            ready.signal()
        }
        ready.wait()
    }

    func releaseAll() {
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in
            // Answering lets the server dispatch more, which may park new ones here.
            let held = _held
            _held.removeAll()
            for responder in held { responder.respond(.text(status: 200, "released " + responder.request.path)) }
            done.signal()
        }
        done.wait()
    }

    func connectionCount() -> Int {
        let result = Locked2(0)
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in result.set(server?.connectionCount ?? -1); done.signal() }
        done.wait()
        return result.get()
    }

    func stop() {
        let done = DispatchSemaphore(value: 0)
        loop.execute { [self] in server?.close(); server = nil; done.signal() }
        done.wait()
        loop.shutdown()
    }
}

final class Locked2<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func set(_ v: T) { lock.withLock { value = v } }
    func get() -> T { lock.withLock { value } }
}

/// A plain blocking socket, to send exactly the bytes a test wants.
struct RawConnection {
    let fd: Int32

    init(port: Int, receiveTimeoutSeconds: Int = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { Glibc.close(fd); throw POSIXError(.ECONNREFUSED) }
    }

    func send(_ text: String) { send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the peer closes (or the receive timeout); returns the bytes and whether
    /// the peer closed.
    func readToEnd() -> (bytes: [UInt8], closed: Bool) {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (out, true) }
            if n < 0 { return (out, errno == ECONNRESET) }
            out.append(contentsOf: buffer[0..<n])
        }
    }

    /// Reads until `count` responses' worth of "HTTP/1.1 " status lines arrived.
    func readResponses(_ count: Int) -> String {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while String(decoding: out, as: UTF8.self).components(separatedBy: "HTTP/1.1 ").count - 1 < count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    func close() { Glibc.close(fd) }
}

@Suite("HTTP server on the loop")
struct HTTPServerTests {
    @Test func answersGoOutInRequestOrderWhateverOrderTheyFinish() throws {
        let harness = try ServerHarness()
        defer { harness.stop() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }
        // The first request finishes last.
        connection.send("GET /later/300 HTTP/1.1\r\n\r\nGET /later/150 HTTP/1.1\r\n\r\nGET /later/0 HTTP/1.1\r\n\r\n")
        let text = connection.readResponses(3)
        let order = ["/later/300", "/later/150", "/later/0"].map { text.range(of: $0)?.lowerBound }
        #expect(order.allSatisfy { $0 != nil })
        #expect(order[0]! < order[1]! && order[1]! < order[2]!)
    }

    @Test func aParkedRequestIsCancelledWhenItsClientDisconnects() throws {
        let harness = try ServerHarness()
        defer { harness.stop() }
        let connection = try RawConnection(port: harness.port)
        connection.send("GET /hold/1 HTTP/1.1\r\n\r\n")
        let deadline = Date().addingTimeInterval(10)
        while harness.dispatched < 1 && Date() < deadline { usleep(5_000) }
        #expect(harness.cancelled == 0)
        connection.close()
        while harness.cancelled < 1 && Date() < deadline { usleep(5_000) }
        #expect(harness.cancelled == 1)
        harness.releaseAll()   // a late answer to a gone client is dropped
        #expect(harness.cancelled == 1)
    }

    @Test func anInProcessResponderAnswersOnceAndCanBeCancelled() throws {
        let request = try HTTPRequest.make(method: "GET", target: "/v1/kv/a%2Fb?recurse&x=1+2").get()
        #expect(request.path == "/v1/kv/a/b")
        #expect(request.query.has("recurse") && request.query.first("x") == "1 2")
        #expect(throws: HTTPParseError.self) { try HTTPRequest.make(method: "GET", target: "/a%zz").get() }
        var answers: [Int] = []
        var cancels = 0
        let answered = HTTPResponder(request: request) { answers.append($0.status) }
        answered.onCancel { cancels += 1 }
        #expect(!answered.isCancelled)
        answered.respond(.text(status: 200, "one"))
        answered.respond(.text(status: 500, "two"))
        answered.cancel()
        #expect(answers == [200] && cancels == 0)
        let abandoned = HTTPResponder(request: request) { answers.append($0.status) }
        abandoned.onCancel { cancels += 1 }
        abandoned.cancel()
        abandoned.cancel()
        #expect(abandoned.isCancelled && cancels == 1)
        abandoned.onCancel { cancels += 1 }   // registered after the fact: runs at once
        abandoned.respond(.text(status: 200, "late"))
        #expect(answers == [200] && cancels == 2)
    }

    @Test func keepAliveServesManyRequestsOnOneConnection() throws {
        let harness = try ServerHarness()
        defer { harness.stop() }
        var client = HTTPClient(host: "127.0.0.1", port: harness.port)
        for i in 0..<200 {
            let response = try client.request(method: "PUT", path: "/echo/\(i)", body: Array("b\(i)".utf8))
            #expect(String(decoding: response.body, as: UTF8.self) == "/echo/\(i)b\(i)")
        }
        #expect(harness.connectionCount() == 1)
    }

    @Test func pipelinedRequestsBeyondTheLimitWaitUntilEarlierOnesAreAnswered() throws {
        var config = HTTPServerConfig()
        config.maxPipelinedRequests = 4
        let harness = try ServerHarness(config: config)
        defer { harness.stop() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }
        // 40 requests in a single write: reading stops once 4 are queued, so the handler
        // sees few of them while they are held. (A socket read can carry more than one
        // request, so up to one read's worth can be dispatched past the limit.)
        connection.send(String(repeating: "GET /hold HTTP/1.1\r\n\r\n", count: 40))
        let deadline = Date().addingTimeInterval(5)
        while harness.dispatched < 4, Date() < deadline { usleep(1000) }
        usleep(200_000)
        #expect(harness.dispatched >= 4)
        #expect(harness.dispatched < 40)
        var answered = 0
        var text = ""
        while answered < 40, Date() < deadline.addingTimeInterval(10) {
            harness.releaseAll()
            text += connection.readResponses(1)
            answered = text.components(separatedBy: "released /hold").count - 1
        }
        #expect(answered == 40)
    }

    @Test func idleConnectionsAreClosedButBusyOnesAreNot() throws {
        var config = HTTPServerConfig()
        config.idleTimeoutMilliseconds = 200
        let harness = try ServerHarness(config: config)
        defer { harness.stop() }
        let idle = try RawConnection(port: harness.port)
        defer { idle.close() }
        let start = Date()
        #expect(idle.readToEnd().closed)
        #expect(Date().timeIntervalSince(start) >= 0.19)

        // A request parked past the idle timeout keeps its connection.
        let busy = try RawConnection(port: harness.port)
        defer { busy.close() }
        busy.send("GET /hold HTTP/1.1\r\n\r\n")
        usleep(600_000)
        harness.releaseAll()
        #expect(busy.readResponses(1).contains("released /hold"))
    }

    @Test func malformedRequestGets400ThenClose() throws {
        let harness = try ServerHarness()
        defer { harness.stop() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }
        connection.send("GET /ok HTTP/1.1\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
        let (bytes, closed) = connection.readToEnd()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200"))
        #expect(text.contains("HTTP/1.1 400"))
        #expect(closed)
    }

    @Test func bodyOverTheLimitGets413BeforeItIsSent() throws {
        var config = HTTPServerConfig()
        config.limits.maxBodyBytes = 1024
        let harness = try ServerHarness(config: config)
        defer { harness.stop() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }
        connection.send("PUT /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n")
        let (bytes, closed) = connection.readToEnd()
        #expect(String(decoding: bytes, as: UTF8.self).hasPrefix("HTTP/1.1 413"))
        #expect(closed)
    }

    @Test func connectionCloseIsHonoured() throws {
        let harness = try ServerHarness()
        defer { harness.stop() }
        let connection = try RawConnection(port: harness.port)
        defer { connection.close() }
        connection.send("GET /a HTTP/1.1\r\nConnection: close\r\n\r\n")
        let (bytes, closed) = connection.readToEnd()
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("Connection: close"))
        #expect(closed)
    }

    @Test func connectionsOverTheLimitAreRefused() throws {
        var config = HTTPServerConfig()
        config.maxConnections = 2
        let harness = try ServerHarness(config: config)
        defer { harness.stop() }
        let a = try RawConnection(port: harness.port), b = try RawConnection(port: harness.port)
        defer { a.close(); b.close() }
        a.send("GET /a HTTP/1.1\r\n\r\n")
        b.send("GET /b HTTP/1.1\r\n\r\n")
        #expect(a.readResponses(1).contains("/a"))
        #expect(b.readResponses(1).contains("/b"))
        let c = try RawConnection(port: harness.port)
        defer { c.close() }
        #expect(c.readToEnd().closed)
    }

    @Test func randomBytesFromManyClientsNeverTakeTheServerDown() throws {
        let harness = try ServerHarness()
        defer { harness.stop() }
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let samples = [
            "GET / HTTP/1.1\r\n\r\n", "PUT /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ].map { Array($0.utf8) }
        for _ in 0..<200 {
            let connection = try RawConnection(port: harness.port, receiveTimeoutSeconds: 5)
            var bytes: [UInt8]
            if rng.next() % 2 == 0 {
                bytes = (0..<Int(rng.next() % 512)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                bytes = samples[Int(rng.next() % UInt64(samples.count))]
                for _ in 0..<Int(rng.next() % 4) where !bytes.isEmpty {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1))))
            }
            connection.send(bytes)
            connection.close()
        }
        var client = HTTPClient(host: "127.0.0.1", port: harness.port)
        let response = try client.request(method: "GET", path: "/still-alive")
        #expect(response.status == 200, "seed \(seed)")
    }
}
