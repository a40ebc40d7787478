// OpenSSL contexts: a client context that verifies the peer against the system CA store (or
// skips verification, for Consul's TLSSkipVerify), and a server context from an identity.
import CLibSSL
import Dispatch
import EventLoop
import Foundation

/// One SSL_CTX. Immutable once built, and OpenSSL documents an SSL_CTX as safe to share between
/// threads once configured: hence `@unchecked Sendable` (connections made from it stay on one loop).
public final class TLSContext: @unchecked Sendable {
    let pointer: OpaquePointer
    /// True when connections made from it verify the peer's certificate chain and name.
    public let verifiesPeer: Bool
    private let identities: [TLSIdentity]  // kept alive while the context uses their keys

    private init(pointer: OpaquePointer, verifiesPeer: Bool, identities: [TLSIdentity]) {
        self.pointer = pointer
        self.verifiesPeer = verifiesPeer
        self.identities = identities
    }

    deinit { SSL_CTX_free(pointer) }

    /// A client context, TLS 1.2 at least (Go's client default). `verifyPeer`: check the chain
    /// against the system CA store (`SSL_CTX_set_default_verify_paths`, Debian's
    /// /etc/ssl/certs) plus `trusting`, and the name set per connection.
    public static func client(verifyPeer: Bool, trusting: [TLSIdentity] = []) throws(TLSError) -> TLSContext {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw .setup(lastErrorText()) }
        let context = TLSContext(pointer: ctx, verifiesPeer: verifyPeer, identities: trusting)
        guard clibssl_ctx_min_tls12(ctx) == 1 else { throw .setup(lastErrorText()) }
        if verifyPeer {
            // Failing to load the system store is not fatal: verification then fails per
            // connection with "unknown authority", which names the problem.
            _ = SSL_CTX_set_default_verify_paths(ctx)
            for identity in trusting {
                guard X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), identity.certificate) == 1 else {
                    throw .setup(lastErrorText())
                }
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        }
        return context
    }

    /// The process-wide client context for `verifyPeer`, built on first use. Blocks while the
    /// first build loads the CA store: call it off the loop (the loop uses `loadSharedClient`).
    public static func sharedClient(verifyPeer: Bool) throws(TLSError) -> TLSContext {
        try SharedClientContexts.instance.get(verifyPeer: verifyPeer).get()
    }

    /// The shared client context, handed to `completion` on `loop`'s thread. Building the
    /// verifying one parses the system CA bundle (60 ms measured with Debian's bundle on the
    /// dev VM), too long for the loop thread: the first call builds it on a worker thread.
    public static func loadSharedClient(verifyPeer: Bool, on loop: Loop,
                                        completion: @escaping (Result<TLSContext, TLSError>) -> Void) {
        loop.assertInLoopThread()
        if let ready = SharedClientContexts.instance.ifBuilt(verifyPeer: verifyPeer) {
            completion(ready)
            return
        }
        let box = LoopConfined(completion)
        DispatchQueue.global().async {
            let result = SharedClientContexts.instance.get(verifyPeer: verifyPeer)
            loop.execute { box.value(result) }
        }
    }

    /// A server context presenting `identity`.
    public static func server(identity: TLSIdentity) throws(TLSError) -> TLSContext {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw .setup(lastErrorText()) }
        let context = TLSContext(pointer: ctx, verifiesPeer: false, identities: [identity])
        guard SSL_CTX_use_certificate(ctx, identity.certificate) == 1,
              SSL_CTX_use_PrivateKey(ctx, identity.key) == 1 else { throw .setup(lastErrorText()) }
        return context
    }
}

/// A private key and its certificate.
public final class TLSIdentity: @unchecked Sendable {  // immutable after init; OpenSSL refcounts both
    let key: OpaquePointer
    let certificate: OpaquePointer

    /// A fresh P-256 key and a self-signed certificate for `commonName` with the given
    /// subjectAltName list ("DNS:localhost,IP:127.0.0.1"), valid for `validSeconds` from now.
    /// For tests and local development servers.
    public init(selfSignedCommonName commonName: String, subjectAltNames: String, validSeconds: Int = 3600) throws(TLSError) {
        var key: OpaquePointer?
        var certificate: OpaquePointer?
        guard clibssl_self_signed(commonName, subjectAltNames, validSeconds, &key, &certificate) == 1,
              let key, let certificate else { throw .setup(lastErrorText()) }
        self.key = key
        self.certificate = certificate
    }

    deinit {
        X509_free(certificate)
        EVP_PKEY_free(key)
    }
}

/// The newest OpenSSL error on this thread's queue, as its reason text; clears the queue.
func lastErrorText() -> String {
    let code = ERR_get_error()
    defer { ERR_clear_error() }
    guard code != 0 else { return "unknown error" }
    if let reason = ERR_reason_error_string(code) { return String(cString: reason) }
    return "error \(code)"
}

/// The two shared client contexts, built at most once each. Guarded by `lock`: any thread may
/// ask (the loop only through `TLSContext.loadSharedClient`, which builds off the loop).
private final class SharedClientContexts: @unchecked Sendable {
    static let instance = SharedClientContexts()
    private let lock = NSLock()
    private var built: [Bool: Result<TLSContext, TLSError>] = [:]

    func ifBuilt(verifyPeer: Bool) -> Result<TLSContext, TLSError>? {
        lock.withLock { built[verifyPeer] }
    }

    func get(verifyPeer: Bool) -> Result<TLSContext, TLSError> {
        lock.withLock {
            if let result = built[verifyPeer] { return result }
            let result = Self.build(verifyPeer: verifyPeer)
            built[verifyPeer] = result
            return result
        }
    }
}

extension SharedClientContexts {
    static func build(verifyPeer: Bool) -> Result<TLSContext, TLSError> {
        do throws(TLSError) { return .success(try TLSContext.client(verifyPeer: verifyPeer)) } catch { return .failure(error) }
    }
}

/// Carries a loop-confined closure to a worker thread and back; only the loop thread calls it.
private final class LoopConfined<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
