// The catalog's records (Consul's structs.Node, NodeService and HealthCheck, as the
// catalog and health HTTP APIs show them) and their binary form, shared by the stored
// records and the catalog commands: strings and byte strings length-prefixed (varint),
// lists as a varint count then the items, maps as a varint count then key/value pairs in
// strictly increasing key order (so every accepted encoding is canonical), integers as
// varints. Decoders are total: a forged count is checked against the bytes left first.

public struct CatalogNode: Sendable, Equatable {
    /// The node name (Consul's `Node`), the table's key.
    public var name: String
    /// The node ID (a UUID) or "".
    public var id: String
    public var address: String
    public var datacenter: String
    public var taggedAddresses: [String: String]
    public var meta: [String: String]
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(name: String, id: String = "", address: String, datacenter: String = "",
                taggedAddresses: [String: String] = [:], meta: [String: String] = [:],
                createIndex: UInt64 = 0, modifyIndex: UInt64 = 0) {
        self.name = name
        self.id = id
        self.address = address
        self.datacenter = datacenter
        self.taggedAddresses = taggedAddresses
        self.meta = meta
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    /// Same registration, whatever the indexes (Consul skips such writes: no index moves).
    func sameContent(_ other: CatalogNode) -> Bool {
        name == other.name && id == other.id && address == other.address && datacenter == other.datacenter
            && taggedAddresses == other.taggedAddresses && meta == other.meta
    }
}

/// Consul's ServiceAddress (a service's tagged address).
public struct ServiceAddress: Sendable, Equatable {
    public var address: String
    public var port: Int
    public init(address: String, port: Int) {
        self.address = address
        self.port = port
    }
}

/// Consul's Weights: DNS SRV weights when the instance is passing or warning.
public struct ServiceWeights: Sendable, Equatable {
    public var passing: Int
    public var warning: Int
    public init(passing: Int = 1, warning: Int = 1) {
        self.passing = passing
        self.warning = warning
    }
}

public struct CatalogService: Sendable, Equatable {
    /// The node the instance runs on.
    public var node: String
    /// The instance ID, unique on its node (Consul's `ID`; defaults to the service name).
    public var id: String
    /// The service name (Consul's `Service`).
    public var service: String
    public var tags: [String]
    public var address: String
    public var taggedAddresses: [String: ServiceAddress]
    public var meta: [String: String]
    public var port: Int
    public var weights: ServiceWeights
    public var enableTagOverride: Bool
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(node: String, id: String, service: String, tags: [String] = [], address: String = "",
                taggedAddresses: [String: ServiceAddress] = [:], meta: [String: String] = [:], port: Int = 0,
                weights: ServiceWeights = ServiceWeights(), enableTagOverride: Bool = false,
                createIndex: UInt64 = 0, modifyIndex: UInt64 = 0) {
        self.node = node
        self.id = id
        self.service = service
        self.tags = tags
        self.address = address
        self.taggedAddresses = taggedAddresses
        self.meta = meta
        self.port = port
        self.weights = weights
        self.enableTagOverride = enableTagOverride
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    func sameContent(_ other: CatalogService) -> Bool {
        var a = self, b = other
        a.createIndex = 0; a.modifyIndex = 0; b.createIndex = 0; b.modifyIndex = 0
        return a == b
    }
}

/// Consul's check statuses (api.HealthPassing etc.).
public enum CatalogCheckStatus {
    public static let passing = "passing"
    public static let warning = "warning"
    public static let critical = "critical"
    public static let maintenance = "maintenance"
    public static let all: Set<String> = [passing, warning, critical, maintenance]
}

public struct CatalogCheck: Sendable, Equatable {
    public var node: String
    public var checkID: String
    public var name: String
    public var status: String
    public var notes: String
    public var output: String
    /// "" for a node-level check (like serfHealth), which counts for every service of the node.
    public var serviceID: String
    /// Copied from the service at registration (Consul denormalises them the same way).
    public var serviceName: String
    public var serviceTags: [String]
    /// "ttl", "http", "tcp", "script", "serf"… or "".
    public var type: String
    /// Consul's HealthCheckDefinition as a JSON object text ("" when none): the agent owns
    /// its fields; the catalog only keeps and returns it.
    public var definition: String
    public var createIndex: UInt64
    public var modifyIndex: UInt64

