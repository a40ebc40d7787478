// The agent: owns the loop, the replicated log (servers run Raft), the gossip pools and the
// HTTP API, and starts and stops them in order. One per process.
import EventLoop
import Foundation
import Glibc
import HTTP
import Logging
import Replication

public enum AgentError: Error, CustomStringConvertible {
    case startup(String)
    public var description: String {
        switch self { case .startup(let message): return message }
    }
}

/// Thread use: `start`, `waitUntilStopped` and `shutdown` may be called from any thread
/// (start from one at a time); everything after start runs on the loop thread.
public final class Agent: @unchecked Sendable {
    public let config: AgentConfig
    private let logger: Logger
    private let loop: Loop
    private var serverRaft: ServerRaft?
    private var server: HTTPServer?
    private var api: HTTPAPI?
    private var gossip: AgentGossip?
    /// Servers: answers client agents' forwarded requests. Clients: forwards them.
    private var rpcServer: RPCServer?
    private var rpcClient: RPCClient?
    private var localServices: AgentLocalServices?
    /// Servers: the leader's catalog ↔ gossip reconcile (serfHealth), on a 1 s timer.
    private var catalogReconciler: CatalogReconciler?
    private var catalogReconcileTimer: LoopTimer?
    private var signals: [SignalWatcher] = []
    private var dataDir = ""
    private var removeDataDirOnExit = false
    private var lockFD: Int32 = -1
    private let portLock = NSLock()
    private var boundHTTPPort = 0
    private var stopping = false

    /// Where this agent's metrics are recorded and served from (/v1/agent/metrics).
    public let metrics: MetricsRegistry

    /// - Parameter metrics: the registry to record into; the `conclave` process passes
    ///   `MetricsRegistry.shared`, tests a registry of their own.
    public init(config: AgentConfig, logger: Logger, metrics: MetricsRegistry = MetricsRegistry()) throws {
        try config.validate()
        self.metrics = metrics
        Self.unblockShutdownSignals()
        self.config = config
        self.logger = logger
        do { loop = try Loop(name: "conclave-loop") } catch {
            throw AgentError.startup("cannot create the event loop: \(error)")
        }
    }

    /// A parent may start us with SIGINT/SIGTERM blocked (some process launchers do); the
    /// signals would then stay pending forever. Unblock them before any thread is created,
    /// since threads inherit the mask.
    private static func unblockShutdownSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// The HTTP port actually bound (differs from the configured one when that was 0).
    public var httpPort: Int {
        portLock.lock(); defer { portLock.unlock() }
        return boundHTTPPort
    }

    /// Opens storage (replaying anything not yet applied), then starts the loop with the
    /// listeners. Returns once the agent serves, or throws why it cannot.
    public func start() throws {
        try prepareDataDir()
        let nodeID = try loadOrCreateNodeID()
        printBanner(nodeID: nodeID)
        loop.start()
        let started = DispatchSemaphore(value: 0)
        let failure = StartupFailure()
        loop.execute { [self] in
            do {
                try self.startOnLoop(nodeID: nodeID)
            } catch {
                failure.set("\(error)")
            }
            started.signal()
        }
        started.wait()
        if failure.message == nil && !config.startJoin.isEmpty { joinAtStart(failure) }
        if failure.message == nil && config.server && (config.bootstrap || config.dev) { waitForOwnLeadership() }
        if let message = failure.message {
            shutdown()
            throw AgentError.startup(message)
        }
        logger.info("Consul-compatible agent running!", metadata: ["node": "\(config.nodeName)", "datacenter": "\(config.datacenter)"])
    }

