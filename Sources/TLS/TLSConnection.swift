// TLS over the loop's non-blocking TCPConnection: OpenSSL runs on memory BIOs, so it never
// touches the socket. Ciphertext read from TCP is written into the read BIO and SSL_* is
// driven until it wants more; whatever OpenSSL put in the write BIO is handed to TCP. Every
// call happens on the loop thread, and nothing here blocks.
import CLibSSL
import EventLoop
import Glibc

/// Loop-confined, like the TCPConnection under it. Kept alive by the transport's callbacks
/// until the transport closes.
public final class TLSConnection {
    public let transport: TCPConnection
    private let context: TLSContext  // the SSL holds a reference too; this keeps the Swift owner alive
    private let ssl: OpaquePointer
    private let readBIO: OpaquePointer
    private let writeBIO: OpaquePointer

    private enum State { case handshaking, open, closing, closed }
    private var state = State.handshaking
    /// The first error that ended the connection; reported from the transport's close.
    private var failure: TLSError?
    private var handshakeCompletion: ((Result<TLSConnection, TLSError>) -> Void)?
    /// The name the certificate must carry (nil: no name check, or verification is off).
    private let verifyName: String?

    /// Each chunk of plaintext read (at most one TLS record, 16 KiB), in order.
    public var onRead: (([UInt8]) -> Void)?
    /// Called once after the transport closed: nil for a clean end (close_notify or EOF), the error otherwise.
    public var onClose: ((TLSError?) -> Void)?

    /// Ciphertext arriving in one read is at most the loop's read buffer; OpenSSL holds at most
    /// one partial record (16 KiB + overhead) between reads. Plaintext is pulled in record-sized chunks.
    static let plaintextChunkBytes = 16 * 1024

    private init(transport: TCPConnection, context: TLSContext, verifyName: String?) throws(TLSError) {
        guard let ssl = SSL_new(context.pointer) else { throw .setup(lastErrorText()) }
        guard let readBIO = BIO_new(BIO_s_mem()), let writeBIO = BIO_new(BIO_s_mem()) else {
            SSL_free(ssl)
            throw .setup(lastErrorText())
        }
        SSL_set_bio(ssl, readBIO, writeBIO)  // the SSL owns both BIOs from here
        _ = clibssl_set_mode_release_buffers(ssl)
        self.transport = transport
        self.context = context
        self.ssl = ssl
        self.readBIO = readBIO
        self.writeBIO = writeBIO
        self.verifyName = verifyName
    }

    deinit { SSL_free(ssl) }

    /// Starts a client handshake on an open TCP connection. `serverName` goes in SNI (not for IP
    /// addresses, as Go does) and, when the context verifies, is the name (or IP) the certificate
    /// must match. `completion` runs once on the loop: the open connection, or why the handshake
    /// failed (the transport is closed then).
    public static func client(over transport: TCPConnection, context: TLSContext, serverName: String,
                              completion: @escaping (Result<TLSConnection, TLSError>) -> Void) {
        transport.loop.assertInLoopThread()
        guard !transport.isClosed else {
            completion(.failure(.transport("connection closed before the handshake")))
            return
        }
        let connection: TLSConnection
        do {
            connection = try TLSConnection(transport: transport, context: context,
                                           verifyName: context.verifiesPeer ? serverName : nil)
        } catch {
            transport.closeNow()
            completion(.failure(error))
            return
        }
        SSL_set_connect_state(connection.ssl)
        let isIP = isIPAddress(serverName)
        var configured = true
        if !serverName.isEmpty && !isIP { configured = clibssl_set_sni(connection.ssl, serverName) == 1 }
        if configured && context.verifiesPeer && !serverName.isEmpty {
            let parameters = SSL_get0_param(connection.ssl)
            configured = isIP ? X509_VERIFY_PARAM_set1_ip_asc(parameters, serverName) == 1
                              : X509_VERIFY_PARAM_set1_host(parameters, serverName, 0) == 1
        }
        guard configured else {
            transport.closeNow()
            completion(.failure(.setup(lastErrorText())))
            return
        }
        connection.start(completion)
    }

