// Service and check definitions as the agent API and config files give them (Consul's
// ServiceDefinition / CheckDefinition), decoded from JSON with Consul's validation and rendered
// back in Consul's AgentService / HealthCheck shapes.
import Foundation

/// Consul's health states.
enum CheckStatus: String, Sendable, Equatable, CaseIterable {
    case passing, warning, critical
}

/// A service registered on this agent.
struct ServiceDefinition: Equatable, Sendable {
    var id: String
    var name: String
    var tags: [String] = []
    var address = ""
    var port = 0
    var meta: [String: String] = [:]
    var enableTagOverride = false
    var weightPassing = 1
    var weightWarning = 1
}

/// How a check decides its status.
enum CheckKind: Equatable, Sendable {
    case ttl(milliseconds: UInt64)
    case http(url: String, method: String, header: [String: [String]], body: String, tlsSkipVerify: Bool)
    case tcp(address: String)
    case script(args: [String])

    /// Consul's Type field in /v1/agent/checks.
    var typeName: String {
        switch self {
        case .ttl: return "ttl"
        case .http: return "http"
        case .tcp: return "tcp"
        case .script: return "script"
        }
    }
}

/// A check registered on this agent (standalone or belonging to a service).
struct CheckDefinition: Equatable, Sendable {
    var id: String
    var name: String
    var notes = ""
    var serviceID = ""
    var kind: CheckKind
    var intervalMilliseconds: UInt64 = 0
    var timeoutMilliseconds: UInt64 = 0
    /// Consul starts a check critical unless the definition says otherwise.
    var initialStatus: CheckStatus = .critical
    var initialOutput = ""
    var successBeforePassing = 0
    var failuresBeforeCritical = 0
    /// 0: never. Raised to Consul's 1 minute minimum when the check is added.
    var deregisterCriticalServiceAfterMilliseconds: UInt64 = 0
    /// HTTPS checks: the name sent in SNI and verified in the certificate instead of the URL's host.
    var tlsServerName = ""
}

/// A 400-class decoding or validation error, worded as Consul words it.
struct DefinitionError: Error, Equatable, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// Reads Consul JSON whether keys come in the API's PascalCase ("EnableTagOverride") or the
/// config file's snake_case ("enable_tag_override"): both normalise to "enabletagoverride".
struct DefinitionFields {
    private var values: [String: Any] = [:]

    init(_ object: [String: Any]) {
        for (key, value) in object {
            values[DefinitionFields.normalise(key)] = value
        }
    }

    static func normalise(_ key: String) -> String { key.lowercased().replacingOccurrences(of: "_", with: "") }

    func raw(_ keys: String...) -> Any? {
        for key in keys {
            if let value = values[key], !(value is NSNull) { return value }
        }
        return nil
    }

    func string(_ keys: String...) throws(DefinitionError) -> String? {
        guard let value = firstValue(keys) else { return nil }
        guard let s = value as? String else { throw DefinitionError("Request decode failed: \(keys[0]) must be a string") }
        return s
    }

    func int(_ keys: String...) throws(DefinitionError) -> Int? {
        guard let value = firstValue(keys) else { return nil }
        guard let n = value as? NSNumber, !isJSONBool(value), n.doubleValue == n.doubleValue.rounded(),
              abs(n.doubleValue) < 9e15 else {
            throw DefinitionError("Request decode failed: \(keys[0]) must be an integer")
        }
        return n.intValue
    }

    func bool(_ keys: String...) throws(DefinitionError) -> Bool? {
        guard let value = firstValue(keys) else { return nil }
        guard isJSONBool(value), let b = value as? Bool else { throw DefinitionError("Request decode failed: \(keys[0]) must be true or false") }
        return b
    }

    func strings(_ keys: String...) throws(DefinitionError) -> [String]? {
        guard let value = firstValue(keys) else { return nil }
        guard let list = value as? [Any] else { throw DefinitionError("Request decode failed: \(keys[0]) must be a list of strings") }
        var out: [String] = []
        for item in list {
            guard let s = item as? String else { throw DefinitionError("Request decode failed: \(keys[0]) must be a list of strings") }
            out.append(s)
        }
        return out
    }

