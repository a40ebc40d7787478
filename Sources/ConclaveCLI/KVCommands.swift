// `conclave kv get|put|delete`: Consul's kv subcommands over the HTTP API, same flags and
// the same success and error lines.
import Foundation
import HTTP

enum KVCommands {
    static func run(_ arguments: [String]) -> Int32 {
        guard let sub = arguments.first else {
            printError("Usage: conclave kv <subcommand> [options] [args]\n\nSubcommands: delete, export, get, import, put")
            return 1
        }
        let rest = Array(arguments.dropFirst())
        do {
            switch sub {
            case "get": return try get(rest)
            case "put": return try put(rest)
            case "delete": return try delete(rest)
            case "export": return try export(rest)
            case "import": return try importEntries(rest)
            default:
                printError("Unknown kv subcommand \"\(sub)\": use get, put, delete, export or import")
                return 1
            }
        } catch {
            printError("Error! \(error)")
            return 1
        }
    }

    private static func get(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "kv get")
        APIFlags.define(on: flags)
        flags.bool("base64", "Base64-encode the value.")
        flags.bool("detailed", "Provide additional metadata about the key in addition to the value.")
        flags.bool("keys", "List keys which start with the given prefix, but not their values.")
        flags.bool("recurse", "Recursively look at all keys prefixed with the given path.")
        flags.string("separator", "String to use as a separator between keys (with -keys). Defaults to \"/\"; set to \"\" for none.")
        let args = try flags.parse(arguments)
        guard args.count <= 1 else { throw FlagError(description: "Too many arguments (expected 1, got \(args.count))") }
        let key = args.first ?? ""
        var client = try APIFlags.client(flags)
        var query = APIFlags.queryItems(flags)