    public init(node: String, checkID: String, name: String = "", status: String = CatalogCheckStatus.critical,
                notes: String = "", output: String = "", serviceID: String = "", serviceName: String = "",
                serviceTags: [String] = [], type: String = "", definition: String = "",
                createIndex: UInt64 = 0, modifyIndex: UInt64 = 0) {
        self.node = node
        self.checkID = checkID
        self.name = name
        self.status = status
        self.notes = notes
        self.output = output
        self.serviceID = serviceID
        self.serviceName = serviceName
        self.serviceTags = serviceTags
        self.type = type
        self.definition = definition
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    func sameContent(_ other: CatalogCheck) -> Bool {
        var a = self, b = other
        a.createIndex = 0; a.modifyIndex = 0; b.createIndex = 0; b.modifyIndex = 0
        return a == b
    }
}

// MARK: - Binary form

/// Stored records start with this version byte, so a later layout can be told apart.
let catalogRecordVersion: UInt8 = 1

extension ByteWriter {
    mutating func string(_ value: String) { lengthPrefixed(Array(value.utf8)) }

    mutating func int(_ value: Int) { varint(UInt64(bitPattern: Int64(value))) }

    mutating func strings(_ values: [String]) {
        varint(UInt64(values.count))
        for value in values { string(value) }
    }

    mutating func stringMap(_ map: [String: String]) {
        varint(UInt64(map.count))
        for key in map.keys.sorted(by: CatalogOrder.less) {
            string(key)
            string(map[key]!)
        }
    }

    mutating func node(_ node: CatalogNode) {
        string(node.name); string(node.id); string(node.address); string(node.datacenter)
        stringMap(node.taggedAddresses); stringMap(node.meta)
        varint(node.createIndex); varint(node.modifyIndex)
    }

    mutating func service(_ service: CatalogService) {
        string(service.node); string(service.id); string(service.service); strings(service.tags)
        string(service.address)
        varint(UInt64(service.taggedAddresses.count))
        for key in service.taggedAddresses.keys.sorted(by: CatalogOrder.less) {
            string(key)
            string(service.taggedAddresses[key]!.address)
            int(service.taggedAddresses[key]!.port)
        }
        stringMap(service.meta)
        int(service.port); int(service.weights.passing); int(service.weights.warning)
        byte(service.enableTagOverride ? 1 : 0)
        varint(service.createIndex); varint(service.modifyIndex)
    }

    mutating func check(_ check: CatalogCheck) {
        string(check.node); string(check.checkID); string(check.name); string(check.status)
        string(check.notes); string(check.output); string(check.serviceID); string(check.serviceName)
        strings(check.serviceTags); string(check.type); string(check.definition)
        varint(check.createIndex); varint(check.modifyIndex)
    }
}

extension ByteReader {
    mutating func int(_ field: String) throws(StateStoreError) -> Int {
        Int(Int64(bitPattern: try varint(field)))
    }

    /// A count of items that each take at least one byte: bounded by the bytes left before
    /// anything is reserved.
    mutating func count(_ field: String) throws(StateStoreError) -> Int {
        let count = try varint("\(field) count")
        guard count <= UInt64(remaining) else {
            throw StateStoreError.malformedCommand("\(field) count \(count) exceeds the \(remaining) bytes left")
        }
        return Int(count)
    }

    mutating func strings(_ field: String) throws(StateStoreError) -> [String] {
        let count = try self.count(field)
        var values: [String] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(try string(field)) }
        return values
    }

    /// Keys must strictly increase: one encoding per map, and no duplicate keys.
    mutating func mapKeys(_ field: String, _ body: (inout ByteReader, String) throws(StateStoreError) -> Void) throws(StateStoreError) {
        let count = try self.count(field)
        var previous: String?
        for _ in 0..<count {
            let key = try string("\(field) key")
            if let previous, !CatalogOrder.less(previous, key) {
                throw StateStoreError.malformedCommand("\(field) keys out of order")
            }
            previous = key
            try body(&self, key)
        }
    }

    mutating func stringMap(_ field: String) throws(StateStoreError) -> [String: String] {
        var map: [String: String] = [:]
        try mapKeys(field) { (reader: inout ByteReader, key: String) throws(StateStoreError) in
            map[key] = try reader.string("\(field) value")
        }
        return map
    }