    /// Go durations come as strings ("10s") or as integer nanoseconds, as Consul accepts both.
    func durationMilliseconds(_ keys: String...) throws(DefinitionError) -> UInt64? {
        guard let value = firstValue(keys) else { return nil }
        if let text = value as? String {
            if text.isEmpty { return 0 }
            guard let nanos = GoDuration.nanoseconds(text) else {
                throw DefinitionError("Request decode failed: time: invalid duration \"\(text)\"")
            }
            return nanos / 1_000_000
        }
        if let n = value as? NSNumber, !isJSONBool(value), n.doubleValue >= 0, n.doubleValue < 9e18 {
            return UInt64(n.doubleValue) / 1_000_000
        }
        throw DefinitionError("Request decode failed: \(keys[0]) must be a duration such as \"10s\"")
    }

    func object(_ keys: String...) throws(DefinitionError) -> [String: Any]? {
        guard let value = firstValue(keys) else { return nil }
        guard let object = value as? [String: Any] else { throw DefinitionError("Request decode failed: \(keys[0]) must be an object") }
        return object
    }

    private func firstValue(_ keys: [String]) -> Any? {
        for key in keys {
            if let value = values[DefinitionFields.normalise(key)], !(value is NSNull) { return value }
        }
        return nil
    }
}

/// JSON true/false. On Linux a decoded 0 or 1 also answers `is Bool`; only real booleans have
/// the "c" (char) ObjC type.
func isJSONBool(_ value: Any) -> Bool {
    guard let n = value as? NSNumber else { return false }
    return String(cString: n.objCType) == "c"
}

/// Consul's default HTTP/TCP check timeout.
let defaultCheckTimeoutMilliseconds: UInt64 = 10_000
/// Consul's default script check timeout.
let defaultScriptTimeoutMilliseconds: UInt64 = 30_000

enum LocalDefinitions {
    /// A whole `/v1/agent/service/register` body or config `service` entry: the service and
    /// the checks it carries (IDs defaulted as Consul does: "service:<id>", then ":1", ":2"…).
    static func service(from object: [String: Any]) throws(DefinitionError) -> (ServiceDefinition, [CheckDefinition]) {
        let fields = DefinitionFields(object)
        guard let name = try fields.string("Name"), !name.isEmpty else { throw DefinitionError("Missing service name") }
        let id = try fields.string("ID") ?? ""
        var service = ServiceDefinition(id: id.isEmpty ? name : id, name: name)
        service.tags = try fields.strings("Tags") ?? []
        service.address = try fields.string("Address") ?? ""
        service.port = try fields.int("Port") ?? 0
        guard (0...65535).contains(service.port) else { throw DefinitionError("Invalid service port: \(service.port)") }
        if let meta = try fields.object("Meta") {
            for (key, value) in meta {
                guard let s = value as? String else { throw DefinitionError("Request decode failed: Meta values must be strings") }
                guard !key.isEmpty, key.count <= 128 else { throw DefinitionError("Invalid Service Meta: Key is too long (limit: 128 characters)") }
                service.meta[key] = s
            }
        }
        service.enableTagOverride = try fields.bool("EnableTagOverride") ?? false
        if let weights = try fields.object("Weights") {
            let w = DefinitionFields(weights)
            service.weightPassing = try w.int("Passing") ?? 1
            service.weightWarning = try w.int("Warning") ?? 1
            guard service.weightPassing >= 1 else { throw DefinitionError("Passing must be greater than 0") }
            guard service.weightWarning >= 0 else { throw DefinitionError("Warning must be greater or equal than 0") }
        }
        var checkObjects: [[String: Any]] = []
        if let single = try fields.object("Check"), !single.isEmpty { checkObjects.append(single) }
        if let many = fields.raw("checks") {
            guard let list = many as? [Any] else { throw DefinitionError("Request decode failed: Checks must be a list of objects") }
            for item in list {
                guard let object = item as? [String: Any] else { throw DefinitionError("Request decode failed: Checks must be a list of objects") }
                checkObjects.append(object)
            }
        }
        var checks: [CheckDefinition] = []
        for (index, object) in checkObjects.enumerated() {
            var check: CheckDefinition
            do { check = try self.check(from: object, requireName: false) } catch {
                throw DefinitionError("\(error)".hasPrefix("Request decode failed") ? "\(error)" : "Invalid check: \(error)")
            }
            if check.id.isEmpty {
                check.id = "service:\(service.id)" + (checkObjects.count > 1 ? ":\(index + 1)" : "")
            }
            if check.name.isEmpty { check.name = "Service '\(service.name)' check" }
            check.serviceID = service.id
            checks.append(check)
        }
        return (service, checks)
    }

