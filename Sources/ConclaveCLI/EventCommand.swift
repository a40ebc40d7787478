// `conclave event -name=NAME [payload]`: fires a user event through the agent, as Consul's
// `consul event` does, and prints its ID.
import Foundation
import HTTP

enum EventCommand {
    static func run(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "event")
        APIFlags.define(on: flags)
        flags.string("name", "Name of the event (required).")
        flags.string("node", "Regular expression to filter on node names.")
        flags.string("service", "Regular expression to filter on service instances.")
        flags.string("tag", "Regular expression to filter on service tags. Must be used with -service.")
        do {
            let args = try flags.parse(arguments)
            guard let name = flags.string("name"), !name.isEmpty else {
                throw FlagError(description: "Event name must be specified")
            }
            guard args.count <= 1 else { throw FlagError(description: "Too many arguments (expected 0 or 1, got \(args.count))") }
            if flags.string("tag") != nil && flags.string("service") == nil {
                throw FlagError(description: "Cannot provide tag filter without service filter.")
            }
            let payload = try KVCommands.readData(args.first)
            var query = APIFlags.queryItems(flags)
            for key in ["node", "service", "tag"] {
                if let value = flags.string(key), !value.isEmpty { query.append("\(key)=" + URLText.queryEscape(value)) }
            }
            var client = try APIFlags.client(flags)
            let path = "/v1/event/fire/" + URLText.pathEscape(name) + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
            let response = try client.request(method: "PUT", path: path, body: payload)
            try APIFlags.check(response)
            let body = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            print("Event ID: \(body?["ID"] as? String ?? "")")
            return 0
        } catch {
            printError("Error firing event: \(error)")
            return 1
        }
    }
}
