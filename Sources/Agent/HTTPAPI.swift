// Routes Consul's HTTP API paths to endpoint handlers and adds what every read carries:
// the `X-Consul-*` headers and blocking-query support.
import EventLoop
import HTTP
import Logging
import Replication
import StateStore

/// What the endpoints need from the agent around them. Loop-confined.
final class HTTPAPI {
    let config: AgentConfig
    let nodeID: String
    let loop: Loop
    /// The replicated log; nil on clients and on a -bootstrap-expect server still waiting for
    /// its peers (its KV and status answers then say no leader is known).
    var log: (any ReplicatedLog)? {
        didSet {
            log?.onApplied = { [weak self] batch in
                self?.blocking.notify(changedKeys: batch.changedKeys)
                self?.blocking.notify(catalogTables: batch.changedCatalogTables, serviceNames: batch.changedServiceNames)
            }
        }
    }
    let blocking: BlockingQueries
    let logger: Logger
    let startedAt: UInt64
    /// Asks the agent to leave and stop (PUT /v1/agent/leave).
    let requestLeave: () -> Void
    var httpPort = 0
    /// The bound Raft port (servers).
    var serverPort = 0
    /// The agent's gossip pools (nil only in agents built without them).
    var gossip: AgentGossip?
    /// Client agents: the connection to the servers that server-held paths are forwarded to.
    var rpcClient: RPCClient?
    /// Servers: forwards a snapshot restore from a follower to the leader's server port.
    var leaderRPC: RPCClient?
    /// What /v1/agent/metrics serves.
    var metrics: MetricsRegistry?
    /// The agent's local services and checks (/v1/agent/service*, /v1/agent/check*).
    var localState: LocalState?

    init(config: AgentConfig, nodeID: String, loop: Loop, logger: Logger, requestLeave: @escaping () -> Void) {
        self.config = config
        self.nodeID = nodeID
        self.loop = loop
        self.blocking = BlockingQueries(loop: loop)
        self.logger = logger
        self.startedAt = loop.nowMilliseconds
        self.requestLeave = requestLeave
    }

    func handle(_ responder: HTTPResponder) {
        let request = responder.request
        let path = request.path
        logger.debug("request", metadata: ["method": "\(request.method)", "url": "\(request.target)"])
        if !config.server && ForwardedPaths.isForwarded(path) {
            // A client agent keeps no Raft state: a server answers (RPCClient.swift).
            forwardToServer(responder)
        } else if path.hasPrefix("/v1/kv/") || path == "/v1/kv" {
            handleKV(responder)
        } else if path.hasPrefix("/v1/status/") {
            handleStatus(responder)
        } else if path.hasPrefix("/v1/operator/raft/") {
            handleOperatorRaft(responder)
        } else if path == "/v1/snapshot" {
            handleSnapshot(responder)
        } else if path == "/v1/operator/keyring" {
            handleOperatorKeyring(responder)
        } else if path.hasPrefix("/v1/catalog/") {
            handleCatalog(responder)
        } else if path.hasPrefix("/v1/health/") {
            handleHealth(responder)
        } else if path.hasPrefix("/v1/event/") {
            handleEvent(responder)
        } else if path.hasPrefix("/v1/agent/") {
            handleAgent(responder)
        } else if path == "/" || path == "/ui" || path.hasPrefix("/ui/") {
            guard allow(responder, ["GET", "HEAD"]) else { return }
            // Consul redirects to its web UI here; we have none, but clients probe this path.
            responder.respond(.text(status: 200, "Conclave Agent: the web UI is not part of this build. The HTTP API is under /v1/."))
        } else {
            responder.respond(.text(status: 404, "404 page not found"))
        }
    }

    /// Answers 405 and returns false unless the method is one of `methods`.
    func allow(_ responder: HTTPResponder, _ methods: [String]) -> Bool {
        if methods.contains(responder.request.method) { return true }
        var response = HTTPResponse.text(status: 405, "method \(responder.request.method) not allowed")
        response.headers.add("Allow", methods.joined(separator: ", "))
        responder.respond(response)
        return false
    }

