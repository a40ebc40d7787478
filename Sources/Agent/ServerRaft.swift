// A server's Raft side: the transport on bindAddr:ports.server, the RaftReplicator, and how
// the servers alive in the LAN pool become the Raft configuration, as Consul does
// (agent/consul/server_serf.go maybeBootstrap; leader.go reconcile of serf members).
import EventLoop
import Foundation
import Logging
import Metrics
import RaftCore
import Replication

/// Raft server IDs come from the node ID: the first 8 bytes of the node-id UUID, read
/// big-endian as a UInt64 (`0` is reserved by Raft for "no vote"; an ID whose first 8 bytes
/// are all zero becomes 1). Stable across restarts because the node ID is kept in the data dir.
enum RaftServerID {
    static func from(nodeID: String) -> NodeID? {
        guard let uuid = UUID(uuidString: nodeID) else { return nil }
        let b = uuid.uuid
        let value = [b.0, b.1, b.2, b.3, b.4, b.5, b.6, b.7].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return value == 0 ? 1 : value
    }
}

/// Consul's -bootstrap-expect decision, from the servers alive in the LAN pool.
enum BootstrapDecision: Equatable {
    /// Fewer than expected servers are alive.
    case wait(found: Int)
    /// A server's tags forbid bootstrapping (Consul logs the same and keeps waiting).
    case refuse(String)
    /// Bootstrap with exactly these voters (Raft ID → "host:serverPort").
    case bootstrap([NodeID: String])

    static func decide(expect: Int, datacenter: String, servers: [KnownServer]) -> BootstrapDecision {
        var voters: [NodeID: String] = [:]
        for server in servers where server.datacenter == datacenter {
            if server.bootstrap {
                return .refuse("Member \(server.name) has bootstrap mode. Expect disabled.")
            }
            if server.bootstrapExpect != expect {
                return .refuse("Member \(server.name) has a conflicting expect value. All nodes should expect the same number.")
            }
            guard let id = RaftServerID.from(nodeID: server.id), server.serverPort > 0 else { continue }
            voters[id] = "\(AgentGossip.host(of: server.gossipAddress)):\(server.serverPort)"
        }
        return voters.count >= expect ? .bootstrap(voters) : .wait(found: voters.count)
    }
}

/// Loop-confined.
final class ServerRaft {
    let loop: Loop
    let config: AgentConfig
    let raftID: NodeID
    let dataDir: String
    let transport: RaftTransport
    /// "host:port" the other servers reach this one at.
    let advertiseAddress: String
    private(set) var replicator: RaftReplicator?
    /// Where the replicator records its metrics (the agent's registry).
    let metricsFactory: any MetricsFactory
    /// Runs on the loop thread once the replicator exists (at once, or at bootstrap-expect).
    var onReplicatorStarted: ((RaftReplicator) -> Void)?
    private let logger = Logger(label: "agent.server.raft")
    private var servers: [KnownServer] = []
    /// Servers that left the LAN pool gracefully; the leader removes them from the configuration.
    private var departed: Set<NodeID> = []
    private var changeInFlight = false
    private var reconcileTimer: LoopTimer?
    static let reconcileIntervalMilliseconds: UInt64 = 1_000
    /// The pre-bootstrap peer check is under way (one at a time).
    private var bootstrapCheckInFlight = false
    /// A server did not answer the last check: the reconcile timer runs it again (only then,
    /// so a refusal is not logged every second).
    private var bootstrapCheckRetry = false
    private var closed = false
    /// Each server asked before bootstrapping must answer within this.
    static let bootstrapCheckTimeoutMilliseconds: UInt64 = 5_000

    /// Consul's raft_multiplier=1 timing: 50 ms ticks, so elections time out after 0.5–1 s;
    /// the pipelining limits from raft_max_inflight / raft_max_append_entries / raft_max_append_bytes.
    static func replicatorConfig(_ agent: AgentConfig) -> RaftReplicatorConfig {
        var config = RaftReplicatorConfig()
        config.tickIntervalMilliseconds = 50
        if let n = agent.raftMaxInflight { config.raft.maxInflightMessages = n }
        if let n = agent.raftMaxAppendEntries { config.raft.maxAppendEntries = n }
        if let n = agent.raftMaxAppendBytes { config.raft.maxAppendBytes = n }
        if let n = agent.raftMaxPendingProposals { config.maxPendingProposals = n }
        // An AppendEntries carries up to maxAppendBytes of payload plus 21 bytes per entry
        // (and one entry past the byte limit): twice the payload keeps every message sendable.
        let largestMessage = 2 * config.raft.maxAppendBytes + 64 * config.raft.maxAppendEntries + 4096
        config.transport.maxFrameBytes = max(config.transport.maxFrameBytes, largestMessage)
        config.snapshotThreshold = UInt64(agent.raftSnapshotThreshold)
        config.trailingLogs = UInt64(agent.raftTrailingLogs)
        config.snapshotIntervalMilliseconds = agent.raftSnapshotIntervalMs
        return config
    }