    private func startOnLoop(nodeID: String) throws {
        // The Raft transport listens first: its bound port goes into the gossip `port` tag.
        if config.server {
            let serverRaft = try ServerRaft(loop: loop, config: config, nodeID: nodeID, dataDir: dataDir, metricsFactory: metrics)
            serverRaft.onReplicatorStarted = { [weak self] replicator in self?.api?.log = replicator }
            self.serverRaft = serverRaft
        }
        let gossip: AgentGossip
        do {
            gossip = try AgentGossip(loop: loop, config: config, nodeID: nodeID, dataDir: dataDir,
                                     serverPort: serverRaft?.transport.port ?? 0)
        } catch {
            serverRaft?.close()
            throw error
        }
        self.gossip = gossip
        gossip.onServerLeft = { [weak self] id in self?.serverRaft?.serverLeft(nodeID: id) }
        gossip.onServersChanged = { [weak self] servers in
            guard let self else { return }
            let callback = self.serversLock.withLock { () -> (@Sendable ([KnownServer]) -> Void)? in
                self.liveServerSnapshot = servers
                return self.serversChanged
            }
            self.serverRaft?.serversChanged(servers)
            self.rpcClient?.setServers(servers)
            callback?(servers)
        }
        gossip.refreshServersNow()
        portLock.withLock { boundSerfPorts = (gossip.lanPort, gossip.wanPort) }
        let api = HTTPAPI(config: config, nodeID: nodeID, loop: loop, logger: Logger(label: "agent.http"),
                          requestLeave: { [weak self] in self?.leaveSoon() })
        api.serverPort = serverRaft?.transport.port ?? config.ports.server
        api.log = serverRaft?.replicator
        api.gossip = gossip
        api.metrics = metrics
        gossip.onUserEvent = { [weak api] in api?.blocking.notifyUserEvent() }
        self.api = api
        startRPC(api: api, gossip: gossip)
        if config.server && config.reconcileMembersIntoCatalog { startCatalogReconcile(gossip: gossip) }
        let localServices = AgentLocalServices(loop: loop, config: config, nodeID: nodeID, dataDir: dataDir,
                                               advertiseAddress: gossip.lan.map { AgentGossip.host(of: $0.advertiseAddress) } ?? config.bindAddr)
        localServices.clusterSize = { [weak gossip] in max(1, gossip?.lan?.members.count ?? 1) }
        try localServices.load(config: config)
        api.localState = localServices.state
        gossip.localServices = { [weak state = localServices.state] in
            state?.services.values.map { ($0.name, $0.tags) } ?? []
        }
        self.localServices = localServices
        // Anti-entropy reaches the catalog through the agent's own API: served here on a
        // server, forwarded over RPC to a server on a client.
        localServices.connect(catalogCall: api.internalCaller)
        if config.ports.http >= 0 {
            var httpConfig = HTTPServerConfig()
            httpConfig.limits.maxHeaderBytes = config.httpMaxHeaderBytes
            // The largest body any endpoint takes is a KV value: larger ones get 413 from
            // the parser as soon as Content-Length says so, before they are buffered.
            httpConfig.limits.maxBodyBytes = config.kvMaxValueSizeBytes
            httpConfig.limits.largerBodyPaths["/v1/snapshot"] = HTTPAPI.maxRestoreBodyBytes
            do {
                let server = try HTTPServer(loop: loop, host: config.clientAddr, port: config.ports.http,
                                            config: httpConfig, logger: Logger(label: "agent.http")) { responder in
                    api.handle(responder)
                }
                self.server = server
                api.httpPort = server.localPort
                portLock.lock(); boundHTTPPort = server.localPort; portLock.unlock()
                Logger(label: "agent.http").info("Started HTTP server",
                    metadata: ["address": "\(config.clientAddr):\(server.localPort)", "network": "tcp"])
            } catch {
                throw AgentError.startup("cannot start the HTTP server on \(config.clientAddr):\(config.ports.http): \(error)")
            }
        }
        for signal in [SIGINT, SIGTERM] {
            signals.append(try SignalWatcher(loop: loop, signal: signal) { [weak self] in
                self?.logger.info("Caught signal, shutting down", metadata: ["signal": "\(signal == SIGINT ? "interrupt" : "terminated")"])
                self?.shutdown()
            })
        }
        loop.addShutdownHook { [weak self] in self?.closeOnLoop() }
        gossip.startRetryJoin()
    }

    /// Servers answer client agents' RPC on their server port; clients forward to the servers
    /// of the LAN pool (RPCServer.swift, RPCClient.swift).
    /// Consul reconciles on every member event and every 60 s; a 1 s pass that writes only
    /// differences gives the same result with one code path (a steady cluster proposes nothing).
    private func startCatalogReconcile(gossip: AgentGossip) {
        let reconciler = CatalogReconciler(datacenter: config.datacenter, logger: Logger(label: "agent.leader"))
        let timer = LoopTimer(loop: loop)
        timer.start(afterMilliseconds: 200, repeatMilliseconds: 1_000) { [weak self, weak gossip] in
            guard let self, let gossip, let replicator = self.serverRaft?.replicator, replicator.isLeader,
                  let lan = gossip.lan else { return }
            reconciler.reconcile(members: lan.members, log: replicator)
        }
        catalogReconciler = reconciler
        catalogReconcileTimer = timer
    }

