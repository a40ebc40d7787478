// `conclave members | join | force-leave | keygen`: Consul's gossip commands over the HTTP
// API (keygen is local), with Consul's output.
import Foundation
import Gossip
import HTTP

enum MembersCommand {
    static func run(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "members")
        APIFlags.define(on: flags)
        flags.bool("detailed", "Provides detailed information about nodes.")
        flags.bool("wan", "If the agent is in server mode, this can be used to return the other peers in the WAN pool.")
        flags.string("status", "If provided, output is filtered to only nodes matching the regular expression for status.")
        flags.string("segment", "(Enterprise-only) accepted and ignored.")
        flags.string("partition", "(Enterprise-only) accepted and ignored.")
        do {
            _ = try flags.parse(arguments)
            var statusFilter: NSRegularExpression?
            if let pattern = flags.string("status") {
                do { statusFilter = try NSRegularExpression(pattern: pattern) } catch {
                    printError("Failed to compile status regexp: \(pattern)")
                    return 1
                }
            }
            var client = try APIFlags.client(flags)
            let response = try client.request(method: "GET", path: "/v1/agent/members" + (flags.flag("wan") ? "?wan=1" : ""))
            try APIFlags.check(response)
            guard let list = try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]] else {
                throw FlagError(description: "unexpected answer from /v1/agent/members")
            }
            var members = list.map(Member.init)
            if let statusFilter {
                members = members.filter { m in
                    statusFilter.firstMatch(in: m.status, range: NSRange(m.status.startIndex..., in: m.status)) != nil
                }
            }
            // Consul exits 2 when the filter leaves nothing.
            if members.isEmpty { return 2 }
            members.sort { $0.name < $1.name }
            print(flags.flag("detailed") ? detailedTable(members) : standardTable(members, wan: flags.flag("wan")), terminator: "")
            return 0
        } catch {
            printError("Error retrieving members: \(error)")
            return 1
        }
    }

    struct Member {
        var name: String, address: String, status: String, tags: [String: String]
        init(_ json: [String: Any]) {
            name = json["Name"] as? String ?? ""
            let addr = json["Addr"] as? String ?? ""
            let port = (json["Port"] as? NSNumber)?.intValue ?? 0
            address = (addr.contains(":") ? "[\(addr)]" : addr) + ":\(port)"
            switch (json["Status"] as? NSNumber)?.intValue ?? 0 {
            case 1: status = "alive"
            case 2: status = "leaving"
            case 3: status = "left"
            case 4: status = "failed"
            default: status = "none"
            }
            tags = json["Tags"] as? [String: String] ?? [:]
        }
        var type: String { tags["role"] == "consul" ? "server" : "client" }
        var build: String { (tags["build"] ?? "").split(separator: ":").first.map(String.init) ?? "" }
    }

    /// Consul's columns: Node  Address  Status  Type  Build  Protocol  DC  Partition  Segment.
    static func standardTable(_ members: [Member], wan: Bool) -> String {
        var rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]]
        for m in members {
            rows.append([m.name, m.address, m.status, m.type, m.build, m.tags["vsn"] ?? "2", m.tags["dc"] ?? "",
                         "default", m.type == "server" ? "<all>" : (m.tags["segment"].flatMap { $0.isEmpty ? nil : $0 } ?? "<default>")])
        }
        return columnize(rows)
    }

    static func detailedTable(_ members: [Member]) -> String {
        var rows = [["Node", "Address", "Status", "Tags"]]
        for m in members {
            rows.append([m.name, m.address, m.status, m.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")])
        }
        return columnize(rows)
    }

    /// ryanuber/columnize with Consul's settings: columns separated by two spaces.
    static func columnize(_ rows: [[String]]) -> String {
        var widths: [Int] = []
        for row in rows {
            for (i, cell) in row.enumerated() {
                if i >= widths.count { widths.append(0) }
                widths[i] = max(widths[i], cell.count)
            }
        }
        var out = ""
        for row in rows {
            var line = ""
            for (i, cell) in row.enumerated() {
                line += i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0)
            }
            while line.hasSuffix(" ") { line.removeLast() }
            out += line + "\n"
        }
        return out
    }
}

enum JoinCommand {
    static func run(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "join")
        APIFlags.define(on: flags)
        flags.bool("wan", "Joins a server to another server in the WAN pool.")
        do {
            let addresses = try flags.parse(arguments)
            guard !addresses.isEmpty else {
                printError("At least one address to join must be specified.")
                return 1
            }
            var client = try APIFlags.client(flags)
            var joined = 0
            var lastError = ""
            for address in addresses {
                let path = "/v1/agent/join/" + URLText.pathEscape(address) + (flags.flag("wan") ? "?wan=1" : "")
                let response = try client.request(method: "PUT", path: path)
                if (200..<300).contains(response.status) {
                    joined += 1
                } else {
                    lastError = String(decoding: response.body, as: UTF8.self)
                }
            }
            if joined == 0 {
                printError("Error joining address(es): \(lastError)")
                return 1
            }
            print("Successfully joined cluster by contacting \(joined) nodes.")
            return 0
        } catch {
            printError("Error joining address(es): \(error)")
            return 1
        }
    }
}

enum ForceLeaveCommand {
    static func run(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "force-leave")
        APIFlags.define(on: flags)
        flags.bool("prune", "Remove agent forcibly from list of members.")
        flags.bool("wan", "Exclusively remove the node from the WAN pool (accepted; both pools are handled).")
        do {
            let nodes = try flags.parse(arguments)
            guard nodes.count == 1 else {
                printError("A single node name must be specified to force leave.")
                return 1
            }
            var client = try APIFlags.client(flags)
            let path = "/v1/agent/force-leave/" + URLText.pathEscape(nodes[0]) + (flags.flag("prune") ? "?prune=1" : "")
            let response = try client.request(method: "PUT", path: path)
            try APIFlags.check(response)
            return 0
        } catch {
            printError("Error force leaving: \(error)")
            return 1
        }
    }
}

enum KeygenCommand {
    static func run(_ arguments: [String]) -> Int32 {
        guard arguments.isEmpty else {
            printError("keygen takes no arguments")
            return 1
        }
        print(GossipKeyring.generateBase64Key())
        return 0
    }
}
