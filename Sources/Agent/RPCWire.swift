// The client-agent RPC protocol carried on a server's server port (the Raft port, as Consul's
// 8300 carries both): a client agent forwards HTTP API requests it cannot answer itself
// (KV, status, catalog, health, …) to a server, which runs them through its own HTTP API and
// sends the answers back. This file owns the frame format; RPCServer and RPCClient drive it.
//
// Framing: every frame is Replication.Framing's u32 big-endian payload length + payload. On
// an inbound connection of the server port, a first payload starting with a byte in
// StreamKind.range hands the connection to a stream handler; ours is StreamKind.clientRPC.
//
// Payloads (integers big-endian, strings UTF-8, every length checked against `RPCWire` limits):
//
//   hello    (client → server, first frame only)  E1 version:u8            version = 1
//   request  (client → server)  01 id:u64 method:(u8 len, bytes) target:(u16 len, bytes)
//                               headers body
//   cancel   (client → server)  02 id:u64      the caller went away; the server drops the
//                                              request (a parked blocking query is released)
//   response (server → client)  81 id:u64 status:u16 headers body
//
//   headers = count:u8, then per field name:(u8 len, bytes) value:(u16 len, bytes)
//   body    = len:u32, bytes
//
// `target` is the raw request-target (path and query, percent-encoded as the HTTP client sent
// it), so the server decodes it exactly as if it had arrived over HTTP. Requests are
// multiplexed by `id` (chosen by the client, unique among its requests in flight on that
// connection); responses come back in any order, so a blocking query parked on the server for
// minutes holds up nothing else. A payload that does not decode is a protocol error: the
// connection is closed.
import HTTP
import Replication

enum RPCWireError: Error, Equatable, CustomStringConvertible {
    case truncated(String)
    case trailingBytes(Int)
    case unknownType(UInt8)
    case tooLarge(String, size: Int, limit: Int)
    case invalid(String)

    var description: String {
        switch self {
        case .truncated(let field): return "rpc frame truncated in \(field)"
        case .trailingBytes(let count): return "rpc frame has \(count) trailing bytes"
        case .unknownType(let type): return "unknown rpc frame type \(type)"
        case let .tooLarge(field, size, limit): return "rpc \(field) of \(size) bytes exceeds the limit of \(limit)"
        case .invalid(let why): return "invalid rpc frame: \(why)"
        }
    }
}

struct RPCRequest: Equatable {
    var id: UInt64
    var method: String
    var target: String
    var headers: HTTPHeaders
    var body: [UInt8]
}

struct RPCResponse: Equatable {
    var id: UInt64
    var status: Int
    var headers: HTTPHeaders
    var body: [UInt8]
}

enum RPCMessage: Equatable {
    case hello(version: UInt8)
    case request(RPCRequest)
    case cancel(id: UInt64)
    case response(RPCResponse)
}

enum RPCWire {
    static let version: UInt8 = 1
    static let requestType: UInt8 = 0x01
    static let cancelType: UInt8 = 0x02
    static let responseType: UInt8 = 0x81

    /// HTTP methods are short tokens (the longest standard one, OPTIONS, has 7 letters).
    static let maxMethodBytes = 16
    /// The HTTP server's URL limit (HTTPLimits.maxURLBytes is 8 KiB); a client cannot have
    /// received a longer one.
    static let maxTargetBytes = 8 << 10
    static let maxHeaders = 64
    static let maxHeaderValueBytes = 8 << 10
    /// A response frame's largest size (a `?recurse` read of a large tree). The server answers
    /// 500 instead of sending a larger one; the client's decoder refuses larger frames.
    static let maxResponseFrameBytes = 64 << 20
    /// Request frames: the body (a KV value, at most kv_max_value_size) plus the target and
    /// headers. The server's frame decoder takes up to the server port's frame limit; a
    /// request over this is answered 413 without being run.
    static func maxRequestFrameBytes(bodyLimit: Int) -> Int { bodyLimit + 128 << 10 }

    /// Request headers a client agent passes on (the ones Consul's endpoints read); hop-by-hop
    /// and connection headers stay on the client's HTTP connection.
    static let forwardedRequestHeaders = ["X-Consul-Token", "Authorization", "Content-Type", "Cache-Control"]
    /// Response headers a server leaves out: the client's HTTP server writes its own framing.
    static let droppedResponseHeaders = ["Content-Length", "Connection", "Transfer-Encoding", "Keep-Alive"]

