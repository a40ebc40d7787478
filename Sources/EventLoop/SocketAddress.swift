// Numeric socket addresses: parsing "host" + port into a sockaddr for libuv, and decoding the
// sockaddr libuv hands back. Names other than "localhost" are not resolved (no DNS on the loop).
import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address and port, as text: `SocketAddress(host: "127.0.0.1", port: 8301)`.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// "127.0.0.1:8301", "[::1]:8301"
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// A parsed address in storage big enough for IPv4 and IPv6.
struct ResolvedAddress {
    var storage = sockaddr_storage()

    /// Accepts dotted IPv4, IPv6 (bare or in brackets) and "localhost" (127.0.0.1).
    init(host: String, port: Int, operation: String) throws(LoopError) {
        guard (0...65535).contains(port) else {
            throw LoopError(UV_EINVAL, operation: operation)
        }
        let numericHost = host == "localhost" ? "127.0.0.1" : host
        let ipv4Status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { uv_ip4_addr(numericHost, Int32(port), $0) }
        }
        if ipv4Status == 0 { return }
        var ipv6Host = Substring(numericHost)
        if ipv6Host.hasPrefix("["), ipv6Host.hasSuffix("]") {
            ipv6Host = ipv6Host.dropFirst().dropLast()
        }
        let ipv6Status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { uv_ip6_addr(String(ipv6Host), Int32(port), $0) }
        }
        if ipv6Status == 0 { return }
        throw LoopError(UV_EINVAL, operation: operation)
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafePointer(to: storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body)
        }
    }

    /// Decodes an address libuv filled in; nil for families other than IPv4/IPv6.
    static func decode(_ address: UnsafePointer<sockaddr>) -> SocketAddress? {
        var text = [CChar](repeating: 0, count: 64)
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { ipv4 in
                guard uv_ip4_name(ipv4, &text, text.count) == 0 else { return nil }
                return SocketAddress(host: cText(text), port: Int(UInt16(bigEndian: ipv4.pointee.sin_port)))
            }
        case AF_INET6:
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { ipv6 in
                guard uv_ip6_name(ipv6, &text, text.count) == 0 else { return nil }
                return SocketAddress(host: cText(text), port: Int(UInt16(bigEndian: ipv6.pointee.sin6_port)))
            }
        default:
            return nil
        }
    }

    private static func cText(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Reads an address with a getsockname-style call (`uv_tcp_getsockname`, `uv_udp_getsockname`, ...).
    static func read(_ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Int32>) -> Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                guard call(address, &length) == 0 else { return nil }
                return decode(address)
            }
        }
    }
}
