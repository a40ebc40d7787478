// A client agent's side of RPC (frame format in RPCWire.swift): it keeps no Raft state, so
// requests for server-held state go to one server of the LAN pool over one multiplexed
// connection to its server port, as Consul's client agents do (agent/router/manager.go).
//
// Server choice and failover, following Consul's manager:
// - The list is the servers alive in the LAN pool (role=consul, our datacenter, address from
//   the gossip host and `port` tag). The first list is shuffled; servers that appear later are
//   appended; servers that leave it are dropped. The front server is the one used.
// - One connection at a time, to the front server. A connection that fails (connect error,
//   closed, protocol error) marks its server failed: if it is at the front, it is cycled to the
//   end. Its requests are retried once on the next server when they were not sent yet (still
//   queued while connecting) or are reads (GET/HEAD: safe to repeat, as Consul retries reads
//   on EOF); a write that was sent answers 500 "rpc error making call: …", since it may have
//   been applied.
// - Every rebalance interval the list is reshuffled. The interval is Consul's: at least
//   clientRPCMinReuseDuration (120 s) plus up to half of it of jitter, longer in big clusters
//   so the cluster makes at most 64 new connections per second per server
//   (newRebalanceConnsPerSecPerServer): LAN members / (servers × 64) seconds. When the front
//   server changes, the old connection drains (its parked blocking queries answer there) and
//   closes once empty; new requests go to the new front server.
// - No server known: 500 "No known Consul servers". Every attempt failed: 500 "rpc error …".
// - Timeouts as Consul's QueryOptions.Timeout: a blocking query (`?index` > 0) gets its wait
//   (default 5 min, at most 10) + wait/16 of jitter + the 7 s rpc_hold_timeout; other requests
//   60 s (rpc_client_timeout). A request past its timeout answers 500 and makes its server
//   the failed one.
import EventLoop
import Gossip
import HTTP
import Logging
import Replication

/// Which paths a client agent forwards to a server. Everything else (/v1/agent/*, events,
/// the keyring, metrics) is the agent's own. Add a server-backed area here and its paths work
/// from client agents.
enum ForwardedPaths {
    /// Paths under these prefixes.
    static let prefixes = ["/v1/kv/", "/v1/status/", "/v1/catalog/", "/v1/health/", "/v1/operator/raft/",
                           "/v1/session/", "/v1/txn/", "/v1/snapshot/"]
    /// Exact paths.
    static let exact: Set<String> = ["/v1/kv", "/v1/txn", "/v1/snapshot"]

    static func isForwarded(_ path: String) -> Bool {
        exact.contains(path) || prefixes.contains { path.hasPrefix($0) }
    }
}

struct RPCClientConfig {
    /// Consul's clientRPCMinReuseDuration: the least time one server is used before a rebalance.
    var minReuseMilliseconds: UInt64 = 120_000
    /// clientRPCJitterFraction: up to minReuse/2 is added.
    var jitterFraction: UInt64 = 2
    /// newRebalanceConnsPerSecPerServer.
    var rebalanceConnectionsPerSecondPerServer = 64
    /// rpc_client_timeout.
    var clientTimeoutMilliseconds: UInt64 = 60_000
    /// rpc_hold_timeout, added to a blocking query's wait.
    var holdMilliseconds: UInt64 = 7_000
    /// Consul's dial timeout for server connections.
    var connectTimeoutMilliseconds: UInt64 = 10_000
    /// Requests forwarded and not answered yet; more answer 429 (the server holds the same limit).
    var maxInFlight = 4_096
    /// Attempts per request (the first, then one retry on another server).
    var maxAttempts = 2
}

/// Loop-confined.
final class RPCClient {
    struct Server: Equatable {
        var name: String
        var address: String
    }

    private let loop: Loop
    let config: RPCClientConfig
    private let logger = Logger(label: "agent.client.rpc")
    /// The LAN pool's size, for the rebalance interval.
    var lanMemberCount: () -> Int = { 1 }
    private(set) var servers: [Server] = []
    private var active: Connection?
    private var draining: [ObjectIdentifier: Connection] = [:]
    private var calls: [UInt64: Call] = [:]
    private var nextID: UInt64 = 0
    private var rebalanceTimer: LoopTimer?
    private var closed = false
    /// When each server's last failure was logged at warning level (bounded by the server list).
    private var lastFailureWarning: [String: UInt64] = [:]
    static let failureWarningIntervalMilliseconds: UInt64 = 10_000

    /// Counters for tests and metrics.
    private(set) var failovers = 0
    private(set) var retries = 0

    init(loop: Loop, config: RPCClientConfig = RPCClientConfig()) {
        self.loop = loop
        self.config = config
    }