    mutating func bool(_ field: String) throws(StateStoreError) -> Bool {
        switch try byte(field) {
        case 0: return false
        case 1: return true
        case let other: throw StateStoreError.malformedCommand("\(field): \(other) is not 0 or 1")
        }
    }

    mutating func node() throws(StateStoreError) -> CatalogNode {
        CatalogNode(name: try string("node name"), id: try string("node ID"), address: try string("address"),
                    datacenter: try string("datacenter"), taggedAddresses: try stringMap("tagged addresses"),
                    meta: try stringMap("node meta"), createIndex: try varint("create index"),
                    modifyIndex: try varint("modify index"))
    }

    mutating func service() throws(StateStoreError) -> CatalogService {
        let node = try string("node name"), id = try string("service ID"), name = try string("service name")
        let tags = try strings("tags"), address = try string("service address")
        var tagged: [String: ServiceAddress] = [:]
        try mapKeys("service tagged addresses") { (reader: inout ByteReader, key: String) throws(StateStoreError) in
            tagged[key] = ServiceAddress(address: try reader.string("tagged address"), port: try reader.int("tagged port"))
        }
        return CatalogService(node: node, id: id, service: name, tags: tags, address: address, taggedAddresses: tagged,
                              meta: try stringMap("service meta"), port: try int("port"),
                              weights: ServiceWeights(passing: try int("passing weight"), warning: try int("warning weight")),
                              enableTagOverride: try bool("enable tag override"),
                              createIndex: try varint("create index"), modifyIndex: try varint("modify index"))
    }

    mutating func check() throws(StateStoreError) -> CatalogCheck {
        CatalogCheck(node: try string("node name"), checkID: try string("check ID"), name: try string("check name"),
                     status: try string("status"), notes: try string("notes"), output: try string("output"),
                     serviceID: try string("service ID"), serviceName: try string("service name"),
                     serviceTags: try strings("service tags"), type: try string("type"),
                     definition: try string("definition"), createIndex: try varint("create index"),
                     modifyIndex: try varint("modify index"))
    }

    mutating func end() throws(StateStoreError) {
        guard remaining == 0 else { throw StateStoreError.malformedCommand("\(remaining) trailing bytes") }
    }
}

/// Byte order of UTF-8, which is how LMDB orders keys: listings come out in that order.
enum CatalogOrder {
    static func less(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}

// Stored records: version byte, then the record.
extension CatalogNode {
    func stored() -> [UInt8] {
        var writer = ByteWriter()
        writer.byte(catalogRecordVersion)
        writer.node(self)
        return writer.bytes
    }
    init(stored bytes: [UInt8]) throws(StateStoreError) {
        self = try decodeRecord(bytes, "node") { (reader: inout ByteReader) throws(StateStoreError) in try reader.node() }
    }
}

extension CatalogService {
    func stored() -> [UInt8] {
        var writer = ByteWriter()
        writer.byte(catalogRecordVersion)
        writer.service(self)
        return writer.bytes
    }
    init(stored bytes: [UInt8]) throws(StateStoreError) {
        self = try decodeRecord(bytes, "service") { (reader: inout ByteReader) throws(StateStoreError) in try reader.service() }
    }
}

extension CatalogCheck {
    func stored() -> [UInt8] {
        var writer = ByteWriter()
        writer.byte(catalogRecordVersion)
        writer.check(self)
        return writer.bytes
    }
    init(stored bytes: [UInt8]) throws(StateStoreError) {
        self = try decodeRecord(bytes, "check") { (reader: inout ByteReader) throws(StateStoreError) in try reader.check() }
    }
}

/// Decodes a stored record; any failure is reported as corruption of the named record kind.
private func decodeRecord<T>(_ bytes: [UInt8], _ kind: String,
                             _ body: (inout ByteReader) throws(StateStoreError) -> T) throws(StateStoreError) -> T {
    var reader = ByteReader(bytes)
    do throws(StateStoreError) {
        let version = try reader.byte("version")
        guard version == catalogRecordVersion else {
            throw StateStoreError.malformedCommand("unknown record version \(version)")
        }
        let record = try body(&reader)
        try reader.end()
        return record
    } catch {
        if case let .malformedCommand(reason) = error { throw StateStoreError.corrupt("catalog \(kind): \(reason)") }
        throw error
    }
}