    static func hello() -> [UInt8] { [StreamKind.clientRPC, version] }

    static func cancel(id: UInt64) -> [UInt8] {
        var out: [UInt8] = [cancelType]
        appendU64(id, &out)
        return out
    }

    static func encode(_ request: RPCRequest) throws(RPCWireError) -> [UInt8] {
        var out: [UInt8] = [requestType]
        out.reserveCapacity(32 + request.target.utf8.count + request.body.count)
        appendU64(request.id, &out)
        let method = Array(request.method.utf8)
        guard !method.isEmpty, method.allSatisfy(isTokenByte) else { throw .invalid("method \"\(request.method)\"") }
        guard method.count <= maxMethodBytes else { throw .tooLarge("method", size: method.count, limit: maxMethodBytes) }
        out.append(UInt8(method.count))
        out.append(contentsOf: method)
        let target = Array(request.target.utf8)
        guard target.count <= maxTargetBytes else { throw .tooLarge("target", size: target.count, limit: maxTargetBytes) }
        guard target.first == UInt8(ascii: "/"), !target.contains(where: { $0 < 0x21 || $0 == 0x7F }) else {
            throw .invalid("target must start with / and have no control characters or spaces")
        }
        appendU16(target.count, &out)
        out.append(contentsOf: target)
        try appendHeaders(request.headers, &out)
        try appendBody(request.body, &out)
        return out
    }

    static func encode(_ response: RPCResponse) throws(RPCWireError) -> [UInt8] {
        var out: [UInt8] = [responseType]
        out.reserveCapacity(64 + response.body.count)
        appendU64(response.id, &out)
        guard (100...999).contains(response.status) else { throw .invalid("status \(response.status)") }
        appendU16(response.status, &out)
        try appendHeaders(response.headers, &out)
        try appendBody(response.body, &out)
        return out
    }

    /// Total: any bytes give a message or an error; no allocation beyond the input's size.
    static func decode(_ payload: [UInt8]) throws(RPCWireError) -> RPCMessage {
        var reader = Reader(bytes: payload)
        let type = try reader.u8("type")
        let message: RPCMessage
        switch type {
        case StreamKind.clientRPC:
            message = .hello(version: try reader.u8("version"))
        case requestType:
            let id = try reader.u64("id")
            let methodBytes = try reader.bytes(Int(try reader.u8("method length")), "method")
            guard !methodBytes.isEmpty, methodBytes.count <= maxMethodBytes, methodBytes.allSatisfy(isTokenByte) else {
                throw .invalid("method")
            }
            let targetLength = Int(try reader.u16("target length"))
            guard targetLength <= maxTargetBytes else { throw .tooLarge("target", size: targetLength, limit: maxTargetBytes) }
            let targetBytes = try reader.bytes(targetLength, "target")
            guard targetBytes.first == UInt8(ascii: "/"), !targetBytes.contains(where: { $0 < 0x21 || $0 == 0x7F }),
                  let target = String(validating: targetBytes, as: UTF8.self) else { throw .invalid("target") }
            let headers = try reader.headers()
            let body = try reader.body()
            message = .request(RPCRequest(id: id, method: String(decoding: methodBytes, as: UTF8.self), target: target,
                                          headers: headers, body: body))
        case cancelType:
            message = .cancel(id: try reader.u64("id"))
        case responseType:
            let id = try reader.u64("id")
            let status = Int(try reader.u16("status"))
            guard (100...999).contains(status) else { throw .invalid("status \(status)") }
            let headers = try reader.headers()
            let body = try reader.body()
            message = .response(RPCResponse(id: id, status: status, headers: headers, body: body))
        default:
            throw .unknownType(type)
        }
        guard reader.remaining == 0 else { throw .trailingBytes(reader.remaining) }
        return message
    }

    // MARK: Encoding helpers