    /// The server new requests go to (nil when none is known).
    var currentServer: Server? { servers.first }
    var inFlightCount: Int { calls.count }

    // MARK: The server list

    /// The live servers of the LAN pool changed.
    func setServers(_ known: [KnownServer]) {
        let fresh = known.filter { $0.serverPort > 0 }.map {
            Server(name: $0.name, address: "\(AgentGossip.host(of: $0.gossipAddress)):\($0.serverPort)")
        }
        if servers.isEmpty {
            servers = fresh.shuffled()
            if !servers.isEmpty { scheduleRebalance() }
        } else {
            servers.removeAll { !fresh.contains($0) }
            lastFailureWarning = lastFailureWarning.filter { entry in servers.contains { $0.address == entry.key } }
            for server in fresh where !servers.contains(server) { servers.append(server) }
        }
        if let active, active.server != servers.first {
            // Our server left the pool (or a first list replaced it): finish there, move on.
            retire(active)
        }
        if servers.isEmpty {
            rebalanceTimer?.stop()
        }
    }

    private func scheduleRebalance() {
        if rebalanceTimer == nil { rebalanceTimer = LoopTimer(loop: loop) }
        rebalanceTimer?.start(afterMilliseconds: rebalanceIntervalMilliseconds()) { [weak self] in self?.rebalance() }
    }

    /// Consul's refreshServerRebalanceTimer: lib.RateScaledInterval(servers × 64/s,
    /// minReuse + stagger(minReuse/2), LAN members).
    func rebalanceIntervalMilliseconds() -> UInt64 {
        Self.rebalanceIntervalMilliseconds(config: config, servers: servers.count, lanMembers: lanMemberCount())
    }

    static func rebalanceIntervalMilliseconds(config: RPCClientConfig, servers: Int, lanMembers: Int) -> UInt64 {
        let low = config.minReuseMilliseconds + UInt64.random(in: 0...(config.minReuseMilliseconds / config.jitterFraction))
        let rate = max(1, servers * config.rebalanceConnectionsPerSecondPerServer)
        let scaled = UInt64(max(0, lanMembers)) * 1_000 / UInt64(rate)
        return max(low, scaled)
    }

    private func rebalance() {
        defer { if !servers.isEmpty { scheduleRebalance() } }
        guard servers.count > 1 else { return }
        servers.shuffle()
        if let active, active.server != servers.first {
            logger.debug("rpc: rebalanced servers", metadata: ["next": "\(servers[0].address)"])
            retire(active)
        }
    }

    /// Consul's NotifyFailedServer: a failed front server goes to the end of the list.
    private func serverFailed(_ server: Server) {
        if servers.count > 1, servers.first == server {
            servers.append(servers.removeFirst())
        }
    }

    /// Points the client at one server port "host:port" (a follower forwarding to the Raft
    /// leader, whose transport port is its server port); no-op when already there.
    func setServerAddress(_ address: String) {
        let server = Server(name: address, address: address)
        guard servers != [server] else { return }
        servers = [server]
        if let active, active.server != server { retire(active) }
    }

    // MARK: Forwarding

    /// Forwards `responder`'s request to a server and answers with the server's answer.
    func forward(_ responder: HTTPResponder) {
        guard !closed, !servers.isEmpty else {
            responder.respond(.text(status: 500, "No known Consul servers"))
            return
        }
        guard calls.count < config.maxInFlight else {
            responder.respond(.text(status: 429, "Too many requests in flight to the servers (limit \(config.maxInFlight))"))
            return
        }
        let request = responder.request
        var headers = HTTPHeaders()
        for name in RPCWire.forwardedRequestHeaders {
            for value in request.headers.values(name) { headers.add(name, value) }
        }
        nextID &+= 1
        let id = nextID
        let payload: [UInt8]
        do throws(RPCWireError) {
            payload = try RPCWire.encode(RPCRequest(id: id, method: request.method, target: Self.originForm(request.target),
                                                    headers: headers, body: request.body))
        } catch {
            responder.respond(.text(status: 400, "\(error)"))
            return
        }
        // The server port's frame decoder refuses larger frames (and would drop the connection).
        let serverFrameLimit = RaftTransportConfig().maxFrameBytes
        guard payload.count <= serverFrameLimit else {
            responder.respond(.text(status: 413, "Request body too large to forward to a server (\(payload.count) bytes, limit \(serverFrameLimit))"))
            return
        }
        let call = Call(id: id, responder: responder, payload: payload,
                        isRead: request.method == "GET" || request.method == "HEAD")
        calls[id] = call
        let timeout = timeoutMilliseconds(request)
        let timer = LoopTimer(loop: loop)
        timer.start(afterMilliseconds: timeout) { [weak self] in self?.timedOut(id, after: timeout) }
        call.timer = timer
        responder.onCancel { [weak self] in self?.callerGone(id) }
        send(call)
    }

