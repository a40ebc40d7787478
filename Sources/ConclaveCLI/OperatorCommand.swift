// `conclave operator raft list-peers | remove-peer | transfer-leader`: Consul's Raft operator
// commands over the HTTP API (/v1/operator/raft/*), with Consul's flags, output and exit codes.
import Foundation
import HTTP

enum OperatorCommand {
    static let usage = """
        Usage: conclave operator <subcommand> [options]

          Provides cluster-level tools for Conclave operators.

        Subcommands:
            raft    Provides cluster-level tools for Conclave operators
        """

    static let raftUsage = """
        Usage: conclave operator raft <subcommand> [options]

          The Raft operator command is used to interact with Conclave's Raft subsystem. The
          command can be used to verify Raft peers or in rare cases to recover quorum by
          removing invalid peers.

        Subcommands:
            list-peers         Display the current Raft peer configuration
            remove-peer        Remove a Conclave server from the Raft configuration
            transfer-leader    Transfer raft leadership to another node
        """

    static func run(_ arguments: [String]) -> Int32 {
        guard arguments.first == "raft" else {
            if let sub = arguments.first, !["-h", "-help", "--help"].contains(sub) {
                printError("Unknown operator subcommand \"\(sub)\"\n")
            }
            printError(usage)
            return 1
        }
        let rest = Array(arguments.dropFirst())
        switch rest.first {
        case "list-peers": return listPeers(Array(rest.dropFirst()))
        case "remove-peer": return removePeer(Array(rest.dropFirst()))
        case "transfer-leader": return transferLeader(Array(rest.dropFirst()))
        case let sub?:
            if !["-h", "-help", "--help"].contains(sub) { printError("Unknown operator raft subcommand \"\(sub)\"\n") }
            printError(raftUsage)
            return 1
        case nil:
            printError(raftUsage)
            return 1
        }
    }

    /// Parses the flags, printing Consul's "Failed to parse args" on a bad one.
    private static func parse(_ flags: FlagSet, _ arguments: [String]) -> [String]? {
        do { return try flags.parse(arguments) } catch {
            printError("Failed to parse args: \(error)")
            return nil
        }
    }

    static func listPeers(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "operator raft list-peers")
        APIFlags.define(on: flags)
        guard parse(flags, arguments) != nil else { return 1 }
        do {
            var client = try APIFlags.client(flags)
            let query = APIFlags.queryItems(flags)
            let response = try client.request(method: "GET", path: "/v1/operator/raft/configuration"
                                              + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
            try APIFlags.check(response)
            print(try peersTable(response.body), terminator: "")
            return 0
        } catch {
            printError("Error getting peers: Failed to retrieve raft configuration: \(error)")
            return 1
        }
    }

    /// Consul's table: Node, ID, Address, State, Voter, RaftProtocol (columnized, two spaces).
    static func peersTable(_ body: [UInt8]) throws -> String {
        guard let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let servers = object["Servers"] as? [[String: Any]] else {
            throw FlagError(description: "unexpected answer from /v1/operator/raft/configuration")
        }
        var rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
        for server in servers {
            let leader = server["Leader"] as? Bool ?? false
            let protocolVersion = server["ProtocolVersion"] as? String ?? ""
            rows.append([server["Node"] as? String ?? "", server["ID"] as? String ?? "", server["Address"] as? String ?? "",
                         leader ? "leader" : "follower", String(server["Voter"] as? Bool ?? false),
                         protocolVersion.isEmpty ? "<=1" : protocolVersion])
        }
        return MembersCommand.columnize(rows)
    }

    static func removePeer(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "operator raft remove-peer")
        APIFlags.define(on: flags)
        flags.string("address", "The address to remove from the Raft configuration.")
        flags.string("id", "The ID to remove from the Raft configuration.")
        guard parse(flags, arguments) != nil else { return 1 }
        let address = flags.string("address") ?? ""
        let id = flags.string("id") ?? ""
        do {
            if address.isEmpty && id.isEmpty { throw FlagError(description: "an address or id is required for the peer to remove") }
            if !address.isEmpty && !id.isEmpty { throw FlagError(description: "cannot give both an address and id") }
            var client = try APIFlags.client(flags)
            var query = APIFlags.queryItems(flags).filter { $0 != "stale" }
            query.append(address.isEmpty ? "id=" + URLText.queryEscape(id) : "address=" + URLText.queryEscape(address))
            let response = try client.request(method: "DELETE", path: "/v1/operator/raft/peer?" + query.joined(separator: "&"))
            try APIFlags.check(response)
        } catch {
            printError("Error removing peer: \(error)")
            return 1
        }
        print(address.isEmpty ? "Removed peer with id \"\(id)\"" : "Removed peer with address \"\(address)\"")
        return 0
    }

    static func transferLeader(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "operator raft transfer-leader")
        APIFlags.define(on: flags)
        flags.string("id", "The ID of the node to transfer leadership to.")
        guard parse(flags, arguments) != nil else { return 1 }
        do {
            var client = try APIFlags.client(flags)
            var query = APIFlags.queryItems(flags).filter { $0 != "stale" }
            if let id = flags.string("id"), !id.isEmpty { query.append("id=" + URLText.queryEscape(id)) }
            let response = try client.request(method: "POST", path: "/v1/operator/raft/transfer-leader"
                                              + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
            try APIFlags.check(response)
            let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            guard object?["Success"] as? Bool == true else { throw FlagError(description: "Failed to transfer leadership") }
        } catch let error as FlagError where error.description == "Failed to transfer leadership" {
            printError("Error transfering leadership: \(error)")
            return 1
        } catch {
            printError("Error transfering leadership: Failed to transfer leadership \(error)")
            return 1
        }
        print("Success")
        return 0
    }
}
