// `conclave catalog datacenters | nodes | services`: Consul's catalog commands over the HTTP
// API, with Consul's output (command/catalog/list/*): columns separated by two spaces.
import Foundation
import HTTP

enum CatalogCommands {
    static func run(_ arguments: [String]) -> Int32 {
        guard let sub = arguments.first else {
            printError(usage)
            return 1
        }
        let rest = Array(arguments.dropFirst())
        switch sub {
        case "datacenters": return datacenters(rest)
        case "nodes": return nodes(rest)
        case "services": return services(rest)
        case "-h", "-help", "--help", "help":
            print(usage)
            return 0
        default:
            printError("Unknown catalog subcommand \"\(sub)\"\n\n" + usage)
            return 1
        }
    }

    static let usage = """
        Usage: conclave catalog <subcommand> [options] [args]

          Queries the replicated catalog of nodes and services.

        Subcommands:
            datacenters    Lists all known datacenters
            nodes          Lists all nodes in the given datacenter
            services       Lists all registered services in a datacenter
        """

    static func datacenters(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "catalog datacenters")
        APIFlags.define(on: flags)
        do {
            guard try flags.parse(arguments).isEmpty else {
                printError("Too many arguments (expected 0)")
                return 1
            }
            var client = try APIFlags.client(flags)
            let response = try client.request(method: "GET", path: "/v1/catalog/datacenters")
            try APIFlags.check(response)
            let list = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String] ?? []
            if list.isEmpty {
                printError("No datacenters found")
                return 1
            }
            for dc in list { print(dc) }
            return 0
        } catch {
            printError("Error listing datacenters: \(error)")
            return 1
        }
    }

    static func nodes(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "catalog nodes")
        APIFlags.define(on: flags)
        flags.bool("detailed", "Output detailed information about the nodes including their addresses and metadata.")
        flags.string("service", "Service id or name to filter nodes. Only nodes which are providing the given service will be returned.")
        flags.stringList("node-meta", "Metadata to filter nodes with the given `key=value` pairs. May be specified multiple times.")
        flags.string("near", "Node name to sort the node list in ascending order based on estimated round-trip time (accepted, not used).")
        do {
            guard try flags.parse(arguments).isEmpty else {
                printError("Too many arguments (expected 0)")
                return 1
            }
            let suffix = querySuffix(flags)
            var client = try APIFlags.client(flags)
            var nodes: [[String: Any]]
            if let service = flags.string("service"), !service.isEmpty {
                let response = try client.request(method: "GET", path: "/v1/catalog/service/" + URLText.pathEscape(service) + suffix)
                try APIFlags.check(response)
                let instances = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]] ?? []
                // ServiceNode carries the node's fields; one row per node.
                var seen = Set<String>()
                nodes = []
                for instance in instances where seen.insert(instance["Node"] as? String ?? "").inserted {
                    nodes.append(["Node": instance["Node"] ?? "", "ID": instance["ID"] ?? "", "Address": instance["Address"] ?? "",
                                  "Datacenter": instance["Datacenter"] ?? "", "TaggedAddresses": instance["TaggedAddresses"] ?? [String: String](),
                                  "Meta": instance["NodeMeta"] ?? [String: String]()])
                }
            } else {
                let response = try client.request(method: "GET", path: "/v1/catalog/nodes" + suffix)
                try APIFlags.check(response)
                nodes = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]] ?? []
            }
            if nodes.isEmpty {
                printError("No nodes match the given query - try expanding your search.")
                return 0
            }
            print(nodesTable(nodes, detailed: flags.flag("detailed")), terminator: "")
            return 0
        } catch {
            printError("Error listing nodes: \(error)")
            return 1
        }
    }

    /// Consul's columns: Node  ID  Address  DC (ID cut to 8 characters), and with -detailed
    /// the full ID plus TaggedAddresses and Meta as sorted key=value lists.
    static func nodesTable(_ nodes: [[String: Any]], detailed: Bool) -> String {
        var rows = [detailed ? ["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"] : ["Node", "ID", "Address", "DC"]]
        let sorted = nodes.sorted { ($0["Node"] as? String ?? "") < ($1["Node"] as? String ?? "") }
        for node in sorted {
            let id = node["ID"] as? String ?? ""
            var row = [node["Node"] as? String ?? "", detailed ? id : String(id.prefix(8)),
                       node["Address"] as? String ?? "", node["Datacenter"] as? String ?? ""]
            if detailed {
                row.append(pairs(node["TaggedAddresses"] as? [String: String] ?? [:]))
                row.append(pairs(node["Meta"] as? [String: String] ?? [:]))
            }
            rows.append(row)
        }
        return MembersCommand.columnize(rows)
    }

    /// The API flags' query items plus each `-node-meta key=value` as the API's `node-meta=key:value`.
    static func querySuffix(_ flags: FlagSet) -> String {
        var query = APIFlags.queryItems(flags)
        for pair in flags.list("node-meta") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            query.append("node-meta=" + URLText.queryEscape(String(parts[0]) + ":" + (parts.count > 1 ? String(parts[1]) : "")))
        }
        return query.isEmpty ? "" : "?" + query.joined(separator: "&")
    }

    static func services(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "catalog services")
        APIFlags.define(on: flags)
        flags.bool("tags", "Display each service's tags as a comma-separated list beside each service entry.")
        flags.string("node", "Node id or name for which to list services.")
        flags.stringList("node-meta", "Metadata to filter nodes with the given `key=value` pairs. May be specified multiple times.")
        do {
            guard try flags.parse(arguments).isEmpty else {
                printError("Too many arguments (expected 0)")
                return 1
            }
            let suffix = querySuffix(flags)
            var client = try APIFlags.client(flags)
            var services: [String: [String]] = [:]
            if let node = flags.string("node"), !node.isEmpty {
                let response = try client.request(method: "GET", path: "/v1/catalog/node/" + URLText.pathEscape(node) + suffix)
                try APIFlags.check(response)
                let body = try JSONSerialization.jsonObject(with: Data(response.body), options: [.fragmentsAllowed]) as? [String: Any]
                for case let service as [String: Any] in (body?["Services"] as? [String: Any] ?? [:]).values {
                    let name = service["Service"] as? String ?? ""
                    services[name, default: []].append(contentsOf: service["Tags"] as? [String] ?? [])
                }
            } else {
                let response = try client.request(method: "GET", path: "/v1/catalog/services" + suffix)
                try APIFlags.check(response)
                services = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: [String]] ?? [:]
            }
            if services.isEmpty {
                printError("No services match the given query - try expanding your search.")
                return 0
            }
            print(servicesTable(services, tags: flags.flag("tags")), terminator: "")
            return 0
        } catch {
            printError("Error listing services: \(error)")
            return 1
        }
    }

    /// Names sorted, one a line; with -tags a second column of the sorted, de-duplicated tags.
    static func servicesTable(_ services: [String: [String]], tags: Bool) -> String {
        let names = services.keys.sorted()
        guard tags else { return names.map { $0 + "\n" }.joined() }
        return MembersCommand.columnize(names.map { [$0, Set(services[$0] ?? []).sorted().joined(separator: ",")] })
    }

    private static func pairs(_ map: [String: String]) -> String {
        map.keys.sorted().map { "\($0)=\(map[$0]!)" }.joined(separator: ",")
    }
}