    // MARK: Query options shared by reads

    struct QueryOptions {
        var minIndex: UInt64 = 0
        var waitMilliseconds: UInt64 = 0
        var consistency = "leader"
    }

    static let defaultWaitMilliseconds: UInt64 = 5 * 60 * 1000
    static let maxWaitMilliseconds: UInt64 = 10 * 60 * 1000

    /// One datacenter per agent for now (WAN forwarding comes with multi-DC work): `?dc=` naming
    /// another answers Consul's `500 No path to datacenter`. Returns false after answering.
    func inLocalDatacenter(_ responder: HTTPResponder) -> Bool {
        guard let dc = responder.request.query.first("dc"), !dc.isEmpty, dc != config.datacenter else { return true }
        responder.respond(.text(status: 500, "No path to datacenter"))
        return false
    }

    /// Parses `dc`, `index`, `wait`, `stale`, `consistent`. Answers the error itself and
    /// returns nil when they are wrong.
    func queryOptions(_ responder: HTTPResponder) -> QueryOptions? {
        let query = responder.request.query
        var options = QueryOptions()
        guard inLocalDatacenter(responder) else { return nil }
        if query.has("stale") && query.has("consistent") {
            responder.respond(.text(status: 400, "Cannot specify ?stale with ?consistent, conflicting semantics."))
            return nil
        }
        if query.has("stale") { options.consistency = "stale" }
        if query.has("consistent") { options.consistency = "consistent" }
        if let indexText = query.first("index"), !indexText.isEmpty {
            guard let index = UInt64(indexText) else {
                responder.respond(.text(status: 400, "Invalid index"))
                return nil
            }
            options.minIndex = index
        }
        if let waitText = query.first("wait"), !waitText.isEmpty {
            guard let nanos = GoDuration.nanoseconds(waitText) else {
                responder.respond(.text(status: 400, "Invalid wait time"))
                return nil
            }
            options.waitMilliseconds = nanos / 1_000_000
        }
        return options
    }

    /// Runs a read, and if the client passed `?index=N` and nothing in `scope` changed past
    /// N yet, parks it until something does or the wait ends (Consul: default 5 minutes,
    /// at most 10, plus up to wait/16 of jitter so watchers do not all wake together).
    /// `replicatedState`: the read serves the Raft state store, so the default mode first
    /// catches up with the leader's commit index (agent-local reads such as events do not).
    func blockingRead(_ responder: HTTPResponder, _ options: QueryOptions, scope: WatchScope,
                      replicatedState: Bool = false,
                      changed: @escaping (_ current: UInt64, _ client: UInt64) -> Bool = { $0 > $1 },
                      run: @escaping () -> (index: UInt64, response: HTTPResponse)) {
        var wait = options.waitMilliseconds == 0 ? Self.defaultWaitMilliseconds : options.waitMilliseconds
        wait = min(wait, Self.maxWaitMilliseconds)
        wait += UInt64.random(in: 0...(wait / 16))
        let deadline = loop.nowMilliseconds + wait
        let afterBarrier: (Result<UInt64, RaftCommitError>) -> Void = { [weak self] result in
            switch result {
            case .success: attempt()
            case .failure(let error): self?.respondCommitError(responder, error)
            }
        }
        if options.consistency == "consistent" || (replicatedState && options.consistency != "stale") {
            // `consistent` is linearizable: confirm the leadership and apply up to its commit
            // index first. The default mode trusts the leader: apply up to the commit index it
            // reports (Consul serves it on the leader; we catch up instead of proxying).
            let consistent = options.consistency == "consistent"
            holdForLeader({ [weak self] (done: @escaping (Result<UInt64, RaftCommitError>) -> Void) in
                guard let log = self?.log else { done(.failure(.notLeader(leaderAddress: nil))); return }
                if consistent { log.readBarrier(completion: done) } else { log.leaderReadBarrier(completion: done) }
            }, completion: afterBarrier)
        } else if replicatedState, let log {
            // Stale: whatever this server has, but at least every write it answered (the state
            // store commits applies in batches; RaftReplicatorConfig.stateCommitDelayMilliseconds).
            log.localReadBarrier(completion: afterBarrier)
        } else {
            attempt()
        }

        func attempt() {
            let result = run()
            let now = loop.nowMilliseconds
            if options.minIndex == 0 || changed(result.index, options.minIndex) || now >= deadline || responder.isCancelled {
                respond(result)
                return
            }
            let token = blocking.parkCancellable(scope: scope, timeoutMilliseconds: deadline - now) {
                attempt()
            }
            guard let token else { respond(result); return }
            // A client that goes away (HTTP connection or RPC caller) frees its watcher now.
            responder.onCancel { [weak blocking] in blocking?.cancel(token) }
        }

        func respond(_ result: (index: UInt64, response: HTTPResponse)) {
            var response = result.response
            addQueryMeta(&response, index: result.index, consistency: options.consistency)
            responder.respond(response)
        }
    }