    private func startRPC(api: HTTPAPI, gossip: AgentGossip) {
        if let serverRaft {
            var rpcConfig = RPCServerConfig()
            rpcConfig.maxRequestFrameBytes = RPCWire.maxRequestFrameBytes(bodyLimit: max(config.kvMaxValueSizeBytes, HTTPAPI.maxForwardedRestoreBodyBytes))
            let rpcServer = RPCServer(loop: loop, config: rpcConfig) { [weak api] responder in
                if let api { api.handle(responder) } else { responder.respond(.text(status: 500, "agent shutting down")) }
            }
            serverRaft.transport.streamHandlers[StreamKind.clientRPC] = { [weak rpcServer] connection, first, decoder in
                if let rpcServer { rpcServer.accept(connection, firstFrame: first, decoder: decoder) } else { connection.closeNow() }
            }
            self.rpcServer = rpcServer
        } else {
            let rpcClient = RPCClient(loop: loop)
            rpcClient.lanMemberCount = { [weak gossip] in gossip?.lan?.members.count ?? 1 }
            rpcClient.setServers(gossip.liveServers)
            api.rpcClient = rpcClient
            self.rpcClient = rpcClient
        }
    }

    /// Runs a request through the agent's HTTP API from any thread (see HTTPAPI.internalCall):
    /// served locally on a server, forwarded to a server on a client agent. `completion`
    /// runs on the loop thread.
    public func internalCall(method: String, pathAndQuery: String, body: [UInt8],
                             completion: @escaping @Sendable (Int, [UInt8]) -> Void) {
        loop.execute { [weak self] in
            guard let api = self?.api else { completion(503, Array("agent not running".utf8)); return }
            api.internalCall(method: method, pathAndQuery: pathAndQuery, body: body, completion: completion)
        }
    }

    /// Blocking queries parked on this agent now (tests check that a gone client frees its own).
    var parkedQueryCount: Int {
        let count = Locked(0)
        let done = DispatchSemaphore(value: 0)
        loop.execute { [weak self] in
            count.value = self?.api?.blocking.count ?? 0
            done.signal()
        }
        _ = done.wait(timeout: .now() + 10)
        return count.value
    }

    /// Consul's -join / start_join: the agent does not start unless one address answers.
    /// Bounded by the gossip stream timeout.
    private func joinAtStart(_ failure: StartupFailure) {
        let joined = DispatchSemaphore(value: 0)
        let addresses = config.startJoin
        loop.execute { [self] in
            guard let gossip else { failure.set("gossip is not running"); joined.signal(); return }
            gossip.join(addresses, wan: false) { count, error in
                if count == 0 { failure.set("Failed to join \(addresses.joined(separator: ", ")): \(error ?? "no agent answered")") }
                joined.signal()
            }
        }
        joined.wait()
    }

    /// ANTI-ENTROPY HOOK: how this agent's services and checks reach the catalog (see
    /// `AntiEntropy`). Any thread; `call` itself runs on the loop thread and must complete there.
    /// Starts a full sync at once (Consul syncs fully when it finds a server), then partial syncs
    /// on each local change and full ones on the scaled, jittered interval.
    func connectAntiEntropy(_ call: @escaping CatalogCall) {
        let box = LoopBox(call)
        loop.execute { [weak self] in self?.localServices?.connect(catalogCall: box.value) }
    }

    private let serversLock = NSLock()
    private var liveServerSnapshot: [KnownServer] = []

    /// Servers seen alive in the LAN pool (members tagged role=consul in our datacenter),
    /// ourselves included. Any thread. Raft will bootstrap from this set.
    public var liveServers: [KnownServer] { serversLock.withLock { liveServerSnapshot } }

    /// Runs on the loop thread after every change of `liveServers`; set before `start()`.
    public var onLiveServersChanged: (@Sendable ([KnownServer]) -> Void)? {
        get { serversLock.withLock { serversChanged } }
        set { serversLock.withLock { serversChanged = newValue } }
    }
    private var serversChanged: (@Sendable ([KnownServer]) -> Void)?

    /// The gossip ports actually bound (0 when disabled); differ from the config when it said 0.
    public var serfLANPort: Int { portLock.withLock { boundSerfPorts.lan } }
    public var serfWANPort: Int { portLock.withLock { boundSerfPorts.wan } }
    private var boundSerfPorts = (lan: 0, wan: 0)

    /// Leaves the gossip pools (broadcast, bounded wait for propagation); answers already
    /// queued get a moment to flush; then the agent stops.
    private func leaveSoon() {
        let finish = { [weak self] in
            guard let self else { return }
            let timer = LoopTimer(loop: self.loop)
            timer.start(afterMilliseconds: 50) { [weak self] in
                timer.close()
                self?.logger.info("agent left, shutting down")
                self?.shutdown()
            }
        }
        if let gossip { gossip.leave(completion: finish) } else { finish() }
    }

