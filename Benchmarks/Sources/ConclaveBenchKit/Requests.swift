// The bytes of each request the workloads send: Consul's KV API for Conclave, and etcd's v3 JSON
// gateway (grpc-gateway: keys and values in base64, POST /v3/kv/put and /v3/kv/range) for etcd.
import Foundation

public enum RequestEncoding {
    /// One HTTP/1.1 request with a Content-Length body; keep-alive is HTTP/1.1's default.
    public static func request(method: String, path: String, host: String, body: [UInt8] = [], contentType: String? = nil) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }

    // MARK: Conclave (Consul's /v1/kv)

    public static func conclavePut(key: String, value: [UInt8], cas: UInt64? = nil, host: String) -> [UInt8] {
        let query = cas.map { "?cas=\($0)" } ?? ""
        return request(method: "PUT", path: "/v1/kv/\(key)\(query)", host: host, body: value)
    }

    public static func conclaveGet(key: String, consistency: Consistency, host: String) -> [UInt8] {
        let query: String
        switch consistency {
        case .default: query = ""
        case .stale: query = "?stale"
        case .consistent: query = "?consistent"
        }
        return request(method: "GET", path: "/v1/kv/\(key)\(query)", host: host)
    }

    /// Consul's `PUT /v1/catalog/register` body: a node with an address and one service.
    public static func catalogRegister(node: String, service: String, port: Int = 8080, host: String) -> [UInt8] {
        request(method: "PUT", path: "/v1/catalog/register", host: host, body: catalogRegisterBody(node: node, service: service, port: port),
                contentType: "application/json")
    }

    public static func catalogRegisterBody(node: String, service: String, port: Int = 8080) -> [UInt8] {
        let body = "{\"Node\":\"\(node)\",\"Address\":\"10.1.2.3\",\"Service\":{\"ID\":\"\(service)-1\",\"Service\":\"\(service)\",\"Tags\":[\"bench\"],\"Address\":\"10.1.2.3\",\"Port\":\(port)}}"
        return Array(body.utf8)
    }

    public static func healthService(_ name: String, consistency: Consistency, host: String) -> [UInt8] {
        let query: String
        switch consistency {
        case .default: query = ""
        case .stale: query = "?stale"
        case .consistent: query = "?consistent"
        }
        return request(method: "GET", path: "/v1/health/service/\(name)\(query)", host: host)
    }

    // MARK: etcd v3 JSON gateway

    /// `{"key":"<b64>","value":"<b64>"}` to /v3/kv/put.
    public static func etcdPut(key: String, value: [UInt8], host: String) -> [UInt8] {
        let body = "{\"key\":\"\(base64(Array(key.utf8)))\",\"value\":\"\(base64(value))\"}"
        return request(method: "POST", path: "/v3/kv/put", host: host, body: Array(body.utf8), contentType: "application/json")
    }

    /// `{"key":"<b64>"}` to /v3/kv/range. etcd's default range is linearizable (a ReadIndex round,
    /// like Conclave's ?consistent); `serializable: true` reads the member's local state (like ?stale).
    /// Conclave's default mode (read on the leader without a round) has no etcd equivalent: it maps to
    /// etcd's default, linearizable range, which is the stricter of the two. The report says so.
    public static func etcdRange(key: String, consistency: Consistency, host: String) -> [UInt8] {
        var body = "{\"key\":\"\(base64(Array(key.utf8)))\""
        if consistency == .stale { body += ",\"serializable\":true" }
        body += "}"
        return request(method: "POST", path: "/v3/kv/range", host: host, body: Array(body.utf8), contentType: "application/json")
    }

    public static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    // MARK: Answers

    /// The ModifyIndex of the first entry of a Consul KV GET body, found by a byte search (a CAS
    /// read needs only this one number; decoding the JSON would cost more than the request).
    public static func modifyIndex(in body: [UInt8]) -> UInt64? {
        let needle = Array("\"ModifyIndex\":".utf8)
        guard body.count > needle.count else { return nil }
        var i = 0
        while i + needle.count <= body.count {
            if body[i] == needle[0] && body[i..<i + needle.count].elementsEqual(needle) {
                var j = i + needle.count
                while j < body.count, body[j] == 32 { j += 1 }
                var value: UInt64 = 0
                var digits = 0
                while j < body.count, (48...57).contains(body[j]), digits < 20 {
                    value = value &* 10 &+ UInt64(body[j] - 48)
                    j += 1
                    digits += 1
                }
                return digits > 0 ? value : nil
            }
            i += 1
        }
        return nil
    }

    /// Whether `needle` occurs in `haystack` (a plain scan; bodies here are small).
    public static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return needle.isEmpty }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if haystack[i..<i + needle.count].elementsEqual(needle) { return true }
        }
        return false
    }

    /// `value` with its first bytes replaced by `stamp` (the size stays; a longer stamp is cut).
    public static func stamped(_ value: [UInt8], _ stamp: String) -> [UInt8] {
        var out = value
        for (i, byte) in stamp.utf8.prefix(out.count).enumerated() { out[i] = byte }
        return out
    }

    /// The value bytes for a workload: `size` printable bytes, deterministic.
    public static func value(size: Int) -> [UInt8] {
        (0..<size).map { UInt8(ascii: "a") + UInt8($0 % 26) }
    }
}
