// Local clusters on 127.0.0.1 for a run: N `conclave agent -server -bootstrap-expect=N` processes
// (ports 0, bound ports read back), or N etcd members from Debian's etcd-server (free ports picked
// just before start). Each has fresh temp data dirs, and both are torn down by `stop()` or Cleanup.
import Foundation

public protocol BenchCluster: AnyObject {
    var system: System { get }
    /// The HTTP endpoints, one per server.
    var targets: [Target] { get }
    /// Index into `targets` of the current leader (polls until there is one).
    func leaderIndex(timeoutSeconds: Double) throws -> Int
    func stop()
}

public final class ConclaveCluster: BenchCluster {
    public let system = System.conclave
    public private(set) var targets: [Target] = []
    public private(set) var processes: [ChildProcess] = []
    /// Raft address ("127.0.0.1:port", the agent's gossip host and `port` tag) of each server.
    public private(set) var raftAddresses: [String] = []
    public let root: String
    /// Per server: its data dir, the arguments it was started with, and the bound HTTP, Raft and LAN
    /// ports, so `restart` can start it again on the same ports (peers keep its address).
    public private(set) var dataDirs: [String] = []
    private var arguments: [[String]] = []
    private var boundPorts: [(http: Int, raft: Int, lan: Int)] = []
    private let binary: String
    private let configFile: String?
    private let count: Int
    private let tag: String
    private var joinAddress: String?

    /// Starts `count` servers; the 2nd.. retry-join the first's LAN port. Waits until every server
    /// reports the same leader and `count` peers.
    public init(count: Int, binary: String, configFile: String?, log: (String) -> Void) throws {
        root = try makeTempDir("conclave")
        tag = String(UUID().uuidString.prefix(6)).lowercased()
        self.binary = binary
        self.configFile = configFile
        self.count = count
        for i in 1...count { try startServer(name: "s\(i)") }
        log("conclave: \(count) server(s) started (HTTP \(targets.map(\.description).joined(separator: ", ")); data and logs in \(root))")
        let started = Date()
        try poll("\(count) Conclave servers to agree on one leader and \(count) peers", seconds: 90) {
            let leaders = Set(targets.map { (controlJSON($0, "/v1/status/leader") as? String) ?? "" })
            guard leaders.count == 1, let leader = leaders.first, !leader.isEmpty else { return false }
            return targets.allSatisfy { Set((controlJSON($0, "/v1/status/peers") as? [String]) ?? []).count == count }
        }
        log(String(format: "conclave: leader elected, %d peers, %.1f s after the last start", count, Date().timeIntervalSince(started)))
    }

    /// Starts one more server (fresh data dir `<root>/<name>`, ports 0) that retry-joins s1; appended.
    /// Servers started after the cluster formed are plain `-server` (no -bootstrap-expect): Conclave
    /// does not yet check that a cluster exists before a bootstrap-expect bootstrap (README).
    @discardableResult
    public func startServer(name: String) throws -> Int {
        let late = processes.count >= count
        let dataDir = "\(root)/\(name)"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        var arguments = ["agent", "-server"] + (late ? [] : ["-bootstrap-expect", String(count)]) + ["-node", "bench-\(tag)-\(name)",
                         "-data-dir", dataDir, "-client", "127.0.0.1", "-bind", "127.0.0.1",
                         "-http-port", "0", "-dns-port", "-1", "-server-port", "0",
                         "-serf-lan-port", "0", "-serf-wan-port", "0", "-log-level", "info"]
        if let joinAddress { arguments += ["-retry-join", joinAddress, "-retry-interval", "1s"] }
        if let configFile { arguments += ["-config-file", configFile] }
        let process = try ChildProcess(name: "conclave \(name)", executable: binary, arguments: arguments,
                                       logPath: "\(root)/\(name).log")
        processes.append(process)
        let port = try process.waitForNumber(after: "Started HTTP server: address=127.0.0.1:", seconds: 60)
        let target = Target(host: "127.0.0.1", port: port)
        targets.append(target)
        let member = (controlJSON(target, "/v1/agent/self") as? [String: Any])?["Member"] as? [String: Any]
        let tags = member?["Tags"] as? [String: String]
        raftAddresses.append("127.0.0.1:\(tags?["port"] ?? "?")")
        guard let lanPort = member?["Port"] as? Int, let raftPort = Int(tags?["port"] ?? "") else {
            throw BenchError("no LAN or Raft port in /v1/agent/self of \(name)")
        }
        if joinAddress == nil { joinAddress = "127.0.0.1:\(lanPort)" }
        dataDirs.append(dataDir)
        self.arguments.append(arguments)
        boundPorts.append((port, raftPort, lanPort))
        return processes.count - 1
    }

    /// Stops server `index` (SIGTERM) and starts it again with the same data dir and the same
    /// HTTP, Raft and LAN ports. Returns once the process is started (not once it serves).
    public func restart(_ index: Int) throws {
        processes[index].stop()
        let ports = boundPorts[index]
        var arguments = self.arguments[index]
        for (flag, value) in [("-http-port", ports.http), ("-server-port", ports.raft), ("-serf-lan-port", ports.lan)] {
            if let i = arguments.firstIndex(of: flag) { arguments[i + 1] = String(value) }
        }
        let name = URL(fileURLWithPath: dataDirs[index]).lastPathComponent
        processes[index] = try ChildProcess(name: "conclave \(name)", executable: binary, arguments: arguments,
                                            logPath: "\(root)/\(name)-restart.log")
    }