    /// Runs on the loop thread as the loop stops: listeners first, then parked queries,
    /// then the log (which finishes the batch on disk).
    private func closeOnLoop() {
        catalogReconcileTimer?.close()
        catalogReconcileTimer = nil
        for watcher in signals { watcher.close() }
        signals = []
        rpcClient?.close()
        api?.leaderRPC?.close()
        rpcServer?.close()
        api?.blocking.wakeAll()
        localServices?.close()
        gossip?.close()
        server?.close()
        server = nil
        serverRaft?.close()
        serverRaft = nil
    }

    /// A server that bootstrapped alone elects itself within one election timeout; wait for
    /// that (bounded) so the agent answers writes as soon as `start` returns.
    private func waitForOwnLeadership() {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let led = DispatchSemaphore(value: 0)
            let known = StartupFailure()
            loop.execute { [self] in
                if self.serverRaft?.replicator?.knownLeader == true { known.set("yes") }
                led.signal()
            }
            _ = led.wait(timeout: .now() + 1)
            if known.message != nil { return }
            usleep(10_000)
        }
        logger.warning("no Raft leader elected yet; writes answer 'No cluster leader' until one is")
    }

    /// Stops the agent; safe from any thread and more than once.
    public func shutdown() {
        portLock.lock()
        let already = stopping
        stopping = true
        portLock.unlock()
        guard !already else { return }
        loop.shutdown()
        if !loop.isInLoopThread { finishShutdown() }
    }

    public func waitUntilStopped() {
        loop.waitUntilStopped()
        finishShutdown()
    }

    private let finishLock = NSLock()
    private var finished = false

    private func finishShutdown() {
        finishLock.lock(); defer { finishLock.unlock() }
        guard !finished else { return }
        finished = true
        if lockFD >= 0 { close(lockFD); lockFD = -1 }
        if removeDataDirOnExit { try? FileManager.default.removeItem(atPath: dataDir) }
        logger.info("shutdown complete")
    }

    // MARK: Data directory

    private func prepareDataDir() throws {
        if let configured = config.dataDir, !configured.isEmpty {
            dataDir = configured
        } else {
            var template = Array((NSTemporaryDirectory() + "/conclave-dev-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw AgentError.startup("cannot create a temporary data dir: \(String(cString: strerror(errno)))")
            }
            dataDir = String(cString: made)
            removeDataDirOnExit = true
        }
        do {
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        } catch {
            throw AgentError.startup("cannot create data dir \(dataDir): \(error.localizedDescription)")
        }
        // Two agents on one data dir would both write the log: refuse the second.
        let lockPath = dataDir + "/agent.lock"
        lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else {
            throw AgentError.startup("cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            close(lockFD); lockFD = -1
            throw AgentError.startup("data dir \(dataDir) is in use by another agent")
        }
    }

    /// Consul keeps a node ID in `<data-dir>/node-id` so it survives restarts.
    private func loadOrCreateNodeID() throws -> String {
        let path = dataDir + "/node-id"
        if let existing = try? String(contentsOfFile: path, encoding: .utf8) {
            let trimmed = existing.trimmingCharacters(in: .whitespacesAndNewlines)
            if UUID(uuidString: trimmed) != nil { return trimmed.lowercased() }
            throw AgentError.startup("\(path) does not hold a UUID: \"\(trimmed)\"")
        }
        let id = UUID().uuidString.lowercased()
        do { try id.write(toFile: path, atomically: true, encoding: .utf8) } catch {
            throw AgentError.startup("cannot write \(path): \(error.localizedDescription)")
        }
        return id
    }

    private func printBanner(nodeID: String) {
        let lines = [
            "==> Starting Conclave agent...",
            "              Version: '\(ConclaveVersion.version)'",
            "              Node ID: '\(nodeID)'",
            "            Node name: '\(config.nodeName)'",
            "           Datacenter: '\(config.datacenter)'",
            "               Server: \(config.server) (Bootstrap: \(config.bootstrap || config.dev))",
            "          Client Addr: [\(config.clientAddr)] (HTTP: \(config.ports.http), DNS: \(config.ports.dns))",
            "         Cluster Addr: \(config.bindAddr) (LAN: \(config.ports.serfLAN), WAN: \(config.ports.serfWAN))",
            "             Data Dir: \(dataDir)\(removeDataDirOnExit ? " (temporary, removed on exit)" : "")",
            "",
            "==> Log data will now stream in as it occurs:",
            "",
        ]
        let text = lines.joined(separator: "\n") + "\n"
        text.utf8CString.withUnsafeBufferPointer { buffer in
            _ = Glibc.write(STDOUT_FILENO, buffer.baseAddress, buffer.count - 1)
        }
    }
}

/// A value written on the loop thread before a semaphore signal and read after the wait.
private final class Locked<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

private final class StartupFailure: @unchecked Sendable {
    // Written on the loop thread before the semaphore signal, read after the wait.
    var message: String?
    func set(_ message: String) { self.message = message }
}