    /// Absolute-form targets (`http://host/v1/kv/a`) are reduced to their path and query.
    static func originForm(_ target: String) -> String {
        if target.hasPrefix("/") { return target }
        guard let scheme = target.range(of: "://") else { return "/" + target }
        let rest = target[scheme.upperBound...]
        return rest.firstIndex(of: "/").map { String(rest[$0...]) } ?? "/"
    }

    /// Consul's QueryOptions.Timeout, never below rpc_client_timeout.
    func timeoutMilliseconds(_ request: HTTPRequest) -> UInt64 {
        guard let index = request.query.first("index").flatMap(UInt64.init), index > 0 else {
            return config.clientTimeoutMilliseconds
        }
        var wait = request.query.first("wait").flatMap(GoDuration.nanoseconds).map { $0 / 1_000_000 } ?? 0
        if wait == 0 { wait = HTTPAPI.defaultWaitMilliseconds }
        wait = min(wait, HTTPAPI.maxWaitMilliseconds)
        return max(config.clientTimeoutMilliseconds, wait + wait / 16 + config.holdMilliseconds)
    }

    private func send(_ call: Call) {
        call.attempts += 1
        call.sent = false
        var connection = activeConnection()
        if let tcp = connection.tcp, tcp.isClosed {
            // The server went away and its close has not been reported yet: writing would drop
            // the request while counting it as sent. Fail the connection now, use the next one.
            failed(connection, reason: "connection to \(connection.server.address) closed")
            connection = activeConnection()
        }
        call.connection = connection
        connection.calls.insert(call.id)
        if let tcp = connection.tcp {
            tcp.write(Framing.frame(call.payload))
            call.sent = true
        } else {
            connection.queued.append(call.id)
        }
    }

    private func activeConnection() -> Connection {
        if let active { return active }
        let connection = Connection(server: servers[0])
        active = connection
        connect(connection)
        return connection
    }

    private func connect(_ connection: Connection) {
        guard let (host, port) = parseHostPort(connection.server.address) else {
            failed(connection, reason: "bad server address \(connection.server.address)")
            return
        }
        let timer = LoopTimer(loop: loop)
        timer.start(afterMilliseconds: config.connectTimeoutMilliseconds) { [weak self, weak connection] in
            timer.close()
            guard let self, let connection, connection.tcp == nil, !connection.failed else { return }
            self.failed(connection, reason: "dial tcp \(connection.server.address): i/o timeout")
        }
        TCPConnection.connect(on: loop, host: host, port: port) { [weak self, weak connection] result in
            timer.close()
            guard let self, let connection, !connection.failed, !self.closed else {
                if case .success(let tcp) = result { tcp.closeNow() }
                return
            }
            switch result {
            case .failure(let error):
                self.failed(connection, reason: "failed to get conn: \(error)")
            case .success(let tcp):
                self.connected(connection, tcp)
            }
        }
    }

    private func connected(_ connection: Connection, _ tcp: TCPConnection) {
        connection.tcp = tcp
        // Once per connection (a rebalance makes one every few minutes): which server answers.
        logger.info("rpc: connected to server", metadata: ["server": "\(connection.server.name)", "address": "\(connection.server.address)"])
        tcp.setNoDelay(true)
        tcp.onRead = { [weak self, weak connection] bytes in
            guard let self, let connection else { return }
            self.received(bytes, on: connection)
        }
        tcp.onClose = { [weak self, weak connection] error in
            guard let self, let connection, !connection.failed else { return }
            self.failed(connection, reason: "connection to \(connection.server.address) closed: \(error.map { "\($0)" } ?? "EOF")")
        }
        tcp.startReading()
        var out = Framing.frame(RPCWire.hello())
        for id in connection.queued {
            guard let call = calls[id], call.connection === connection else { continue }
            out += Framing.frame(call.payload)
            call.sent = true
        }
        connection.queued = []
        tcp.write(out)
        if connection !== active { closeIfIdle(connection) }
    }

    private func received(_ bytes: [UInt8], on connection: Connection) {
        connection.decoder.feed(bytes)
        while !connection.failed {
            let payload: [UInt8]
            do throws(FrameError) {
                guard let next = try connection.decoder.next() else { return }
                payload = next
            } catch {
                failed(connection, reason: "rpc error: \(error)")
                return
            }
            guard case .response(let response)? = try? RPCWire.decode(payload) else {
                failed(connection, reason: "rpc error: undecodable frame from the server")
                return
            }
            // An answer to a request we gave up on (timed out, caller gone) is dropped.
            guard let call = calls[response.id], call.connection === connection else { continue }
            finish(call)
            call.responder.respond(HTTPResponse(status: response.status, headers: response.headers, body: response.body))
        }
    }

