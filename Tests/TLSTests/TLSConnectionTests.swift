// TLS over the loop's TCP against a local OpenSSL server on 127.0.0.1 with a certificate made at
// test time: verified and skipped verification, Go-worded verification failures, and peers that
// close mid-handshake or answer with bytes that are not TLS.
import Dispatch
import EventLoop
import Glibc
import TestSupport
import Testing
@testable import TLS

/// Test-side state shared with the loop thread; only the loop thread touches it after setup.
final class LoopHarness: @unchecked Sendable {
    enum ServerMode {
        case echo, garbage, closeAfterFirstRead
        /// Answers the ClientHello with seeded random bytes (half of them behind a plausible
        /// TLS record header), then closes.
        case random
        /// Relays to a real TLS server on `upstreamPort`, flipping a few bytes of the server's
        /// first flight, then closes.
        case mutatingProxy(upstreamPort: Int)
    }
    var generator = SeededGenerator(seed: 0x7157)  // loop thread only
    weak var lastClient: TLSConnection?  // loop thread only

    let loop: Loop
    var listener: TCPListener?
    var port = 0

    init() throws {
        loop = try Loop(name: "tls-test")
        loop.start()
    }

    func stop() { loop.shutdown() }

    /// Runs `body` on the loop and waits (bounded) for it to call back with a value.
    func onLoop<T>(seconds: Double = 20, _ body: @escaping @Sendable (LoopHarness, @escaping (T) -> Void) -> Void) -> T? {
        let done = DispatchSemaphore(value: 0)
        let box = Box<T>()
        loop.execute { [self] in
            body(self) { value in
                guard box.value == nil else { return }
                box.value = value
                done.signal()
            }
        }
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return box.value
    }

    /// A listener on 127.0.0.1:0 that serves TLS with `context` (echo) or misbehaves.
    func listen(mode: ServerMode, context: TLSContext?) throws {
        let port: Int? = onLoop { harness, done in
            harness.listener = try? TCPListener.listen(on: harness.loop, host: "127.0.0.1", port: 0) { tcp in
                switch mode {
                case .echo:
                    TLSConnection.server(over: tcp, context: context!) { result in
                        guard case .success(let tls) = result else { return }
                        tls.onRead = { [unowned tls] bytes in tls.write(bytes) }
                    }
                case .garbage:
                    tcp.onRead = { [unowned tcp] _ in
                        tcp.write(Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".utf8))
                        tcp.close()
                    }
                    tcp.startReading()
                case .closeAfterFirstRead:
                    tcp.onRead = { [unowned tcp] _ in tcp.close() }
                    tcp.startReading()
                case .random:
                    tcp.onRead = { [unowned tcp] _ in
                        var bytes = (0..<Int.random(in: 1...3000, using: &harness.generator)).map { _ in
                            UInt8.random(in: 0...255, using: &harness.generator)
                        }
                        if Bool.random(using: &harness.generator) {
                            let length = UInt16(min(bytes.count, 0x4000))
                            bytes = [0x16, 0x03, 0x03, UInt8(length >> 8), UInt8(length & 0xff)] + bytes
                        }
                        tcp.write(bytes)
                        tcp.close()
                    }
                    tcp.startReading()
                case .mutatingProxy(let upstreamPort):
                    TCPConnection.connect(on: harness.loop, host: "127.0.0.1", port: upstreamPort) { result in
                        guard case .success(let upstream) = result else { tcp.closeNow(); return }
                        tcp.onRead = { bytes in upstream.write(bytes) }
                        tcp.onClose = { _ in upstream.closeNow() }
                        upstream.onRead = { [unowned tcp] bytes in
                            var mutated = bytes
                            for _ in 0..<Int.random(in: 1...3, using: &harness.generator) {
                                let index = Int.random(in: 0..<mutated.count, using: &harness.generator)
                                mutated[index] ^= UInt8.random(in: 1...255, using: &harness.generator)
                            }
                            tcp.write(mutated)
                            tcp.close()
                        }
                        upstream.startReading()
                        tcp.startReading()
                    }
                }
            }
            done(harness.listener?.localPort ?? 0)
        }
        self.port = try #require(port)
        try #require(self.port > 0)
    }

    /// Connects, handshakes with `serverName`, sends `payload` and collects `payload.count`
    /// bytes back. The result: the echoed bytes or the error.
    func exchange(context: TLSContext, serverName: String, payload: [UInt8]) -> Result<[UInt8], TLSError>? {
        let port = self.port
        return onLoop { harness, done in
            TCPConnection.connect(on: harness.loop, host: "127.0.0.1", port: port) { result in
                guard case .success(let tcp) = result else { done(.failure(.transport("connect failed"))); return }
                TLSConnection.client(over: tcp, context: context, serverName: serverName) { result in
                    if case .success(let tls) = result { harness.lastClient = tls }
                    switch result {
                    case .failure(let error): done(.failure(error))
                    case .success(let tls):
                        var received: [UInt8] = []
                        tls.onRead = { [unowned tls] bytes in
                            received += bytes
                            if received.count >= payload.count {
                                tls.close()
                                done(.success(received))
                            }
                        }
                        tls.onClose = { error in done(error.map { .failure($0) } ?? .success(received)) }
                        tls.write(payload)
                    }
                }
            }
        }
    }
}

final class Box<T>: @unchecked Sendable { var value: T? }

@Suite("TLS connections")
struct TLSConnectionTests {
    let identity: TLSIdentity