    /// A `/v1/agent/check/register` body or a check inside a service. `requireName`: standalone
    /// checks need a Name (and take it as their ID when none is given).
    static func check(from object: [String: Any], requireName: Bool) throws(DefinitionError) -> CheckDefinition {
        let fields = DefinitionFields(object)
        let name = try fields.string("Name") ?? ""
        if requireName && name.isEmpty { throw DefinitionError("Missing check name") }
        let id = try fields.string("CheckID", "ID") ?? ""
        let ttl = try fields.durationMilliseconds("TTL") ?? 0
        let interval = try fields.durationMilliseconds("Interval") ?? 0
        let timeout = try fields.durationMilliseconds("Timeout") ?? 0
        let http = try fields.string("HTTP") ?? ""
        let tcp = try fields.string("TCP") ?? ""
        let args = try fields.strings("Args", "ScriptArgs") ?? []
        if try fields.string("Script") != nil {
            throw DefinitionError("Request decode failed: Script is no longer supported; use Args")
        }
        let kind: CheckKind
        let intervalCheck = !http.isEmpty || !tcp.isEmpty || !args.isEmpty
        // Consul's CheckType.Validate, in its order and words.
        if interval > 0 && ttl > 0 { throw DefinitionError("Interval and TTL cannot both be specified") }
        if intervalCheck && interval == 0 {
            throw DefinitionError("Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks")
        }
        if !intervalCheck && ttl == 0 { throw DefinitionError("TTL must be > 0 for TTL checks") }
        if !http.isEmpty {
            var header: [String: [String]] = [:]
            if let h = try fields.object("Header") {
                for (key, value) in h {
                    guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else {
                        throw DefinitionError("Request decode failed: Header values must be lists of strings")
                    }
                    header[key] = list.compactMap { $0 as? String }
                }
            }
            let method = try fields.string("Method") ?? ""
            kind = .http(url: http, method: method.isEmpty ? "GET" : method.uppercased(), header: header,
                         body: try fields.string("Body") ?? "", tlsSkipVerify: try fields.bool("TLSSkipVerify") ?? false)
        } else if !tcp.isEmpty {
            kind = .tcp(address: tcp)
        } else if !args.isEmpty {
            kind = .script(args: args)
        } else {
            kind = .ttl(milliseconds: ttl)
        }
        var check = CheckDefinition(id: id.isEmpty ? name : id, name: name, kind: kind)
        check.notes = try fields.string("Notes") ?? ""
        check.serviceID = try fields.string("ServiceID") ?? ""
        check.intervalMilliseconds = interval
        switch kind {
        case .script: check.timeoutMilliseconds = timeout > 0 ? timeout : defaultScriptTimeoutMilliseconds
        case .http, .tcp: check.timeoutMilliseconds = timeout > 0 ? timeout : defaultCheckTimeoutMilliseconds
        case .ttl: check.timeoutMilliseconds = 0
        }
        if let status = try fields.string("Status"), !status.isEmpty {
            guard let parsed = CheckStatus(rawValue: status) else { throw DefinitionError("Bad check status: \(status)") }
            check.initialStatus = parsed
        }
        check.initialOutput = try fields.string("Output") ?? ""
        check.successBeforePassing = try fields.int("SuccessBeforePassing") ?? 0
        check.failuresBeforeCritical = try fields.int("FailuresBeforeCritical") ?? 0
        guard check.successBeforePassing >= 0, check.failuresBeforeCritical >= 0 else {
            throw DefinitionError("SuccessBeforePassing and FailuresBeforeCritical cannot be negative")
        }
        check.deregisterCriticalServiceAfterMilliseconds = try fields.durationMilliseconds("DeregisterCriticalServiceAfter") ?? 0
        check.tlsServerName = try fields.string("TLSServerName") ?? ""
        return check
    }