        if flags.flag("keys") {
            query.append("keys")
            let separator = flags.string("separator") ?? "/"
            if !separator.isEmpty { query.append("separator=" + URLText.queryEscape(separator)) }
            let response = try client.request(method: "GET", path: URLText.kvPath(key, query: query))
            if response.status == 404 { return 0 }
            try APIFlags.check(response)
            for item in try JSONSerialization.jsonObject(with: Data(response.body)) as? [String] ?? [] { print(item) }
            return 0
        }
        if flags.flag("recurse") {
            query.append("recurse")
            let response = try client.request(method: "GET", path: URLText.kvPath(key, query: query))
            if response.status == 404 { return 0 }
            try APIFlags.check(response)
            let entries = try decodeEntries(response.body)
            for (i, entry) in entries.enumerated() {
                if flags.flag("detailed") {
                    if i > 0 { print("") }
                    printDetailed(entry, base64: flags.flag("base64"))
                } else {
                    print("\(entry.key):\(render(entry.value, base64: flags.flag("base64")))")
                }
            }
            return 0
        }
        guard !key.isEmpty else { throw FlagError(description: "Missing KEY argument") }
        let response = try client.request(method: "GET", path: URLText.kvPath(key, query: query))
        if response.status == 404 {
            printError("Error! No key exists at: \(key)")
            return 1
        }
        try APIFlags.check(response)
        guard let entry = try decodeEntries(response.body).first else {
            printError("Error! No key exists at: \(key)")
            return 1
        }
        if flags.flag("detailed") {
            printDetailed(entry, base64: flags.flag("base64"))
        } else {
            print(render(entry.value, base64: flags.flag("base64")))
        }
        return 0
    }

    private static func put(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "kv put")
        APIFlags.define(on: flags)
        flags.bool("base64", "Treat the data as base64-encoded.")
        flags.bool("cas", "Perform a Check-And-Set operation (needs -modify-index).")
        flags.string("modify-index", "Unsigned integer: the ModifyIndex the key must have for -cas (0 = only if absent).", placeholder: "uint")
        flags.string("flags", "Unsigned integer value to assign to this key-value pair.", placeholder: "uint")
        let args = try flags.parse(arguments)
        guard let key = args.first, !key.isEmpty else { throw FlagError(description: "Missing KEY argument") }
        guard args.count <= 2 else { throw FlagError(description: "Too many arguments (expected 1 or 2, got \(args.count))") }
        var value = try readData(args.count == 2 ? args[1] : nil)
        if flags.flag("base64") {
            guard let decoded = Base64.decode(String(decoding: value, as: UTF8.self)) else {
                throw FlagError(description: "Failed to base64 decode data")
            }
            value = decoded
        }
        var query = APIFlags.queryItems(flags)
        if let text = flags.string("flags") {
            guard UInt64(text) != nil else { throw FlagError(description: "-flags must be an unsigned integer, got \"\(text)\"") }
            query.append("flags=\(text)")
        }
        if flags.flag("cas") {
            guard let text = flags.string("modify-index"), UInt64(text) != nil else {
                throw FlagError(description: "Must specify -modify-index with -cas!")
            }
            query.append("cas=\(text)")
        }
        var client = try APIFlags.client(flags)
        let response = try client.request(method: "PUT", path: URLText.kvPath(key, query: query), body: value)
        try APIFlags.check(response)
        if String(decoding: response.body, as: UTF8.self) == "true" {
            print("Success! Data written to: \(key)")
            return 0
        }
        printError("Error! Did not write to \(key): CAS failed")
        return 1
    }

    private static func delete(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "kv delete")
        APIFlags.define(on: flags)
        flags.bool("cas", "Perform a Check-And-Set operation (needs -modify-index).")
        flags.string("modify-index", "Unsigned integer: the ModifyIndex the key must have for -cas.", placeholder: "uint")
        flags.bool("recurse", "Recursively delete all keys with the path.")
        let args = try flags.parse(arguments)
        guard args.count <= 1 else { throw FlagError(description: "Too many arguments (expected 1, got \(args.count))") }
        let key = args.first ?? ""
        if key.isEmpty && !flags.flag("recurse") { throw FlagError(description: "Missing KEY argument") }
        if flags.flag("cas") && flags.flag("recurse") { throw FlagError(description: "Cannot specify both -cas and -recurse!") }
        var query = APIFlags.queryItems(flags)
        if flags.flag("recurse") { query.append("recurse") }
        if flags.flag("cas") {
            guard let text = flags.string("modify-index"), UInt64(text) != nil else {
                throw FlagError(description: "Must specify -modify-index with -cas!")
            }
            query.append("cas=\(text)")
        }
        var client = try APIFlags.client(flags)
        let response = try client.request(method: "DELETE", path: URLText.kvPath(key, query: query))
        try APIFlags.check(response)
        if String(decoding: response.body, as: UTF8.self) != "true" {
            printError("Error! Did not delete key \(key): CAS failed")
            return 1
        }
        print(flags.flag("recurse") ? "Success! Deleted keys with prefix: \(key)" : "Success! Deleted key: \(key)")
        return 0
    }

    /// `kv export [PREFIX]`: Consul's export format, a JSON array of {"key", "flags",
    /// "value" (base64)} indented with tabs, for `kv import` into any cluster.
    private static func export(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "kv export")
        APIFlags.define(on: flags)
        let args = try flags.parse(arguments)
        guard args.count <= 1 else { throw FlagError(description: "Too many arguments (expected 0 or 1, got \(args.count))") }
        var client = try APIFlags.client(flags)
        let response = try client.request(method: "GET", path: URLText.kvPath(args.first ?? "", query: APIFlags.queryItems(flags) + ["recurse"]))
        var entries: [Entry] = []
        if response.status != 404 {
            try APIFlags.check(response)
            entries = try decodeEntries(response.body)
        }
        var lines = ["["]
        for (i, entry) in entries.enumerated() {
            var key: [UInt8] = []
            JSONText.appendQuoted(entry.key, to: &key)
            lines.append("\t{")
            lines.append("\t\t\"key\": \(String(decoding: key, as: UTF8.self)),")
            lines.append("\t\t\"flags\": \(entry.flags),")
            lines.append("\t\t\"value\": \"\(Base64.encode(entry.value))\"")
            lines.append(i == entries.count - 1 ? "\t}" : "\t},")
        }
        lines.append("]")
        print(lines.joined(separator: "\n"))
        return 0
    }

    /// `kv import [-prefix=P] [DATA|-|@file]`: writes every entry of an export, in order;
    /// the first failure stops the import with the key it failed on.
    private static func importEntries(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "kv import")
        APIFlags.define(on: flags)
        flags.string("prefix", "Key prefix for imported data. The default is the root.")
        let args = try flags.parse(arguments)
        guard args.count <= 1 else { throw FlagError(description: "Too many arguments (expected 0 or 1, got \(args.count))") }
        let data = try readData(args.first ?? "-")
        guard let list = try? JSONSerialization.jsonObject(with: Data(data)) as? [[String: Any]] else {
            throw FlagError(description: "Cannot unmarshal data: expected a JSON array of {\"key\", \"flags\", \"value\"} objects")
        }
        let prefix = flags.string("prefix") ?? ""
        var client = try APIFlags.client(flags)
        for item in list {
            guard let key = item["key"] as? String else { throw FlagError(description: "Cannot import an entry without a \"key\"") }
            let flagsValue = (item["flags"] as? NSNumber)?.uint64Value ?? 0
            guard let value = Base64.decode((item["value"] as? String) ?? "") else {
                throw FlagError(description: "Cannot base 64 decode value for \(key)")
            }
            let target = prefix + key
            let response = try client.request(method: "PUT", path: URLText.kvPath(target, query: APIFlags.queryItems(flags) + ["flags=\(flagsValue)"]), body: value)
            do { try APIFlags.check(response) } catch { throw FlagError(description: "Error! Failed writing data for key \(target): \(error)") }
            print("Imported: \(target)")
        }
        return 0
    }

    struct Entry {
        var key: String
        var value: [UInt8]
        var flags: UInt64
        var createIndex: UInt64
        var modifyIndex: UInt64
        var lockIndex: UInt64
        var session: String?
    }

    static func decodeEntries(_ body: [UInt8]) throws -> [Entry] {
        guard let list = try JSONSerialization.jsonObject(with: Data(body)) as? [[String: Any]] else {
            throw FlagError(description: "unexpected response from the agent")
        }
        return list.map { item in
            func number(_ key: String) -> UInt64 { (item[key] as? NSNumber)?.uint64Value ?? 0 }
            let value = (item["Value"] as? String).flatMap { Base64.decode($0) } ?? []
            return Entry(key: item["Key"] as? String ?? "", value: value, flags: number("Flags"),
                         createIndex: number("CreateIndex"), modifyIndex: number("ModifyIndex"),
                         lockIndex: number("LockIndex"), session: item["Session"] as? String)
        }
    }

    static func render(_ value: [UInt8], base64: Bool) -> String {
        base64 ? Base64.encode(value) : String(decoding: value, as: UTF8.self)
    }

    static func printDetailed(_ entry: Entry, base64: Bool) {
        let rows: [(String, String)] = [
            ("CreateIndex", String(entry.createIndex)), ("Flags", String(entry.flags)), ("Key", entry.key),
            ("LockIndex", String(entry.lockIndex)), ("ModifyIndex", String(entry.modifyIndex)),
            ("Session", entry.session ?? "-"), ("Value", render(entry.value, base64: base64)),
        ]
        for (name, value) in rows { print(name.padding(toLength: 17, withPad: " ", startingAt: 0) + value) }
    }

    /// Consul's data argument: literal text, `-` for stdin, `@path` for a file's contents.
    static func readData(_ argument: String?) throws -> [UInt8] {
        guard let argument else { return [] }
        if argument == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
        if argument.hasPrefix("@") {
            let path = String(argument.dropFirst())
            guard let data = FileManager.default.contents(atPath: path) else {
                throw FlagError(description: "Failed to read file: \(path)")
            }
            return Array(data)
        }
        return Array(argument.utf8)
    }
}