    /// Runs on the loop thread. Opens the log at once unless this is a fresh -bootstrap-expect
    /// server, which waits for its peers.
    init(loop: Loop, config: AgentConfig, nodeID: String, dataDir: String, metricsFactory: any MetricsFactory) throws {
        guard let raftID = RaftServerID.from(nodeID: nodeID) else { throw AgentError.startup("node ID \(nodeID) is not a UUID") }
        guard config.ports.server >= 0 else { throw AgentError.startup("a server needs its server port (-server-port must be >= 0)") }
        self.loop = loop
        self.config = config
        self.raftID = raftID
        self.dataDir = dataDir
        self.metricsFactory = metricsFactory
        do {
            transport = try RaftTransport(loop: loop, host: config.bindAddr, port: config.ports.server,
                                          config: Self.replicatorConfig(config).transport,
                                          logger: Logger(label: "agent.server.raft.transport"))
        } catch {
            throw AgentError.startup("cannot listen for servers on \(config.bindAddr):\(config.ports.server): \(error)")
        }
        advertiseAddress = "\(AgentGossip.advertiseHost(config)):\(transport.port)"
        let hasRaftState = FileManager.default.fileExists(atPath: DataLayout.logDirectory(dataDir))
        do {
            if config.bootstrap || config.dev {
                // Written only into an empty log: a restart recovers and never bootstraps again.
                try open(bootstrap: [raftID: advertiseAddress])
            } else if config.bootstrapExpect == 0 || hasRaftState {
                try open(bootstrap: nil)
            } else {
                logger.info("waiting for the expected number of servers before bootstrapping",
                            metadata: ["expect": "\(config.bootstrapExpect)"])
            }
        } catch {
            transport.close()
            throw AgentError.startup("cannot open storage in \(dataDir): \(error)")
        }
        let timer = LoopTimer(loop: loop)
        timer.start(afterMilliseconds: Self.reconcileIntervalMilliseconds,
                    repeatMilliseconds: Self.reconcileIntervalMilliseconds) { [weak self] in
            guard let self else { return }
            if self.replicator != nil {
                self.reconcile()
            } else if self.bootstrapCheckRetry {
                // Before bootstrap the timer retries a peer check that could not reach a server.
                self.bootstrapCheckRetry = false
                self.maybeBootstrap()
            }
        }
        reconcileTimer = timer
    }

    private func open(bootstrap: [NodeID: String]?) throws {
        let replicator = try RaftReplicator(id: raftID, loop: loop, dataDirectory: dataDir, transport: transport,
                                            bootstrap: bootstrap, advertiseAddress: advertiseAddress,
                                            config: Self.replicatorConfig(config), logger: logger,
                                            metricsFactory: metricsFactory)
        replicator.start()
        self.replicator = replicator
        onReplicatorStarted?(replicator)
    }

    /// The live-server set changed in the LAN pool.
    func serversChanged(_ servers: [KnownServer]) {
        self.servers = servers
        for server in servers { if let id = RaftServerID.from(nodeID: server.id) { departed.remove(id) } }
        if replicator == nil { maybeBootstrap() } else { reconcile() }
    }

    /// A server left the LAN pool gracefully (a failed one stays a voter, as in Consul).
    func serverLeft(nodeID: String) {
        guard let id = RaftServerID.from(nodeID: nodeID), id != raftID else { return }
        departed.insert(id)
        reconcile()
    }

    private func maybeBootstrap() {
        guard replicator == nil, config.bootstrapExpect > 0, !bootstrapCheckInFlight else { return }
        switch BootstrapDecision.decide(expect: config.bootstrapExpect, datacenter: config.datacenter, servers: servers) {
        case .wait: return
        case let .refuse(reason): logger.error("\(reason)")
        case let .bootstrap(voters):
            logger.info("Found expected number of peers, attempting bootstrap",
                        metadata: ["peers": "\(voters.values.sorted().joined(separator: ","))"])
            checkPeersBeforeBootstrap(voters)
        }
    }

