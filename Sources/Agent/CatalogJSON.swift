// JSON in and out of the catalog and health endpoints, with Consul's field names
// (https://developer.hashicorp.com/consul/api-docs/catalog, …/health). Request bodies are
// matched case-insensitively like Go's encoding/json; empty lists render as [], empty maps
// as {}, a service's TaggedAddresses is left out when empty (omitempty in Consul).
import Foundation
import HTTP
import StateStore

/// A request body that is not what the endpoint expects: 400 with the message.
struct CatalogRequestError: Error {
    var message: String
}

/// A decoded JSON object with Go-style case-insensitive field lookup.
struct JSONFields {
    private let object: [String: Any]
    private let lowercased: [String: String]

    init(_ object: [String: Any]) {
        self.object = object
        var lowercased: [String: String] = [:]
        for key in object.keys { lowercased[key.lowercased()] = key }
        self.lowercased = lowercased
    }

    static func parse(_ body: [UInt8]) throws(CatalogRequestError) -> JSONFields {
        guard !body.isEmpty else { throw CatalogRequestError(message: "Request decode failed: EOF") }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])
        } catch {
            throw CatalogRequestError(message: "Request decode failed: invalid JSON")
        }
        guard let object = parsed as? [String: Any] else {
            throw CatalogRequestError(message: "Request decode failed: the body must be a JSON object")
        }
        return JSONFields(object)
    }

    private func value(_ name: String) -> Any? {
        guard let key = object[name] != nil ? name : lowercased[name.lowercased()] else { return nil }
        let value = object[key]
        return value is NSNull ? nil : value
    }

    func has(_ name: String) -> Bool { value(name) != nil }

    /// The object's keys (for maps keyed by user names, like a service's TaggedAddresses).
    var keys: [String] { Array(object.keys) }

    func string(_ name: String) throws(CatalogRequestError) -> String {
        guard let raw = value(name) else { return "" }
        guard let text = raw as? String else { throw wrongType(name, "a string") }
        return text
    }

    func int(_ name: String) throws(CatalogRequestError) -> Int {
        guard let raw = value(name) else { return 0 }
        guard let number = raw as? NSNumber, number.doubleValue == Double(number.intValue) else {
            throw wrongType(name, "an integer")
        }
        return number.intValue
    }

    func bool(_ name: String) throws(CatalogRequestError) -> Bool {
        guard let raw = value(name) else { return false }
        guard let flag = raw as? Bool else { throw wrongType(name, "a boolean") }
        return flag
    }

    func strings(_ name: String) throws(CatalogRequestError) -> [String] {
        guard let raw = value(name) else { return [] }
        guard let list = raw as? [Any] else { throw wrongType(name, "a list of strings") }
        var strings: [String] = []
        for item in list {
            guard let text = item as? String else { throw wrongType(name, "a list of strings") }
            strings.append(text)
        }
        return strings
    }

    func stringMap(_ name: String) throws(CatalogRequestError) -> [String: String] {
        guard let raw = value(name) else { return [:] }
        guard let map = raw as? [String: Any] else { throw wrongType(name, "an object of strings") }
        var result: [String: String] = [:]
        for (key, item) in map {
            guard let text = item as? String else { throw wrongType(name, "an object of strings") }
            result[key] = text
        }
        return result
    }

    func object(_ name: String) throws(CatalogRequestError) -> JSONFields? {
        guard let raw = value(name) else { return nil }
        guard let map = raw as? [String: Any] else { throw wrongType(name, "an object") }
        return JSONFields(map)
    }

    func objects(_ name: String) throws(CatalogRequestError) -> [JSONFields] {
        guard let raw = value(name) else { return [] }
        guard let list = raw as? [Any] else { throw wrongType(name, "a list of objects") }
        var objects: [JSONFields] = []
        for item in list {
            guard let map = item as? [String: Any] else { throw wrongType(name, "a list of objects") }
            objects.append(JSONFields(map))
        }
        return objects
    }

    /// The raw object under `name` re-serialised (a check's Definition, kept as JSON text).
    func jsonText(_ name: String) throws(CatalogRequestError) -> String {
        guard let raw = value(name) else { return "" }
        guard raw is [String: Any],
              let data = try? JSONSerialization.data(withJSONObject: raw, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            throw wrongType(name, "an object")
        }
        return String(decoding: data, as: UTF8.self)
    }

    private func wrongType(_ name: String, _ expected: String) -> CatalogRequestError {
        CatalogRequestError(message: "Request decode failed: \(name) must be \(expected)")
    }
}