enum LeaveCommand {
    static func run(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "leave")
        APIFlags.define(on: flags)
        do {
            _ = try flags.parse(arguments)
            var client = try APIFlags.client(flags)
            let response = try client.request(method: "PUT", path: "/v1/agent/leave")
            try APIFlags.check(response)
            print("Graceful leave complete")
            return 0
        } catch {
            printError("Error leaving agent: \(error)")
            return 1
        }
    }
}

/// The flags every API command shares, as in Consul.
enum APIFlags {
    static func define(on flags: FlagSet) {
        flags.string("http-addr", "The address of the agent's HTTP API (also CONSUL_HTTP_ADDR). Default 127.0.0.1:8500.", placeholder: "address")
        flags.string("datacenter", "Name of the datacenter to query. Defaults to the agent's.")
        flags.string("token", "ACL token (accepted for compatibility; ACLs are not enforced).")
        flags.bool("stale", "Permit any server to answer the read.")
    }

    static func client(_ flags: FlagSet, maxResponseBodyBytes: Int = HTTPClient.defaultMaxResponseBodyBytes) throws -> HTTPClient {
        let address = flags.string("http-addr") ?? ProcessInfo.processInfo.environment["CONSUL_HTTP_ADDR"] ?? "127.0.0.1:8500"
        guard let (host, port) = HTTPClient.parseAddress(address) else {
            throw FlagError(description: "invalid HTTP address \"\(address)\"")
        }
        return HTTPClient(host: host, port: port, timeoutSeconds: 660, maxResponseBodyBytes: maxResponseBodyBytes)
    }

    static func queryItems(_ flags: FlagSet) -> [String] {
        var items: [String] = []
        if let dc = flags.string("datacenter"), !dc.isEmpty { items.append("dc=" + URLText.queryEscape(dc)) }
        if flags.flag("stale") { items.append("stale") }
        return items
    }

    static func check(_ response: HTTPClientResponse) throws {
        guard (200..<300).contains(response.status) else {
            let message = String(decoding: response.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw FlagError(description: "Unexpected response code: \(response.status) (\(message))")
        }
    }
}

enum URLText {
    static func kvPath(_ key: String, query: [String]) -> String {
        "/v1/kv/" + pathEscape(key) + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    /// Escapes a key for a URL path, keeping `/` (as Consul's client does).
    static func pathEscape(_ text: String) -> String { escape(text, keep: "/-._~") }
    static func queryEscape(_ text: String) -> String { escape(text, keep: "-._~") }

    private static func escape(_ text: String, keep: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80, c.isLetter || c.isNumber || keep.utf8.contains(byte) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