    /// Forgets `call` (answered, failed or abandoned) and closes a drained connection.
    private func finish(_ call: Call) {
        calls.removeValue(forKey: call.id)
        call.timer?.close()
        call.timer = nil
        if let connection = call.connection {
            connection.calls.remove(call.id)
            call.connection = nil
            if connection !== active { closeIfIdle(connection) }
        }
    }

    private func callerGone(_ id: UInt64) {
        guard let call = calls[id] else { return }
        if call.sent, let tcp = call.connection?.tcp { tcp.write(Framing.frame(RPCWire.cancel(id: id))) }
        finish(call)
    }

    private func timedOut(_ id: UInt64, after milliseconds: UInt64) {
        guard let call = calls[id] else { return }
        let connection = call.connection
        if call.sent, let tcp = connection?.tcp { tcp.write(Framing.frame(RPCWire.cancel(id: id))) }
        finish(call)
        call.responder.respond(.text(status: 500, "rpc error making call: timeout after \(milliseconds) ms waiting for server \(connection?.server.address ?? "?")"))
        // A server that does not answer in time is treated as failed: later requests go elsewhere.
        if let connection {
            serverFailed(connection.server)
            if connection === active { retire(connection) }
        }
    }

    /// Stops sending new requests on `connection`; it closes once its requests are answered.
    private func retire(_ connection: Connection) {
        if active === connection { active = nil }
        draining[ObjectIdentifier(connection)] = connection
        closeIfIdle(connection)
    }

    private func closeIfIdle(_ connection: Connection) {
        guard connection.calls.isEmpty, connection !== active else { return }
        draining.removeValue(forKey: ObjectIdentifier(connection))
        connection.failed = true  // closing on purpose: its onClose is not a failure
        connection.tcp?.close()
    }

    /// The connection broke: mark its server failed and retry or fail what it carried.
    private func failed(_ connection: Connection, reason: String) {
        guard !connection.failed else { return }
        connection.failed = true
        connection.tcp?.closeNow()
        if active === connection { active = nil }
        draining.removeValue(forKey: ObjectIdentifier(connection))
        if !closed {
            failovers += 1
            // At most one warning per server per interval: with a dead server, every request
            // would otherwise log one (each makes a connect attempt).
            let now = loop.nowMilliseconds
            let metadata: Logger.Metadata = ["server": "\(connection.server.name)", "address": "\(connection.server.address)",
                                             "error": "\(reason)"]
            if let last = lastFailureWarning[connection.server.address], now < last + Self.failureWarningIntervalMilliseconds {
                logger.debug("rpc: server failed, trying another", metadata: metadata)
            } else {
                lastFailureWarning[connection.server.address] = now
                logger.warning("rpc: server failed, trying another", metadata: metadata)
            }
            serverFailed(connection.server)
        }
        let affected = connection.calls.sorted().compactMap { calls[$0] }
        connection.calls = []
        connection.queued = []
        for call in affected where call.connection === connection {
            call.connection = nil
            if !closed, !servers.isEmpty, call.attempts < config.maxAttempts, !call.sent || call.isRead {
                retries += 1
                send(call)
            } else {
                finish(call)
                let message = call.sent ? "rpc error making call: \(reason)" : "rpc error getting client: \(reason)"
                call.responder.respond(.text(status: 500, message))
            }
        }
    }

    /// Closes every connection; requests in flight answer 500.
    func close() {
        closed = true
        rebalanceTimer?.close()
        rebalanceTimer = nil
        for connection in [active].compactMap({ $0 }) + Array(draining.values) {
            failed(connection, reason: "agent shutting down")
        }
    }

    // MARK: State

    private final class Call {
        let id: UInt64
        let responder: HTTPResponder
        let payload: [UInt8]
        let isRead: Bool
        var attempts = 0
        /// Written to a connected socket (else still queued while connecting, or not yet tried).
        var sent = false
        var timer: LoopTimer?
        weak var connection: Connection?

        init(id: UInt64, responder: HTTPResponder, payload: [UInt8], isRead: Bool) {
            self.id = id
            self.responder = responder
            self.payload = payload
            self.isRead = isRead
        }
    }

    private final class Connection {
        let server: Server
        /// Nil while connecting.
        var tcp: TCPConnection?
        var decoder = FrameDecoder(maxFrameBytes: RPCWire.maxResponseFrameBytes)
        /// Requests sent or queued here.
        var calls: Set<UInt64> = []
        /// Requests waiting for the connect, in order.
        var queued: [UInt64] = []
        /// Broken or closed on purpose: nothing more is sent or read.
        var failed = false

        init(server: Server) { self.server = server }
    }
}