/// Appends JSON straight to bytes (no Foundation objects on the read path: a health answer
/// for hundreds of instances is rendered in one pass). Fields follow Consul's struct order.
struct JSONWriter {
    var bytes: [UInt8] = []

    mutating func raw(_ text: String) { bytes.append(contentsOf: text.utf8) }
    mutating func string(_ text: String) { JSONText.appendQuoted(text, to: &bytes) }
    mutating func number<T: BinaryInteger>(_ value: T) { bytes.append(contentsOf: String(value).utf8) }
    mutating func bool(_ value: Bool) { raw(value ? "true" : "false") }

    /// `,"Name":` (or `"Name":` for the first field of an object).
    mutating func key(_ name: String, first: Bool = false) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        string(name)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func strings(_ list: [String]) {
        bytes.append(UInt8(ascii: "["))
        for (i, item) in list.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(item)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    mutating func stringMap(_ map: [String: String]) {
        bytes.append(UInt8(ascii: "{"))
        for (i, key) in map.keys.sorted().enumerated() {
            self.key(key, first: i == 0)
            string(map[key]!)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    mutating func openObject() { bytes.append(UInt8(ascii: "{")) }

    mutating func closeObject() { bytes.append(UInt8(ascii: "}")) }

    mutating func array<T>(_ items: [T], _ body: (inout JSONWriter, T) -> Void) {
        bytes.append(UInt8(ascii: "["))
        for (i, item) in items.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            body(&self, item)
        }
        bytes.append(UInt8(ascii: "]"))
    }
}

enum CatalogJSON {
    static func node(_ node: CatalogNode, datacenter: String, _ out: inout JSONWriter) {
        out.openObject(); out.key("ID", first: true); out.string(node.id)
        out.key("Node"); out.string(node.name)
        out.key("Address"); out.string(node.address)
        out.key("Datacenter"); out.string(node.datacenter.isEmpty ? datacenter : node.datacenter)
        out.key("TaggedAddresses"); out.stringMap(node.taggedAddresses)
        out.key("Meta"); out.stringMap(node.meta)
        out.key("CreateIndex"); out.number(node.createIndex)
        out.key("ModifyIndex"); out.number(node.modifyIndex)
        out.closeObject()
    }

    static func weights(_ weights: ServiceWeights, _ out: inout JSONWriter) {
        out.raw(#"{"Passing":"#); out.number(weights.passing)
        out.raw(#","Warning":"#); out.number(weights.warning)
        out.raw("}")
    }

    static func taggedAddresses(_ map: [String: ServiceAddress], _ out: inout JSONWriter) {
        out.raw("{")
        for (i, key) in map.keys.sorted().enumerated() {
            out.key(key, first: i == 0)
            out.raw(#"{"Address":"#); out.string(map[key]!.address)
            out.raw(#","Port":"#); out.number(map[key]!.port)
            out.raw("}")
        }
        out.raw("}")
    }

    /// Consul's AgentService shape (catalog/node Services, health/service Service).
    static func service(_ service: CatalogService, datacenter: String, _ out: inout JSONWriter) {
        out.openObject(); out.key("ID", first: true); out.string(service.id)
        out.key("Service"); out.string(service.service)
        out.key("Tags"); out.strings(service.tags)
        out.key("Address"); out.string(service.address)
        if !service.taggedAddresses.isEmpty { out.key("TaggedAddresses"); taggedAddresses(service.taggedAddresses, &out) }
        out.key("Meta"); out.stringMap(service.meta)
        out.key("Port"); out.number(service.port)
        out.key("Weights"); weights(service.weights, &out)
        out.key("EnableTagOverride"); out.bool(service.enableTagOverride)
        out.key("Datacenter"); out.string(datacenter)
        out.key("CreateIndex"); out.number(service.createIndex)
        out.key("ModifyIndex"); out.number(service.modifyIndex)
        out.closeObject()
    }

    /// Consul's ServiceNode shape (catalog/service/<name>): node fields plus Service* fields;
    /// the indexes are the service's.
    static func serviceNode(_ node: CatalogNode, _ service: CatalogService, datacenter: String, _ out: inout JSONWriter) {
        out.openObject(); out.key("ID", first: true); out.string(node.id)
        out.key("Node"); out.string(node.name)
        out.key("Address"); out.string(node.address)
        out.key("Datacenter"); out.string(node.datacenter.isEmpty ? datacenter : node.datacenter)
        out.key("TaggedAddresses"); out.stringMap(node.taggedAddresses)
        out.key("NodeMeta"); out.stringMap(node.meta)
        out.key("ServiceKind"); out.string("")
        out.key("ServiceID"); out.string(service.id)
        out.key("ServiceName"); out.string(service.service)
        out.key("ServiceTags"); out.strings(service.tags)
        out.key("ServiceAddress"); out.string(service.address)
        if !service.taggedAddresses.isEmpty {
            out.key("ServiceTaggedAddresses"); taggedAddresses(service.taggedAddresses, &out)
        }
        out.key("ServiceWeights"); weights(service.weights, &out)
        out.key("ServiceMeta"); out.stringMap(service.meta)
        out.key("ServicePort"); out.number(service.port)
        out.key("ServiceEnableTagOverride"); out.bool(service.enableTagOverride)
        out.key("CreateIndex"); out.number(service.createIndex)
        out.key("ModifyIndex"); out.number(service.modifyIndex)
        out.closeObject()
    }

    /// Consul's HealthCheck shape. Definition is the JSON object the check was registered
    /// with; text that does not parse as an object (it could come from any log entry) shows {}.
    static func check(_ check: CatalogCheck, _ out: inout JSONWriter) {
        out.openObject(); out.key("Node", first: true); out.string(check.node)
        out.key("CheckID"); out.string(check.checkID)
        out.key("Name"); out.string(check.name)
        out.key("Status"); out.string(check.status)
        out.key("Notes"); out.string(check.notes)
        out.key("Output"); out.string(check.output)
        out.key("ServiceID"); out.string(check.serviceID)
        out.key("ServiceName"); out.string(check.serviceName)
        out.key("ServiceTags"); out.strings(check.serviceTags)
        out.key("Type"); out.string(check.type)
        out.key("Definition")
        if !check.definition.isEmpty,
           (try? JSONSerialization.jsonObject(with: Data(check.definition.utf8))) is [String: Any] {
            out.raw(check.definition)
        } else {
            out.raw("{}")
        }
        out.key("CreateIndex"); out.number(check.createIndex)
        out.key("ModifyIndex"); out.number(check.modifyIndex)
        out.closeObject()
    }

    /// /v1/health/service entries: {"Node":…,"Service":…,"Checks":[…]}.
    static func healthEntry(_ entry: CatalogHealthEntry, datacenter: String, _ out: inout JSONWriter) {
        out.raw(#"{"Node":"#)
        node(entry.node, datacenter: datacenter, &out)
        out.raw(#","Service":"#)
        service(entry.service, datacenter: datacenter, &out)
        out.raw(#","Checks":"#)
        out.array(entry.checks) { out, item in check(item, &out) }
        out.raw("}")
    }

    // MARK: Request bodies

    /// PUT /v1/catalog/register's body (Consul's RegisterRequest) as a command, with Consul's
    /// defaults and checks (agent/consul/catalog_endpoint.go): node and address required
    /// (unless SkipNodeUpdate), service ID defaults to its name, check ID to its name, a
    /// check's node to the registration's.
    static func registration(_ body: JSONFields, defaultDatacenter: String) throws(CatalogRequestError) -> CatalogRegistration {
        let nodeName = try body.string("Node")
        guard !nodeName.isEmpty else { throw CatalogRequestError(message: "Must provide node") }
        let skipNodeUpdate = try body.bool("SkipNodeUpdate")
        let address = try body.string("Address")
        guard !address.isEmpty || skipNodeUpdate else {
            throw CatalogRequestError(message: "Must provide address if SkipNodeUpdate is not set")
        }
        let id = try body.string("ID")
        if !id.isEmpty && !isUUID(id) {
            throw CatalogRequestError(message: "Bad node ID: \"\(id)\" is not a 36-character UUID")
        }
        var datacenter = try body.string("Datacenter")
        if datacenter.isEmpty { datacenter = defaultDatacenter }
        try checkName(nodeName, "node name")
        let node = CatalogNode(name: nodeName, id: id.lowercased(), address: address, datacenter: datacenter,
                               taggedAddresses: try body.stringMap("TaggedAddresses"), meta: try body.stringMap("NodeMeta"))

        var service: CatalogService?
        if let fields = try body.object("Service") {
            let name = try fields.string("Service")
            var serviceID = try fields.string("ID")
            if serviceID.isEmpty { serviceID = name }
            guard !name.isEmpty else { throw CatalogRequestError(message: "Must provide service name with ID") }
            try checkName(name, "service name")
            try checkName(serviceID, "service ID")
            let port = try fields.int("Port")
            guard (0...65535).contains(port) else { throw CatalogRequestError(message: "Invalid service port \(port)") }
            var weights = ServiceWeights()
            if let given = try fields.object("Weights") {
                weights = ServiceWeights(passing: try given.int("Passing"), warning: try given.int("Warning"))
                // Consul's default when Weights is given without Passing.
                if weights.passing <= 0 { weights.passing = 1 }
            }
            var tagged: [String: ServiceAddress] = [:]
            if let map = try fields.object("TaggedAddresses") {
                for key in map.keys {
                    guard let entry = try map.object(key) else { continue }
                    tagged[key] = ServiceAddress(address: try entry.string("Address"), port: try entry.int("Port"))
                }
            }
            service = CatalogService(node: nodeName, id: serviceID, service: name, tags: try fields.strings("Tags"),
                                     address: try fields.string("Address"), taggedAddresses: tagged,
                                     meta: try fields.stringMap("Meta"), port: port, weights: weights,
                                     enableTagOverride: try fields.bool("EnableTagOverride"))
        }

        var checkBodies = try body.objects("Checks")
        if let single = try body.object("Check") { checkBodies.insert(single, at: 0) }
        var checks: [CatalogCheck] = []
        for fields in checkBodies {
            var checkNode = try fields.string("Node")
            if checkNode.isEmpty { checkNode = nodeName }
            guard CatalogLimits.folded(checkNode) == CatalogLimits.folded(nodeName) else {
                throw CatalogRequestError(message: "Node name for check doesn't match node name for registration")
            }
            let name = try fields.string("Name")
            var checkID = try fields.string("CheckID")
            if checkID.isEmpty { checkID = name }
            guard !checkID.isEmpty else { throw CatalogRequestError(message: "Must provide a check ID or name") }
            try checkName(checkID, "check ID")
            let status = try fields.string("Status")
            guard status.isEmpty || CatalogCheckStatus.all.contains(status) else {
                throw CatalogRequestError(message: "Invalid check status: \"\(status)\"")
            }
            checks.append(CatalogCheck(node: nodeName, checkID: checkID, name: name,
                                       status: status.isEmpty ? CatalogCheckStatus.critical : status,
                                       notes: try fields.string("Notes"), output: try fields.string("Output"),
                                       serviceID: try fields.string("ServiceID"), type: try fields.string("Type"),
                                       definition: try fields.jsonText("Definition")))
        }
        return CatalogRegistration(node: node, skipNodeUpdate: skipNodeUpdate, service: service, checks: checks)
    }

    /// PUT /v1/catalog/deregister's body: Node, and optionally ServiceID and/or CheckID.
    static func deregistration(_ body: JSONFields) throws(CatalogRequestError) -> [CatalogCommand] {
        let node = try body.string("Node")
        guard !node.isEmpty else { throw CatalogRequestError(message: "Must provide node") }
        let serviceID = try body.string("ServiceID")
        let checkID = try body.string("CheckID")
        var commands: [CatalogCommand] = []
        if !serviceID.isEmpty { commands.append(.deregisterService(node: node, serviceID: serviceID)) }
        if !checkID.isEmpty { commands.append(.deregisterCheck(node: node, checkID: checkID)) }
        if commands.isEmpty { commands.append(.deregisterNode(node: node)) }
        return commands
    }

    private static func checkName(_ name: String, _ what: String) throws(CatalogRequestError) {
        if let problem = CatalogLimits.problem(name, what) { throw CatalogRequestError(message: problem) }
    }

    static func isUUID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (i, byte) in bytes.enumerated() {
            if [8, 13, 18, 23].contains(i) {
                if byte != UInt8(ascii: "-") { return false }
            } else if !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                        && !(UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20) {
                return false
            }
        }
        return true
    }
}