    // MARK: Rendering (Consul's shapes)

    /// AgentService, as in /v1/agent/services and /v1/agent/service/<id>.
    static func agentService(_ s: ServiceDefinition, datacenter: String) -> [String: Any] {
        [
            "Kind": "",
            "ID": s.id,
            "Service": s.name,
            "Tags": s.tags,
            "Meta": s.meta,
            "Port": s.port,
            "Address": s.address,
            "TaggedAddresses": [String: Any](),
            "Weights": ["Passing": s.weightPassing, "Warning": s.weightWarning],
            "EnableTagOverride": s.enableTagOverride,
            "Datacenter": datacenter,
        ]
    }

    /// The definition as the register API takes it; persisted files and anti-entropy use it.
    static func registerJSON(_ s: ServiceDefinition) -> [String: Any] {
        [
            "ID": s.id, "Name": s.name, "Tags": s.tags, "Address": s.address, "Port": s.port,
            "Meta": s.meta, "EnableTagOverride": s.enableTagOverride,
            "Weights": ["Passing": s.weightPassing, "Warning": s.weightWarning],
        ]
    }

    static func registerJSON(_ c: CheckDefinition) -> [String: Any] {
        var out: [String: Any] = [
            "CheckID": c.id, "Name": c.name, "Notes": c.notes, "ServiceID": c.serviceID,
            "Status": c.initialStatus.rawValue,
            "SuccessBeforePassing": c.successBeforePassing, "FailuresBeforeCritical": c.failuresBeforeCritical,
        ]
        if !c.initialOutput.isEmpty { out["Output"] = c.initialOutput }
        if c.intervalMilliseconds > 0 { out["Interval"] = "\(c.intervalMilliseconds)ms" }
        if c.timeoutMilliseconds > 0 { out["Timeout"] = "\(c.timeoutMilliseconds)ms" }
        if c.deregisterCriticalServiceAfterMilliseconds > 0 {
            out["DeregisterCriticalServiceAfter"] = "\(c.deregisterCriticalServiceAfterMilliseconds)ms"
        }
        switch c.kind {
        case .ttl(let ms): out["TTL"] = "\(ms)ms"
        case .http(let url, let method, let header, let body, let skip):
            out["HTTP"] = url; out["Method"] = method; out["Header"] = header; out["Body"] = body; out["TLSSkipVerify"] = skip
        case .tcp(let address): out["TCP"] = address
        case .script(let args): out["Args"] = args
        }
        if !c.tlsServerName.isEmpty { out["TLSServerName"] = c.tlsServerName }
        return out
    }

    /// Consul prints durations in Go's format ("10s", "1m0s") in check definitions.
    static func goDuration(milliseconds ms: UInt64) -> String {
        if ms == 0 { return "0s" }
        if ms < 1000 { return "\(ms)ms" }
        let hours = ms / 3_600_000, minutes = (ms / 60_000) % 60, seconds = Double(ms % 60_000) / 1000
        let secondsText = seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
        if hours > 0 { return "\(hours)h\(minutes)m\(secondsText)s" }
        if minutes > 0 { return "\(minutes)m\(secondsText)s" }
        return "\(secondsText)s"
    }
}
