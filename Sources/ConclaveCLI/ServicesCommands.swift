// `conclave services register|deregister`: Consul's `consul services` commands. A service comes
// from flags or from definition files in the config format ({"service": {…}} or
// {"services": [...]}), and goes to the agent's /v1/agent/service/* API.
import Foundation
import HTTP

enum ServicesCommands {
    static func run(_ arguments: [String]) -> Int32 {
        guard let sub = arguments.first else {
            printError(usage)
            return 1
        }
        switch sub {
        case "register": return register(Array(arguments.dropFirst()))
        case "deregister": return deregister(Array(arguments.dropFirst()))
        case "-h", "-help", "--help":
            print(usage)
            return 0
        default:
            printError("Unknown subcommand \"\(sub)\"\n\n" + usage)
            return 1
        }
    }

    static let usage = """
        Usage: conclave services <subcommand> [options] [args]

          Register and deregister services on the local agent.

        Subcommands:
            deregister    Deregister services with the local agent
            register      Register services with the local agent
        """

    static func register(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "services register")
        APIFlags.define(on: flags)
        flags.string("name", "Name of the service to register.")
        flags.string("id", "ID of the service to register (defaults to the name).")
        flags.stringList("tag", "Tag to add to the service. May be given more than once.")
        flags.string("address", "Address of the service.")
        flags.int("port", "Port of the service.")
        flags.stringList("meta", "Metadata as key=value. May be given more than once.")
        let services: [[String: Any]]
        let rest: [String]
        do {
            rest = try flags.parse(arguments)
            let name = flags.string("name") ?? ""
            if rest.isEmpty && name.isEmpty {
                printError("Service registration requires at least one argument or flags.")
                return 1
            }
            if !rest.isEmpty && !name.isEmpty {
                printError("Service registration with flags and definition files at the same time is not supported.")
                return 1
            }
            if !name.isEmpty {
                var service: [String: Any] = ["Name": name]
                if let id = flags.string("id") { service["ID"] = id }
                if flags.isSet("tag") { service["Tags"] = flags.list("tag") }
                if let address = flags.string("address") { service["Address"] = address }
                if flags.isSet("port") {
                    guard let port = flags.int("port") else { throw FlagError(description: "invalid value for -port") }
                    service["Port"] = port
                }
                var meta: [String: String] = [:]
                for pair in flags.list("meta") {
                    guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex else {
                        throw FlagError(description: "Invalid meta \"\(pair)\": expected key=value")
                    }
                    meta[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
                }
                if !meta.isEmpty { service["Meta"] = meta }
                services = [service]
            } else {
                services = try rest.flatMap { try definitions(inFile: $0) }
            }
        } catch {
            printError("Error: \(error)")
            return 1
        }
        do {
            var client = try APIFlags.client(flags)
            for service in services {
                let body = try JSONSerialization.data(withJSONObject: service)
                let response = try client.request(method: "PUT", path: "/v1/agent/service/register", body: Array(body))
                let name = service.first { $0.key.lowercased() == "name" }?.value as? String ?? ""
                guard response.status == 200 else {
                    let message = String(decoding: response.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    printError("Error registering service \"\(name)\": Unexpected response code: \(response.status) (\(message))")
                    return 1
                }
                print("Registered service: \(name)")
            }
            return 0
        } catch {
            printError("Error registering service: \(error)")
            return 1
        }
    }

    static func deregister(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "services deregister")
        APIFlags.define(on: flags)
        flags.string("id", "ID of the service to deregister.")
        var ids: [String] = []
        do {
            let rest = try flags.parse(arguments)
            let id = flags.string("id") ?? ""
            if rest.isEmpty && id.isEmpty {
                printError("Service deregistration requires at least one argument or -id.")
                return 1
            }
            if !rest.isEmpty && !id.isEmpty {
                printError("Service deregistration with -id and definition files at the same time is not supported.")
                return 1
            }
            if !id.isEmpty {
                ids = [id]
            } else {
                for service in try rest.flatMap({ try definitions(inFile: $0) }) {
                    let fields = Dictionary(service.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
                    let serviceID = (fields["id"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? (fields["name"] as? String ?? "")
                    guard !serviceID.isEmpty else { throw FlagError(description: "a service in the file has neither an ID nor a name") }
                    ids.append(serviceID)
                }
            }
        } catch {
            printError("Error: \(error)")
            return 1
        }
        do {
            var client = try APIFlags.client(flags)
            for id in ids {
                let response = try client.request(method: "PUT", path: "/v1/agent/service/deregister/" + URLText.queryEscape(id))
                guard response.status == 200 else {
                    let message = String(decoding: response.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                    printError("Error deregistering service \"\(id)\": Unexpected response code: \(response.status) (\(message))")
                    return 1
                }
                print("Deregistered service: \(id)")
            }
            return 0
        } catch {
            printError("Error deregistering service: \(error)")
            return 1
        }
    }

    /// The service objects in a definition file: `{"service": {...}}`, `{"services": [...]}`,
    /// or a bare service object with a Name.
    static func definitions(inFile path: String) throws -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FlagError(description: "Error reading file \"\(path)\"")
        }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            throw FlagError(description: "Error decoding file \"\(path)\": \(error.localizedDescription)")
        }
        guard let root = object as? [String: Any] else { throw FlagError(description: "Error decoding file \"\(path)\": expected an object") }
        if let one = root["service"] as? [String: Any] { return [one] }
        if let many = root["services"] as? [[String: Any]] { return many }
        if root.keys.contains(where: { $0.lowercased() == "name" }) { return [root] }
        throw FlagError(description: "File \"\(path)\" has no service definition (expected \"service\" or \"services\")")
    }
}
