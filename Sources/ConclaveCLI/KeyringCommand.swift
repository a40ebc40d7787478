// `conclave keyring -list | -install=KEY | -use=KEY | -remove=KEY`: gossip key rotation
// across the pool through /v1/operator/keyring, with Consul's output.
import Foundation
import HTTP

enum KeyringCommand {
    static func run(_ arguments: [String]) -> Int32 {
        let flags = FlagSet(command: "keyring")
        APIFlags.define(on: flags)
        flags.bool("list", "List all keys currently in use within the cluster.")
        flags.string("install", "Install a new encryption key (base64). It will be broadcast to all members.")
        flags.string("use", "Change the primary encryption key, which is used to encrypt messages. The key must already be installed.")
        flags.string("remove", "Remove the given key from the cluster. Only secondary keys can be removed.")
        do {
            let rest = try flags.parse(arguments)
            guard rest.isEmpty else { throw FlagError(description: "This command takes no arguments") }
            let chosen = ["list", "install", "use", "remove"].filter { flags.isSet($0) }
            guard chosen.count == 1 else {
                throw FlagError(description: "Exactly one of -list, -install, -use, or -remove must be provided")
            }
            var client = try APIFlags.client(flags)
            switch chosen[0] {
            case "list":
                print("==> Gathering installed encryption keys...")
                let response = try client.request(method: "GET", path: "/v1/operator/keyring")
                try APIFlags.check(response)
                let pools = (try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]]) ?? []
                for pool in pools {
                    let dc = pool["Datacenter"] as? String ?? ""
                    let total = pool["NumNodes"] as? Int ?? 0
                    print("")
                    print("\(dc) (\((pool["WAN"] as? Bool ?? false) ? "WAN" : "LAN")):")
                    let keys = pool["Keys"] as? [String: Int] ?? [:]
                    for key in keys.keys.sorted() { print("  \(key) [\(keys[key]!)/\(total)]") }
                }
            case let operation:
                let (method, banner): (String, String) = switch operation {
                case "install": ("POST", "==> Installing new gossip encryption key...")
                case "use": ("PUT", "==> Changing primary gossip encryption key...")
                default: ("DELETE", "==> Removing gossip encryption key...")
                }
                print(banner)
                let key = flags.string(operation) ?? ""
                let body = try JSONSerialization.data(withJSONObject: ["Key": key])
                let response = try client.request(method: method, path: "/v1/operator/keyring", body: Array(body))
                try APIFlags.check(response)
            }
            return 0
        } catch {
            printError("Error: \(error)")
            return 1
        }
    }
}