    /// RFC 9110 tchar: header names and methods.
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
        }
    }

    /// Header values end up in an HTTP response the client agent writes: no CR, LF or NUL.
    static func isValueByte(_ c: UInt8) -> Bool { c != 0x0D && c != 0x0A && c != 0x00 }

    private static func appendHeaders(_ headers: HTTPHeaders, _ out: inout [UInt8]) throws(RPCWireError) {
        guard headers.count <= maxHeaders else { throw .tooLarge("header count", size: headers.count, limit: maxHeaders) }
        out.append(UInt8(headers.count))
        for field in headers {
            let name = Array(field.name.utf8), value = Array(field.value.utf8)
            guard !name.isEmpty, name.count <= 255, name.allSatisfy(isTokenByte) else { throw .invalid("header name \"\(field.name)\"") }
            guard value.count <= maxHeaderValueBytes else {
                throw .tooLarge("header \(field.name)", size: value.count, limit: maxHeaderValueBytes)
            }
            guard value.allSatisfy(isValueByte) else { throw .invalid("header \(field.name) has CR, LF or NUL") }
            out.append(UInt8(name.count))
            out.append(contentsOf: name)
            appendU16(value.count, &out)
            out.append(contentsOf: value)
        }
    }

    private static func appendBody(_ body: [UInt8], _ out: inout [UInt8]) throws(RPCWireError) {
        guard body.count <= Int(UInt32.max) - 64 else { throw .tooLarge("body", size: body.count, limit: Int(UInt32.max) - 64) }
        let n = UInt32(body.count)
        out.append(contentsOf: [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)])
        out.append(contentsOf: body)
    }

    private static func appendU16(_ value: Int, _ out: inout [UInt8]) {
        out.append(UInt8(value >> 8 & 0xFF))
        out.append(UInt8(value & 0xFF))
    }

    private static func appendU64(_ value: UInt64, _ out: inout [UInt8]) {
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    // MARK: Decoding

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0
        var remaining: Int { bytes.count - offset }

        mutating func u8(_ field: String) throws(RPCWireError) -> UInt8 {
            guard remaining >= 1 else { throw .truncated(field) }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func u16(_ field: String) throws(RPCWireError) -> UInt16 {
            guard remaining >= 2 else { throw .truncated(field) }
            defer { offset += 2 }
            return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
        }

        mutating func u32(_ field: String) throws(RPCWireError) -> UInt32 {
            guard remaining >= 4 else { throw .truncated(field) }
            var value: UInt32 = 0
            for i in 0..<4 { value = value << 8 | UInt32(bytes[offset + i]) }
            offset += 4
            return value
        }

        mutating func u64(_ field: String) throws(RPCWireError) -> UInt64 {
            guard remaining >= 8 else { throw .truncated(field) }
            var value: UInt64 = 0
            for i in 0..<8 { value = value << 8 | UInt64(bytes[offset + i]) }
            offset += 8
            return value
        }

        /// Checks the length against what is left before copying, so a lying length cannot
        /// make us allocate more than the frame holds.
        mutating func bytes(_ count: Int, _ field: String) throws(RPCWireError) -> ArraySlice<UInt8> {
            guard count <= remaining else { throw .truncated(field) }
            defer { offset += count }
            return bytes[offset ..< offset + count]
        }

        mutating func headers() throws(RPCWireError) -> HTTPHeaders {
            let count = Int(try u8("header count"))
            guard count <= RPCWire.maxHeaders else { throw .tooLarge("header count", size: count, limit: RPCWire.maxHeaders) }
            var headers = HTTPHeaders()
            for _ in 0..<count {
                let name = try bytes(Int(try u8("header name length")), "header name")
                guard !name.isEmpty, name.allSatisfy(RPCWire.isTokenByte) else { throw .invalid("header name") }
                let valueLength = Int(try u16("header value length"))
                guard valueLength <= RPCWire.maxHeaderValueBytes else {
                    throw .tooLarge("header value", size: valueLength, limit: RPCWire.maxHeaderValueBytes)
                }
                let value = try bytes(valueLength, "header value")
                guard value.allSatisfy(RPCWire.isValueByte), let text = String(validating: value, as: UTF8.self) else {
                    throw .invalid("header value")
                }
                headers.add(String(decoding: name, as: UTF8.self), text)
            }
            return headers
        }

        mutating func body() throws(RPCWireError) -> [UInt8] {
            let length = Int(try u32("body length"))
            return Array(try bytes(length, "body"))
        }
    }
}