    init() throws {
        identity = try TLSIdentity(selfSignedCommonName: "localhost", subjectAltNames: "DNS:localhost,IP:127.0.0.1")
    }

    @Test func verifiedRoundTripByNameAndByIP() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        try harness.listen(mode: .echo, context: try TLSContext.server(identity: identity))
        let client = try TLSContext.client(verifyPeer: true, trusting: [identity])
        let payload = Array("ping".utf8)
        #expect(try #require(harness.exchange(context: client, serverName: "localhost", payload: payload)) == .success(payload))
        #expect(try #require(harness.exchange(context: client, serverName: "127.0.0.1", payload: payload)) == .success(payload))
        // Once the transport has closed, nothing keeps the connection (and its SSL) alive.
        var released = false
        for _ in 0..<100 where !released {
            released = harness.onLoop { harness, done in done(harness.lastClient == nil) } ?? false
            if !released { usleep(20_000) }
        }
        #expect(released)
    }

    @Test func largeTransfersCrossManyRecords() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        try harness.listen(mode: .echo, context: try TLSContext.server(identity: identity))
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let result = try #require(harness.exchange(context: try TLSContext.sharedClient(verifyPeer: false),
                                                   serverName: "localhost", payload: payload))
        #expect(result == .success(payload))
    }

    @Test func selfSignedCertificateIsRejectedUnlessVerificationIsSkipped() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        try harness.listen(mode: .echo, context: try TLSContext.server(identity: identity))
        let payload = Array("x".utf8)
        let verified = try #require(harness.exchange(context: try TLSContext.sharedClient(verifyPeer: true),
                                                     serverName: "localhost", payload: payload))
        #expect(verified == .failure(.certificate("tls: failed to verify certificate: x509: certificate signed by unknown authority")))
        let skipped = try #require(harness.exchange(context: try TLSContext.sharedClient(verifyPeer: false),
                                                    serverName: "localhost", payload: payload))
        #expect(skipped == .success(payload))
    }

    @Test func wrongNameIsRejected() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        try harness.listen(mode: .echo, context: try TLSContext.server(identity: identity))
        let client = try TLSContext.client(verifyPeer: true, trusting: [identity])
        let byName = try #require(harness.exchange(context: client, serverName: "other.example", payload: [1]))
        #expect(byName == .failure(.certificate("tls: failed to verify certificate: x509: certificate is valid for localhost, not other.example")))
        let byIP = try #require(harness.exchange(context: client, serverName: "127.0.0.2", payload: [1]))
        #expect(byIP == .failure(.certificate("tls: failed to verify certificate: x509: certificate is valid for 127.0.0.1, not 127.0.0.2")))
        // A certificate without IP SANs, checked against an IP address.
        let dnsOnly = try TLSIdentity(selfSignedCommonName: "svc", subjectAltNames: "DNS:svc.example,DNS:localhost")
        let dnsOnlyServer = try LoopHarness()
        defer { dnsOnlyServer.stop() }
        try dnsOnlyServer.listen(mode: .echo, context: try TLSContext.server(identity: dnsOnly))
        let trustingDNSOnly = try TLSContext.client(verifyPeer: true, trusting: [dnsOnly])
        let noIPSANs = try #require(dnsOnlyServer.exchange(context: trustingDNSOnly, serverName: "127.0.0.1", payload: [1]))
        #expect(noIPSANs == .failure(.certificate("tls: failed to verify certificate: x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs")))
        let wrongName = try #require(dnsOnlyServer.exchange(context: trustingDNSOnly, serverName: "db.example", payload: [1]))
        #expect(wrongName == .failure(.certificate("tls: failed to verify certificate: x509: certificate is valid for svc.example, localhost, not db.example")))
        #expect(try #require(dnsOnlyServer.exchange(context: trustingDNSOnly, serverName: "svc.example", payload: [7])) == .success([7]))
    }

    @Test func garbageFromTheServerFailsTheHandshake() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        try harness.listen(mode: .garbage, context: nil)
        let result = try #require(harness.exchange(context: try TLSContext.sharedClient(verifyPeer: false),
                                                   serverName: "localhost", payload: [1]))
        #expect(result == .failure(.handshake("tls: first record does not look like a TLS handshake")))
    }

    @Test func serverClosingMidHandshakeIsAnError() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        try harness.listen(mode: .closeAfterFirstRead, context: nil)
        let result = try #require(harness.exchange(context: try TLSContext.sharedClient(verifyPeer: false),
                                                   serverName: "localhost", payload: [1]))
        guard case .failure(let error) = result else { Issue.record("handshake succeeded against a closing peer"); return }
        // EOF, or a reset when the server closed with our ClientHello unread.
        #expect(error == .closedDuringHandshake || { if case .transport = error { return true } else { return false } }())
    }

    /// Property: whatever a server sends, the client ends with an error, never a crash, a hang
    /// or a successful exchange (2 × 60 seeded connections).
    @Test func randomAndMutatedServerBytesAlwaysFailCleanly() throws {
        let upstream = try LoopHarness()
        defer { upstream.stop() }
        try upstream.listen(mode: .echo, context: try TLSContext.server(identity: identity))
        let client = try TLSContext.sharedClient(verifyPeer: false)
        for mode in [LoopHarness.ServerMode.random, .mutatingProxy(upstreamPort: upstream.port)] {
            let harness = try LoopHarness()
            defer { harness.stop() }
            try harness.listen(mode: mode, context: nil)
            var errors: [String: Int] = [:]
            for round in 0..<60 {
                let result = try #require(harness.exchange(context: client, serverName: "localhost", payload: [1, 2, 3]),
                                          "round \(round) of \(mode) did not finish")
                guard case .failure(let error) = result else {
                    Issue.record("round \(round) of \(mode) succeeded: \(result)")
                    return
                }
                errors["\(error)", default: 0] += 1
            }
            // The bytes reached OpenSSL's parser: not every round ended as a bare EOF.
            #expect(errors.keys.contains { $0 != "\(TLSError.closedDuringHandshake)" })
        }
    }

    /// The loop gets the shared verifying context without building it on the loop thread; once
    /// built, it is handed over at once.
    @Test func sharedClientContextsLoadOffTheLoop() throws {
        let harness = try LoopHarness()
        defer { harness.stop() }
        let first: Bool? = harness.onLoop { harness, done in
            TLSContext.loadSharedClient(verifyPeer: true, on: harness.loop) { result in
                done((try? result.get())?.verifiesPeer == true)
            }
        }
        #expect(first == true)
        let immediate: Bool? = harness.onLoop { harness, done in
            var answered = false
            TLSContext.loadSharedClient(verifyPeer: true, on: harness.loop) { _ in answered = true }
            done(answered)
        }
        #expect(immediate == true)
    }

    @Test func verificationMessagesFollowGo() {
        // 10: X509_V_ERR_CERT_HAS_EXPIRED
        #expect(TLSConnection.x509Message(10, name: "h", isIP: false, certificateNames: nil)
                == "tls: failed to verify certificate: x509: certificate has expired or is not yet valid")
    }
}
