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
    let log: SingleNodeLog
    let blocking: BlockingQueries
    let logger: Logger
    let startedAt: UInt64
    /// Asks the agent to leave and stop (PUT /v1/agent/leave).
    let requestLeave: () -> Void
    var httpPort = 0
    /// The agent's gossip pools (nil only in agents built without them).
    var gossip: AgentGossip?

    init(config: AgentConfig, nodeID: String, loop: Loop, log: SingleNodeLog, logger: Logger,
         requestLeave: @escaping () -> Void) {
        self.config = config
        self.nodeID = nodeID
        self.loop = loop
        self.log = log
        self.blocking = BlockingQueries(loop: loop)
        self.logger = logger
        self.startedAt = loop.nowMilliseconds
        self.requestLeave = requestLeave
        log.onApplied = { [weak self] batch in self?.blocking.notify(changedKeys: batch.changedKeys) }
    }

    func handle(_ responder: HTTPResponder) {
        let request = responder.request
        let path = request.path
        logger.debug("request", metadata: ["method": "\(request.method)", "url": "\(request.target)"])
        if !config.server && (path.hasPrefix("/v1/kv/") || path == "/v1/kv" || path.hasPrefix("/v1/status/")) {
            // A client agent forwards these to a server over RPC in Consul. Forwarding is not
            // built yet (a later issue), so clients answer as Consul does with no server known.
            responder.respond(.text(status: 500, "No known Consul servers"))
        } else if path.hasPrefix("/v1/kv/") || path == "/v1/kv" {
            handleKV(responder)
        } else if path.hasPrefix("/v1/status/") {
            handleStatus(responder)
        } else if path == "/v1/operator/keyring" {
            handleOperatorKeyring(responder)
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

    /// Parses `dc`, `index`, `wait`, `stale`, `consistent`. Answers the error itself and
    /// returns nil when they are wrong.
    func queryOptions(_ responder: HTTPResponder) -> QueryOptions? {
        let query = responder.request.query
        var options = QueryOptions()
        if let dc = query.first("dc"), !dc.isEmpty, dc != config.datacenter {
            responder.respond(.text(status: 500, "No path to datacenter"))
            return nil
        }
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
    func blockingRead(_ responder: HTTPResponder, _ options: QueryOptions, scope: WatchScope,
                      changed: @escaping (_ current: UInt64, _ client: UInt64) -> Bool = { $0 > $1 },
                      run: @escaping () -> (index: UInt64, response: HTTPResponse)) {
        var wait = options.waitMilliseconds == 0 ? Self.defaultWaitMilliseconds : options.waitMilliseconds
        wait = min(wait, Self.maxWaitMilliseconds)
        wait += UInt64.random(in: 0...(wait / 16))
        let deadline = loop.nowMilliseconds + wait
        attempt()

        func attempt() {
            let result = run()
            let now = loop.nowMilliseconds
            if options.minIndex == 0 || changed(result.index, options.minIndex) || now >= deadline || responder.isCancelled {
                respond(result)
                return
            }
            let parked = blocking.park(scope: scope, timeoutMilliseconds: deadline - now) {
                attempt()
            }
            if !parked { respond(result) }
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
        // One server is always its own leader; Raft will make these real.
        response.headers.add("X-Consul-KnownLeader", "true")
        response.headers.add("X-Consul-LastContact", "0")
        response.headers.add("X-Consul-Effective-Consistency", consistency)
    }

    /// Internal failures answer 500 with the reason; they never take the agent down.
    func internalError(_ responder: HTTPResponder, _ error: Error) {
        logger.error("request failed", metadata: ["url": "\(responder.request.target)", "error": "\(error)"])
        responder.respond(.text(status: 500, "\(error)"))
    }
}
