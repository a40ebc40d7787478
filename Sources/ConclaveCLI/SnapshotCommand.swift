// `conclave snapshot save|inspect` (https://developer.hashicorp.com/consul/commands/snapshot):
// save fetches GET /v1/snapshot into a file and verifies it; inspect prints the archive's
// ID, Size, Index, Term and Version as Consul does; restore PUTs the file to /v1/snapshot
// ("Restored snapshot", or "Error restoring snapshot: …" and exit 1).
import Foundation
import HTTP
import Replication

enum SnapshotCommand {
    static func run(_ arguments: [String]) -> Int32 {
        guard let sub = arguments.first else {
            printError("Usage: conclave snapshot <subcommand> [options] [args]\n\nSubcommands: inspect, restore, save")
            return 1
        }
        let rest = Array(arguments.dropFirst())
        do {
            switch sub {
            case "save": return try save(rest)
            case "inspect": return try inspect(rest)
            case "restore": return try restore(rest)
            default:
                printError("Unknown snapshot subcommand \"\(sub)\": use save, restore or inspect")
                return 1
            }
        } catch {
            printError("Error! \(error)")
            return 1
        }
    }

    private static func fileArgument(_ args: [String]) throws -> String {
        switch args.count {
        case 0: throw FlagError(description: "Missing FILE argument")
        case 1: return args[0]
        default: throw FlagError(description: "Too many arguments (expected 1, got \(args.count))")
        }
    }

    private static func save(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "snapshot save")
        APIFlags.define(on: flags)
        let file = try fileArgument(try flags.parse(arguments))
        // A server builds archives up to RaftReplicatorConfig.maxSnapshotBytes (1 GiB) plus
        // the archive's header and checksum; the default 64 MiB answer limit is for API calls.
        var client = try APIFlags.client(flags, maxResponseBodyBytes: RaftReplicatorConfig().maxSnapshotBytes + (1 << 20))
        let query = APIFlags.queryItems(flags)
        let response = try client.request(method: "GET", path: "/v1/snapshot" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
        guard response.status == 200 else {
            printError("Error saving snapshot: Unexpected response code: \(response.status) (\(String(decoding: response.body, as: UTF8.self)))")
            return 1
        }
        let info: SnapshotArchive.Info
        do {
            info = try SnapshotArchive.inspect(response.body)
        } catch {
            printError("Error verifying snapshot file: \(error)")
            return 1
        }
        // Written beside the target and renamed, so a failed save never leaves half a file.
        let temporary = file + ".\(ProcessInfo.processInfo.processIdentifier).tmp"
        do {
            try Data(response.body).write(to: URL(fileURLWithPath: temporary))
            if FileManager.default.fileExists(atPath: file) { try FileManager.default.removeItem(atPath: file) }
            try FileManager.default.moveItem(atPath: temporary, toPath: file)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            printError("Error writing snapshot file: \(error)")
            return 1
        }
        print("Saved and verified snapshot to index \(info.index)")
        return 0
    }

    private static func restore(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "snapshot restore")
        APIFlags.define(on: flags)
        let file = try fileArgument(try flags.parse(arguments))
        guard let data = FileManager.default.contents(atPath: file) else {
            printError("Error opening snapshot file: cannot read \(file)")
            return 1
        }
        var client = try APIFlags.client(flags)
        let response: HTTPClientResponse
        do {
            response = try client.request(method: "PUT", path: "/v1/snapshot", body: Array(data))
        } catch {
            printError("Error restoring snapshot: \(error)")
            return 1
        }
        guard response.status == 200 else {
            printError("Error restoring snapshot: Unexpected response code: \(response.status) (\(String(decoding: response.body, as: UTF8.self)))")
            return 1
        }
        print("Restored snapshot")
        return 0
    }

    private static func inspect(_ arguments: [String]) throws -> Int32 {
        let flags = FlagSet(command: "snapshot inspect")
        let file = try fileArgument(try flags.parse(arguments))
        guard let data = FileManager.default.contents(atPath: file) else {
            printError("Error opening snapshot file: cannot read \(file)")
            return 1
        }
        let info: SnapshotArchive.Info
        do {
            info = try SnapshotArchive.inspect(Array(data))
        } catch {
            printError("Error inspecting snapshot: \(error)")
            return 1
        }
        for (name, value) in [("ID", info.id), ("Size", "\(info.size)"), ("Index", "\(info.index)"),
                              ("Term", "\(info.term)"), ("Version", "\(info.version)")] {
            print(" " + name.padding(toLength: 13, withPad: " ", startingAt: 0) + value)
        }
        return 0
    }
}
