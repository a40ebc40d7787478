// Errors from the TLS layer, worded like Go's crypto/tls and crypto/x509 (Consul's check
// outputs carry Go's words: "x509: certificate signed by unknown authority").

public enum TLSError: Error, Equatable, CustomStringConvertible {
    /// The peer's certificate failed verification ("x509: …").
    case certificate(String)
    /// The handshake failed for another reason: a TLS alert, no shared version or cipher,
    /// bytes that are not TLS ("tls: …", "remote error: tls: …").
    case handshake(String)
    /// The peer closed the connection before the handshake finished.
    case closedDuringHandshake
    /// The TCP connection failed underneath (its LoopError's text).
    case transport(String)
    /// A record after the handshake failed to decrypt or parse.
    case protocolViolation(String)
    /// OpenSSL could not set up a context, a connection or a key.
    case setup(String)

    public var description: String {
        switch self {
        case .certificate(let message), .handshake(let message), .protocolViolation(let message): return message
        case .closedDuringHandshake: return "tls: connection closed by peer during handshake (EOF)"
        case .transport(let message): return message
        case .setup(let message): return "tls: setup failed: \(message)"
        }
    }
}
