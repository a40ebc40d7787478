// Consul's user events (/v1/event): what one looks like, how it rides inside a serf user
// event's payload, and the ring of recent events an agent remembers (Consul keeps 256).
import Foundation

/// Consul's structs.UserEvent, as /v1/event/fire and /v1/event/list render it.
struct UserEvent: Equatable {
    var id: String
    var name: String
    var payload: [UInt8]
    var nodeFilter: String
    var serviceFilter: String
    var tagFilter: String
    var version = 1
    var ltime: UInt64 = 0

    /// Consul renders Payload as base64 (null when empty) and LTime as the serf Lamport time.
    var json: [String: Any] {
        [
            "ID": id, "Name": name,
            "Payload": payload.isEmpty ? NSNull() : Data(payload).base64EncodedString() as Any,
            "NodeFilter": nodeFilter, "ServiceFilter": serviceFilter, "TagFilter": tagFilter,
            "Version": version, "LTime": ltime,
        ]
    }

    /// What goes inside the serf payload: a version byte, then id and the three filters as
    /// u16-length-prefixed strings, then the user's payload. The event name is serf's name.
    func envelope() -> [UInt8] {
        var out: [UInt8] = [1]
        for field in [id, nodeFilter, serviceFilter, tagFilter] {
            let bytes = Array(field.utf8.prefix(Int(UInt16.max)))
            out.append(UInt8(bytes.count >> 8))
            out.append(UInt8(bytes.count & 0xFF))
            out.append(contentsOf: bytes)
        }
        out.append(contentsOf: payload)
        return out
    }

    /// Total: any bytes give an event or nil (a malformed event from the network is dropped).
    init?(name: String, envelope bytes: [UInt8], ltime: UInt64) {
        guard bytes.first == 1 else { return nil }
        var offset = 1
        var fields: [String] = []
        for _ in 0..<4 {
            guard offset + 2 <= bytes.count else { return nil }
            let length = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            offset += 2
            guard offset + length <= bytes.count,
                  let text = String(validating: bytes[offset..<offset + length], as: UTF8.self) else { return nil }
            fields.append(text)
            offset += length
        }
        self.init(id: fields[0], name: name, payload: Array(bytes[offset...]), nodeFilter: fields[1],
                  serviceFilter: fields[2], tagFilter: fields[3], ltime: ltime)
    }

    init(id: String, name: String, payload: [UInt8], nodeFilter: String, serviceFilter: String, tagFilter: String,
         ltime: UInt64 = 0) {
        self.id = id
        self.name = name
        self.payload = payload
        self.nodeFilter = nodeFilter
        self.serviceFilter = serviceFilter
        self.tagFilter = tagFilter
        self.ltime = ltime
    }

    /// Consul's filters (agent/user_event.go): NodeFilter is a regular expression on the node
    /// name; ServiceFilter one on the names of this agent's services, at least one of which
    /// must match; TagFilter then one on that service's tags. A filter that does not compile
    /// matches nothing.
    func matches(nodeName: String, services: [(name: String, tags: [String])] = []) -> Bool {
        if !nodeFilter.isEmpty, !Self.matches(nodeFilter, nodeName) { return false }
        guard !serviceFilter.isEmpty else { return true }
        return services.contains { service in
            Self.matches(serviceFilter, service.name)
                && (tagFilter.isEmpty || service.tags.contains { Self.matches(tagFilter, $0) })
        }
    }

    private static func matches(_ pattern: String, _ text: String) -> Bool {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return false }
        return regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
    }

    /// Rejects filters Consul would reject: an invalid node regex, a tag filter without a
    /// service filter.
    static func validateFilters(node: String, service: String, tag: String) -> String? {
        if !node.isEmpty, (try? NSRegularExpression(pattern: node)) == nil { return "Invalid node filter: \(node)" }
        if !tag.isEmpty && service.isEmpty { return "Cannot provide tag filter without service filter" }
        return nil
    }
}

/// The most recent user events this agent received, oldest first. Loop-confined.
struct RecentUserEvents {
    static let capacity = 256
    private(set) var events: [UserEvent] = []

    mutating func append(_ event: UserEvent) {
        events.append(event)
        if events.count > Self.capacity { events.removeFirst(events.count - Self.capacity) }
    }

    /// Consul's index for /v1/event/list: the last event's UUID folded to 64 bits. It is not
    /// monotonic, so a watcher wakes when it differs, not when it grows.
    static func index(of events: [UserEvent]) -> UInt64 {
        guard let last = events.last, let uuid = UUID(uuidString: last.id) else { return 0 }
        let b = uuid.uuid
        let high = [b.0, b.1, b.2, b.3, b.4, b.5, b.6, b.7].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let low = [b.8, b.9, b.10, b.11, b.12, b.13, b.14, b.15].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return high ^ low
    }
}
