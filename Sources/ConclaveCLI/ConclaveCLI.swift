// `conclave <command>`: dispatch to the commands, Consul's verbs and output.
import Agent
import Foundation
import Glibc

public enum ConclaveCLI {
    public static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        exit(run(arguments))
    }

    static let commands: [(name: String, synopsis: String)] = [
        ("agent", "Runs a Conclave agent"),
        ("catalog", "Interact with the catalog"),
        ("event", "Fire a new event"),
        ("force-leave", "Forces a member of the cluster to enter the \"left\" state"),
        ("join", "Tell Conclave agent to join cluster"),
        ("keygen", "Generates a new encryption key"),
        ("keyring", "Manages gossip layer encryption keys"),
        ("kv", "Interact with the key-value store"),
        ("leave", "Gracefully leaves the cluster and shuts down the agent"),
        ("members", "Lists the members of a Conclave cluster"),
        ("operator", "Provides cluster-level tools for Conclave operators"),
        ("snapshot", "Saves and inspects snapshots of Conclave server state"),
        ("services", "Interact with services"),
        ("version", "Prints the Conclave version"),
    ]

    public static func run(_ arguments: [String]) -> Int32 {
        guard let command = arguments.first else {
            printError(usage())
            return 1
        }
        let rest = Array(arguments.dropFirst())
        switch command {
        case "agent": return AgentCommand.run(rest)
        case "kv": return KVCommands.run(rest)
        case "catalog": return CatalogCommands.run(rest)
        case "leave": return LeaveCommand.run(rest)
        case "members": return MembersCommand.run(rest)
        case "join": return JoinCommand.run(rest)
        case "force-leave": return ForceLeaveCommand.run(rest)
        case "keygen": return KeygenCommand.run(rest)
        case "keyring": return KeyringCommand.run(rest)
        case "event": return EventCommand.run(rest)
        case "operator": return OperatorCommand.run(rest)
        case "snapshot": return SnapshotCommand.run(rest)
        case "services": return ServicesCommands.run(rest)
        case "version", "-version", "--version", "-v":
            print("Conclave v\(ConclaveVersion.version)")
            print("Revision \(ConclaveVersion.revision)")
            print("Protocol 2 spoken by default, understands 2 to 3 (Consul-compatible HTTP API)")
            return 0
        case "-h", "-help", "--help", "help":
            print(usage())
            return 0
        default:
            printError("Unknown command: \"\(command)\"\n\n" + usage())
            return 1
        }
    }

    static func usage() -> String {
        var lines = ["Usage: conclave [--version] [--help] <command> [<args>]", "", "Available commands are:"]
        for command in commands {
            lines.append("    " + command.name.padding(toLength: 12, withPad: " ", startingAt: 0) + command.synopsis)
        }
        return lines.joined(separator: "\n")
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