    /// Starts a server handshake on an accepted TCP connection.
    public static func server(over transport: TCPConnection, context: TLSContext,
                              completion: @escaping (Result<TLSConnection, TLSError>) -> Void) {
        transport.loop.assertInLoopThread()
        guard !transport.isClosed else {
            completion(.failure(.transport("connection closed before the handshake")))
            return
        }
        let connection: TLSConnection
        do {
            connection = try TLSConnection(transport: transport, context: context, verifyName: nil)
        } catch {
            transport.closeNow()
            completion(.failure(error))
            return
        }
        SSL_set_accept_state(connection.ssl)
        connection.start(completion)
    }

    private func start(_ completion: @escaping (Result<TLSConnection, TLSError>) -> Void) {
        handshakeCompletion = completion
        // The closures keep self alive until the transport closes (it drops them then).
        transport.onRead = { [self] bytes in received(bytes) }
        transport.onClose = { [self] error in transportClosed(error) }
        transport.startReading()
        continueHandshake()
    }

    // MARK: Driving OpenSSL

    private func received(_ bytes: [UInt8]) {
        guard state == .handshaking || state == .open else { return }
        let written = bytes.withUnsafeBytes { BIO_write(readBIO, $0.baseAddress, Int32($0.count)) }
        guard written == Int32(bytes.count) else {
            fail(.setup("memory BIO write failed"))
            return
        }
        if state == .handshaking { continueHandshake() } else { readPlaintext() }
    }

