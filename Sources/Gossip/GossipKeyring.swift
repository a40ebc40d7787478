// Gossip encryption (Consul's `encrypt`): AES-GCM over every UDP packet and stream frame.
// Sealed form: version byte (1) + 12-byte nonce + ciphertext + 16-byte tag. The first key
// encrypts; every key is tried to decrypt, so a keyring can hold old keys during rotation.
import Crypto
import Foundation

public enum GossipKeyringError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidBase64(String)
    case invalidKeyLength(Int)
    case empty
    case keyNotInstalled
    case removingPrimary
    public var description: String {
        switch self {
        case .keyNotInstalled: "Requested key is not in the keyring"
        case .removingPrimary: "Removing the primary key is not allowed"
        case .invalidBase64: "gossip encryption key is not valid base64"
        case .invalidKeyLength(let n): "gossip encryption key must be 16, 24 or 32 bytes, got \(n)"
        case .empty: "keyring has no keys"
        }
    }
}

public struct GossipKeyring: Sendable {
    static let version: UInt8 = 1
    static let nonceBytes = 12
    static let tagBytes = 16
    /// Bytes a sealed message adds to its plaintext.
    public static let overheadBytes = 1 + nonceBytes + tagBytes

    /// The keys' bytes, primary (encrypting) first. Kept as bytes so the keyring is Sendable.
    public let keyBytes: [[UInt8]]
    private var keys: [SymmetricKey] { keyBytes.map { SymmetricKey(data: $0) } }

    public init(base64Keys: [String]) throws(GossipKeyringError) {
        var keys: [[UInt8]] = []
        for text in base64Keys { keys.append(try Self.decode(text)) }
        if keys.isEmpty { throw .empty }
        keyBytes = keys
    }

    // Rotation (Consul's `keyring -install / -use / -remove`): install a new key everywhere,
    // make it primary everywhere, then remove the old one. Every key still decrypts, so
    // members that have not switched yet are understood throughout.

    /// Adds a key (as a secondary); installing a key twice changes nothing.
    public func installing(base64Key: String) throws(GossipKeyringError) -> GossipKeyring {
        let key = try Self.decode(base64Key)
        if keyBytes.contains(key) { return self }
        return GossipKeyring(keyBytes: keyBytes + [key])
    }

    /// Makes an installed key the one that encrypts.
    public func using(base64Key: String) throws(GossipKeyringError) -> GossipKeyring {
        let key = try Self.decode(base64Key)
        guard keyBytes.contains(key) else { throw .keyNotInstalled }
        return GossipKeyring(keyBytes: [key] + keyBytes.filter { $0 != key })
    }

    /// Drops a secondary key.
    public func removing(base64Key: String) throws(GossipKeyringError) -> GossipKeyring {
        let key = try Self.decode(base64Key)
        guard keyBytes.contains(key) else { throw .keyNotInstalled }
        guard keyBytes[0] != key else { throw .removingPrimary }
        return GossipKeyring(keyBytes: keyBytes.filter { $0 != key })
    }

    private init(keyBytes: [[UInt8]]) { self.keyBytes = keyBytes }

    private static func decode(_ text: String) throws(GossipKeyringError) -> [UInt8] {
        guard let data = Data(base64Encoded: text) else { throw .invalidBase64(text) }
        guard [16, 24, 32].contains(data.count) else { throw .invalidKeyLength(data.count) }
        return Array(data)
    }

    /// The keys as Consul writes them in `serf/local.keyring`.
    public var base64Keys: [String] {
        keyBytes.map { Data($0).base64EncodedString() }
    }

    /// A fresh random 32-byte key, base64 (what `conclave keygen` prints).
    public static func generateBase64Key() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    public func seal(_ plaintext: [UInt8]) -> [UInt8] {
        // AES-GCM seal only fails for a nonce of the wrong size, which we never build.
        guard let box = try? AES.GCM.seal(plaintext, using: SymmetricKey(data: keyBytes[0]), nonce: AES.GCM.Nonce()) else {
            preconditionFailure("AES-GCM seal with a fresh nonce cannot fail")
        }
        var out: [UInt8] = [Self.version]
        out.reserveCapacity(Self.overheadBytes + plaintext.count)
        out += box.nonce.withUnsafeBytes { Array($0) }
        out += box.ciphertext
        out += box.tag
        return out
    }

    /// The plaintext, or nil when no key opens it (wrong key, corrupted, unknown version).
    public func open(_ sealed: [UInt8]) -> [UInt8]? {
        guard sealed.count >= Self.overheadBytes, sealed[0] == Self.version else { return nil }
        let nonceEnd = 1 + Self.nonceBytes
        let tagStart = sealed.count - Self.tagBytes
        guard let nonce = try? AES.GCM.Nonce(data: sealed[1..<nonceEnd]),
              let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: sealed[nonceEnd..<tagStart], tag: sealed[tagStart...])
        else { return nil }
        for key in keys {
            if let plain = try? AES.GCM.open(box, using: key) { return Array(plain) }
        }
        return nil
    }
}