    /// Consul's pre-bootstrap check: every other expected server is asked for its Raft peers.
    /// One that has peers other than exactly these voters belongs to a cluster formed without
    /// this server (it was started with -bootstrap-expect after the cluster formed):
    /// bootstrapping would make a second cluster, so it opens without a configuration and
    /// waits for the leader to add it. Unlike Consul, a server reporting exactly our voters
    /// does not stop the bootstrap: it is one of the servers starting together that got there
    /// first, and our bootstrap configuration is not a log entry the leader would replicate
    /// (it is the log's starting point, LMDBRaftLog.recover), so a server of the same set that
    /// skipped it would never learn the voters. Bootstrapping with the same voters is what it
    /// would have done a moment earlier. A server that does not answer means no decision: the
    /// reconcile timer runs the check again.
    private func checkPeersBeforeBootstrap(_ voters: [NodeID: String]) {
        let others = voters.filter { $0.key != raftID }
        guard !others.isEmpty else { bootstrap(voters); return }
        bootstrapCheckInFlight = true
        var remaining = others.count
        var existing: (server: String, peers: [String])?
        var unreachable: [String] = []
        for (_, address) in others.sorted(by: { $0.key < $1.key }) {
            PeerStatusProbe.query(loop: loop, address: address,
                                  timeoutMilliseconds: Self.bootstrapCheckTimeoutMilliseconds) { [weak self] outcome in
                switch outcome {
                case .peers(let peers):
                    if !peers.isEmpty, Set(peers) != Set(voters.values), existing == nil { existing = (address, peers) }
                case .failed(let reason):
                    unreachable.append(address)
                    self?.logger.warning("Failed to confirm peer status for server, will retry",
                                         metadata: ["server": "\(address)", "error": "\(reason)"])
                }
                remaining -= 1
                guard remaining == 0, let self else { return }
                self.bootstrapCheckInFlight = false
                guard self.replicator == nil, !self.closed else { return }
                if let existing {
                    self.logger.info("Existing Raft peers reported by server, disabling bootstrap mode",
                                        metadata: ["server": "\(existing.server)",
                                                   "peers": "\(existing.peers.joined(separator: ","))"])
                    do { try self.open(bootstrap: nil) } catch {
                        self.logger.error("cannot open storage", metadata: ["error": "\(error)"])
                    }
                } else if unreachable.isEmpty {
                    self.bootstrap(voters)
                } else {
                    self.bootstrapCheckRetry = true
                }
            }
        }
    }

    private func bootstrap(_ voters: [NodeID: String]) {
        do { try open(bootstrap: voters) } catch {
            logger.error("bootstrap failed: cannot open storage", metadata: ["error": "\(error)"])
        }
    }

    /// On the leader: removes departed servers, then adds live servers that are not voters
    /// yet (the replicator promotes them once caught up). One change at a time.
    private func reconcile() {
        guard let replicator, replicator.isLeader, !changeInFlight else { return }
        let configuration = replicator.configuration
        if let gone = departed.first(where: { configuration.isMember($0) && $0 != raftID }) {
            changeInFlight = true
            logger.info("removing server that left", metadata: ["id": "\(gone)"])
            replicator.removeServer(gone) { [weak self] result in
                self?.changeInFlight = false
                if case let .failure(error) = result {
                    self?.logger.warning("removing server failed", metadata: ["id": "\(gone)", "error": "\(error)"])
                } else {
                    self?.departed.remove(gone)
                }
            }
            return
        }
        for server in servers {
            guard let id = RaftServerID.from(nodeID: server.id), id != raftID, !configuration.isVoter(id),
                  !departed.contains(id), server.serverPort > 0 else { continue }
            let address = "\(AgentGossip.host(of: server.gossipAddress)):\(server.serverPort)"
            changeInFlight = true
            logger.info("adding server", metadata: ["id": "\(id)", "address": "\(address)", "node": "\(server.name)"])
            replicator.addServer(id, address: address) { [weak self] result in
                self?.changeInFlight = false
                if case let .failure(error) = result {
                    self?.logger.warning("adding server failed", metadata: ["id": "\(id)", "error": "\(error)"])
                }
            }
            return
        }
    }

    func close() {
        closed = true
        reconcileTimer?.close()
        reconcileTimer = nil
        if let replicator { replicator.close() } else { transport.close() }
        replicator = nil
    }
}