    private func continueHandshake() {
        ERR_clear_error()  // the error queue is per thread, shared by every connection on the loop
        let result = SSL_do_handshake(ssl)
        let error = result == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, result)
        flushCiphertext()
        if result == 1 {
            state = .open
            let completion = handshakeCompletion
            handshakeCompletion = nil
            completion?(.success(self))
            if state == .open { readPlaintext() }  // application data may have come with the last flight
            return
        }
        if error == SSL_ERROR_WANT_READ { return }
        fail(handshakeFailure(error))
    }

    private func readPlaintext() {
        var chunk = [UInt8](repeating: 0, count: Self.plaintextChunkBytes)
        while state == .open {
            ERR_clear_error()
            let count = chunk.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if count > 0 {
                onRead?(Array(chunk[0..<Int(count)]))
                continue
            }
            let error = SSL_get_error(ssl, count)
            flushCiphertext()  // TLS 1.3 post-handshake messages may need an answer
            switch error {
            case SSL_ERROR_WANT_READ:
                return
            case SSL_ERROR_ZERO_RETURN:
                close()  // the peer's close_notify: answer it and end cleanly
                return
            default:
                fail(.protocolViolation("tls: \(lastErrorText())"))
                return
            }
        }
    }

    /// Moves whatever OpenSSL produced from the write BIO to the socket.
    private func flushCiphertext() {
        while true {
            let pending = Int(BIO_ctrl_pending(writeBIO))
            guard pending > 0 else { return }
            var bytes = [UInt8](repeating: 0, count: pending)
            let read = bytes.withUnsafeMutableBytes { BIO_read(writeBIO, $0.baseAddress, Int32($0.count)) }
            guard read > 0 else { return }
            if Int(read) < pending { bytes.removeLast(pending - Int(read)) }
            transport.write(bytes)
        }
    }

    private func handshakeFailure(_ error: Int32) -> TLSError {
        if let verifyName, context.verifiesPeer {
            let verify = Int32(truncatingIfNeeded: SSL_get_verify_result(ssl))
            if verify != X509_V_OK {
                let wantIP = isIPAddress(verifyName)
                return .certificate(Self.x509Message(verify, name: verifyName, isIP: wantIP,
                                                     certificateNames: peerAltNames(wantIP: wantIP)))
            }
        }
        let code = ERR_peek_last_error()
        guard error == SSL_ERROR_SSL, code != 0, let reasonPointer = ERR_reason_error_string(code) else {
            ERR_clear_error()
            return .handshake("tls: handshake failed")
        }
        ERR_clear_error()
        let reason = String(cString: reasonPointer)
        // Go's wording for the common cases; OpenSSL's reason text otherwise.
        if reason == "wrong version number" || reason == "packet length too long" || reason == "record layer failure" {
            return .handshake("tls: first record does not look like a TLS handshake")
        }
        for prefix in ["sslv3 alert ", "tlsv1 alert ", "tlsv13 alert "] where reason.hasPrefix(prefix) {
            return .handshake("remote error: tls: " + reason.dropFirst(prefix.count))
        }
        return .handshake("tls: \(reason)")
    }

    /// The peer certificate's DNS (or IP) subjectAltNames, ", "-joined; nil without a certificate.
    private func peerAltNames(wantIP: Bool) -> [String]? {
        var buffer = [CChar](repeating: 0, count: 1024)  // names past 1 KiB are cut: it is a message
        let count = clibssl_peer_alt_names(ssl, wantIP ? 1 : 0, &buffer, buffer.count)
        guard count >= 0 else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return count == 0 ? [] : [text]
    }

    /// Go's crypto/tls + crypto/x509 messages (Go 1.20+, which current Consul is built with) for
    /// the verification results a health check meets.
    static func x509Message(_ code: Int32, name: String, isIP: Bool, certificateNames: [String]?) -> String {
        let detail: String
        switch code {
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
             X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
             X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
            detail = "certificate signed by unknown authority"
        case X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CERT_NOT_YET_VALID:
            detail = "certificate has expired or is not yet valid"
        case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
            let valid = certificateNames?.first ?? ""
            if isIP && valid.isEmpty {
                detail = "cannot validate certificate for \(name) because it doesn't contain any IP SANs"
            } else if valid.isEmpty {
                detail = "certificate is not valid for any names, but wanted to match \(name)"
            } else {
                detail = "certificate is valid for \(valid), not \(name)"
            }
        default:
            detail = String(cString: X509_verify_cert_error_string(Int(code)))
        }
        return "tls: failed to verify certificate: x509: " + detail
    }

    // MARK: Writing and closing

    /// Encrypts `bytes` and queues the records on the transport (whose own high-water mark
    /// bounds what waits there). Dropped unless the handshake has finished and the connection is open.
    public func write(_ bytes: [UInt8]) {
        transport.loop.assertInLoopThread()
        guard state == .open, !bytes.isEmpty else { return }
        var offset = 0
        while offset < bytes.count {
            let count = min(bytes.count - offset, Int(Int32.max))
            ERR_clear_error()
            // A memory BIO never pushes back: SSL_write takes everything at once.
            let written = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + offset, Int32(count)) }
            guard written > 0 else {
                fail(.protocolViolation("tls: write failed: \(lastErrorText())"))
                return
            }
            offset += Int(written)
        }
        flushCiphertext()
    }

    /// Orderly close: sends close_notify, then closes the transport after its queued writes.
    public func close() {
        transport.loop.assertInLoopThread()
        switch state {
        case .handshaking: closeNow(); return
        case .open: break
        case .closing, .closed: return
        }
        state = .closing
        ERR_clear_error()
        _ = SSL_shutdown(ssl)  // queues close_notify; not waiting for the peer's, as Go doesn't
        ERR_clear_error()
        flushCiphertext()
        transport.close()
    }

    /// Abrupt close: the transport is closed at once; `onClose` (or the handshake completion) follows.
    public func closeNow() {
        transport.loop.assertInLoopThread()
        if state == .handshaking && failure == nil { failure = .transport("tls: handshake cancelled (connection closed locally)") }
        if state != .closed { state = .closing }
        transport.closeNow()
    }

    private func fail(_ error: TLSError) {
        if failure == nil { failure = error }
        closeNow()
    }

    private func transportClosed(_ error: LoopError?) {
        let wasHandshaking = handshakeCompletion != nil
        state = .closed
        let outcome: TLSError? = failure ?? error.map { .transport("\($0)") }
        if wasHandshaking {
            let completion = handshakeCompletion
            handshakeCompletion = nil
            completion?(.failure(outcome ?? .closedDuringHandshake))
        } else {
            let onClose = self.onClose
            self.onClose = nil
            onRead = nil
            onClose?(outcome)
        }
    }
}

func isIPAddress(_ host: String) -> Bool {
    var v4 = in_addr(), v6 = in6_addr()
    return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
}