    /// The leader's Raft address as one live server reports it ("" when none).
    public func reportedLeader(by index: Int) -> String {
        (controlJSON(targets[index], "/v1/status/leader") as? String) ?? ""
    }

    public func leaderIndex(timeoutSeconds: Double = 30) throws -> Int {
        var found: Int?
        try poll("a Conclave leader", seconds: timeoutSeconds) {
            for (i, process) in processes.enumerated() where process.isRunning {
                let leader = reportedLeader(by: i)
                if let index = raftAddresses.firstIndex(of: leader), processes[index].isRunning {
                    found = index
                    return true
                }
            }
            return false
        }
        return found!
    }

    public func stop() {
        for p in processes { p.stop() }
        if !Cleanup.shared.keepDirectories { try? FileManager.default.removeItem(atPath: root) }
    }
}

public final class EtcdCluster: BenchCluster {
    public let system = System.etcd
    public private(set) var targets: [Target] = []
    private var processes: [ChildProcess] = []
    /// etcd's member IDs (decimal strings from the gateway) by index, filled on the first leader lookup.
    private var memberIDs: [String?]
    private let root: String

    public static func findBinary() -> String? {
        for path in ["/usr/bin/etcd", "/usr/local/bin/etcd"] where FileManager.default.isExecutableFile(atPath: path) { return path }
        return nil
    }

    /// Installs Debian's etcd-server and etcd-client when etcd is missing (this machine allows apt).
    public static func ensureInstalled(log: (String) -> Void) throws -> String {
        if let path = findBinary() { return path }
        log("etcd: not found; installing Debian's etcd-server and etcd-client with apt-get")
        for arguments in [["update"], ["install", "-y", "etcd-server", "etcd-client"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/apt-get")
            process.arguments = arguments
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw BenchError("apt-get \(arguments.joined(separator: " ")) failed") }
        }
        guard let path = findBinary() else { throw BenchError("etcd still not found after apt-get install") }
        return path
    }

    public init(count: Int, binary: String, log: (String) -> Void) throws {
        root = try makeTempDir("etcd")
        memberIDs = Array(repeating: nil, count: count)
        var clientPorts: [Int] = []
        var peerPorts: [Int] = []
        var picked = Set<Int>()
        while clientPorts.count < count || peerPorts.count < count {
            let port = try freeLoopbackPort()
            guard picked.insert(port).inserted else { continue }
            if clientPorts.count < count { clientPorts.append(port) } else { peerPorts.append(port) }
        }
        let token = "bench-" + UUID().uuidString.prefix(8).lowercased()
        let initialCluster = (0..<count).map { "e\($0 + 1)=http://127.0.0.1:\(peerPorts[$0])" }.joined(separator: ",")
        for i in 0..<count {
            let name = "e\(i + 1)"
            // Defaults otherwise: fsync of the WAL before a write is acknowledged, as on any etcd.
            let arguments = ["--name", name, "--data-dir", "\(root)/\(name)",
                             "--listen-client-urls", "http://127.0.0.1:\(clientPorts[i])",
                             "--advertise-client-urls", "http://127.0.0.1:\(clientPorts[i])",
                             "--listen-peer-urls", "http://127.0.0.1:\(peerPorts[i])",
                             "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPorts[i])",
                             "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
                             "--initial-cluster-token", token, "--logger", "zap", "--log-outputs", "stderr"]
            processes.append(try ChildProcess(name: "etcd \(name)", executable: binary, arguments: arguments,
                                              logPath: "\(root)/\(name).log"))
            targets.append(Target(host: "127.0.0.1", port: clientPorts[i]))
        }
        log("etcd: \(count) member(s) started (client \(targets.map(\.description).joined(separator: ", ")); data and logs in \(root))")
        _ = try leaderIndex(timeoutSeconds: 60)
        log("etcd: leader elected")
    }

    /// `POST /v3/maintenance/status` on each member: `header.member_id` and `leader` (decimal strings).
    public func leaderIndex(timeoutSeconds: Double = 30) throws -> Int {
        var found: Int?
        try poll("an etcd leader", seconds: timeoutSeconds) {
            var leader: String?
            for (i, target) in targets.enumerated() where processes[i].isRunning {
                guard let status = controlJSON(target, "/v3/maintenance/status", method: "POST", body: Array("{}".utf8)) as? [String: Any] else { continue }
                if let header = status["header"] as? [String: Any], let id = header["member_id"] as? String { memberIDs[i] = id }
                if let l = status["leader"] as? String, l != "0" { leader = l }
            }
            guard let leader, let index = memberIDs.firstIndex(of: leader) else { return false }
            found = index
            return true
        }
        return found!
    }

    public func stop() {
        for p in processes { p.stop() }
        if !Cleanup.shared.keepDirectories { try? FileManager.default.removeItem(atPath: root) }
    }
}