    func addQueryMeta(_ response: inout HTTPResponse, index: UInt64, consistency: String) {
        // Consul never returns index 0: clients treat 0 as "no blocking".
        response.headers.add("X-Consul-Index", String(max(index, 1)))
        response.headers.add("X-Consul-KnownLeader", String(log?.knownLeader ?? false))
        // Consul: time since the answering server last heard from the leader; only a stale
        // read is answered without the leader's involvement, every other mode reports 0.
        let lastContact = consistency == "stale" ? (log?.millisecondsSinceLeaderContact ?? 0) : 0
        response.headers.add("X-Consul-LastContact", String(lastContact))
        response.headers.add("X-Consul-Effective-Consistency", consistency)
    }

    /// Consul's rpc_hold_timeout: while no leader is known, a request is retried for up to
    /// 7 s before it fails with "No cluster leader" (agent/consul/rpc.go).
    static let leaderHoldMilliseconds: UInt64 = 7_000
    static let leaderRetryMilliseconds: UInt64 = 100

    /// Runs `operation`, retrying it while it fails for want of a leader, within the hold time.
    func holdForLeader<T>(_ operation: @escaping (@escaping (Result<T, RaftCommitError>) -> Void) -> Void,
                          completion: @escaping (Result<T, RaftCommitError>) -> Void) {
        let deadline = loop.nowMilliseconds + Self.leaderHoldMilliseconds
        let loop = self.loop
        func attempt() {
            operation { result in
                switch result {
                case .failure(.notLeader(nil)), .failure(.leadershipTransferInProgress):
                    guard loop.nowMilliseconds + Self.leaderRetryMilliseconds < deadline else { completion(result); return }
                    let timer = LoopTimer(loop: loop)
                    timer.start(afterMilliseconds: Self.leaderRetryMilliseconds) {
                        timer.close()
                        attempt()
                    }
                default:
                    completion(result)
                }
            }
        }
        attempt()
    }

    /// Consul's answers: no leader → 500 "No cluster leader"; too busy → 429; else 500 with why.
    func respondCommitError(_ responder: HTTPResponder, _ error: RaftCommitError) {
        switch error {
        case .notLeader, .leadershipTransferInProgress:
            responder.respond(.text(status: 500, "No cluster leader"))
        case .overloaded:
            responder.respond(.text(status: 429, error.description))
        default:
            internalError(responder, error)
        }
    }

    /// Internal failures answer 500 with the reason; they never take the agent down.
    func internalError(_ responder: HTTPResponder, _ error: Error) {
        logger.error("request failed", metadata: ["url": "\(responder.request.target)", "error": "\(error)"])
        responder.respond(.text(status: 500, "\(error)"))
    }
}
