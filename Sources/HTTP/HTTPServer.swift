// The HTTP/1.1 server on the event loop: accepts connections, parses requests (pipelined
// ones too), hands each to the handler and writes the answers back in request order.
import EventLoop
import Logging

public struct HTTPServerConfig: Sendable {
    public var limits = HTTPLimits()
    /// A connection with no request outstanding and no bytes for this long is closed.
    public var idleTimeoutMilliseconds: UInt64 = 90_000
    /// Requests parsed but not yet answered on one connection; above it we stop reading
    /// (pipelining backpressure), so a client cannot queue unbounded work.
    public var maxPipelinedRequests: Int = 64
    /// Open connections; above it new ones are closed at once.
    public var maxConnections: Int = 16_384
    public init() {}
}

/// Answers one request, exactly once, on the loop thread. Answers to pipelined requests go
/// out in request order whatever order the handler finishes them in.
///
/// A responder either belongs to a connection of `HTTPServer`, or is created in-process
/// (`init(request:completion:)`) for a request that did not arrive over HTTP: an RPC from a
/// client agent, or the agent's own internal calls. Endpoints see no difference.
public final class HTTPResponder {
    fileprivate weak var connection: HTTPConnection?
    fileprivate var response: HTTPResponse?
    fileprivate var dispatched = false
    public let request: HTTPRequest
    fileprivate var keepAlive: Bool { request.keepAlive }
    /// In-process responders: where the answer goes, and whether the caller gave up.
    private var completion: ((HTTPResponse) -> Void)?
    private let inProcess: Bool
    private var cancelledInProcess = false
    private var cancelHandlers: [() -> Void] = []

    fileprivate init(connection: HTTPConnection, request: HTTPRequest) {
        self.connection = connection
        self.request = request
        self.inProcess = false
    }

    /// A responder for a request handled in-process: `completion` runs once, on the loop
    /// thread, with the answer (possibly before this initializer's caller regains control).
    public init(request: HTTPRequest, completion: @escaping (HTTPResponse) -> Void) {
        self.request = request
        self.completion = completion
        self.inProcess = true
    }

    /// True once the client went away: long waits (blocking queries) can stop early.
    public var isCancelled: Bool {
        inProcess ? cancelledInProcess : (connection?.isClosed ?? true)
    }

    /// Runs `handler` once when the client goes away before an answer (at once if it already
    /// has), so a parked blocking query can release its watcher instead of waiting out its
    /// timeout. Not run when the request is answered normally.
    public func onCancel(_ handler: @escaping () -> Void) {
        guard response == nil else { return }
        if isCancelled { handler(); return }
        cancelHandlers.append(handler)
    }

    /// The in-process caller gave up (its connection closed, or it sent a cancel). Later
    /// answers are dropped. Also called by the HTTP connection when its socket closes.
    public func cancel() {
        guard response == nil else { return }
        if inProcess {
            guard !cancelledInProcess else { return }
            cancelledInProcess = true
            completion = nil
        }
        let handlers = cancelHandlers
        cancelHandlers = []
        for handler in handlers { handler() }
    }

    public func respond(_ response: HTTPResponse) {
        guard self.response == nil else { return }
        self.response = response
        cancelHandlers = []
        if inProcess {
            let completion = self.completion
            self.completion = nil
            completion?(response)
        } else {
            connection?.flushReadyResponses()
        }
    }
}

public final class HTTPServer {
    public typealias Handler = (HTTPResponder) -> Void

    private let loop: Loop
    private let config: HTTPServerConfig
    private let handler: Handler
    private let logger: Logger
    private var listener: TCPListener?
    private var connections: [ObjectIdentifier: HTTPConnection] = [:]
    private var idleTimer: LoopTimer?

    public var localPort: Int { listener?.localPort ?? 0 }
    public var connectionCount: Int { connections.count }

    /// Runs on the loop thread.
    public init(loop: Loop, host: String, port: Int, config: HTTPServerConfig = HTTPServerConfig(),
                logger: Logger, handler: @escaping Handler) throws(LoopError) {
        loop.assertInLoopThread()
        self.loop = loop
        self.config = config
        self.handler = handler
        self.logger = logger
        listener = try TCPListener.listen(on: loop, host: host, port: port) { [weak self] tcp in
            self?.accept(tcp)
        }
        let timer = LoopTimer(loop: loop)
        let sweep = max(config.idleTimeoutMilliseconds / 4, 10)
        timer.start(afterMilliseconds: sweep, repeatMilliseconds: sweep) { [weak self] in self?.closeIdleConnections() }
        idleTimer = timer
    }

    private func accept(_ tcp: TCPConnection) {
        guard connections.count < config.maxConnections else {
            logger.warning("too many HTTP connections; closing new one",
                           metadata: ["limit": "\(config.maxConnections)", "peer": "\(tcp.remoteAddress)"])
            tcp.closeNow()
            return
        }
        tcp.setNoDelay(true)
        let connection = HTTPConnection(tcp: tcp, server: self, limits: config.limits, now: loop.nowMilliseconds)
        connections[ObjectIdentifier(connection)] = connection
        tcp.startReading()
    }

    fileprivate func dispatch(_ responder: HTTPResponder) { handler(responder) }
    fileprivate var maxPipelined: Int { config.maxPipelinedRequests }
    fileprivate var now: UInt64 { loop.nowMilliseconds }

    fileprivate func connectionClosed(_ connection: HTTPConnection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
    }

    private func closeIdleConnections() {
        let now = loop.nowMilliseconds
        for connection in connections.values where connection.isIdle(now: now, timeout: config.idleTimeoutMilliseconds) {
            connection.close()
        }
    }

    /// Stops accepting and closes every connection (answers still queued are dropped).
    public func close() {
        listener?.close()
        listener = nil
        idleTimer?.close()
        idleTimer = nil
        for connection in Array(connections.values) { connection.closeNow() }
        connections.removeAll()
    }
}

/// One client connection: a parser, the queue of requests awaiting answers, and the socket.
final class HTTPConnection {
    private let tcp: TCPConnection
    private weak var server: HTTPServer?
    private var parser: HTTPRequestParser
    private var queue: [HTTPResponder] = []
    private var lastActivity: UInt64
    private var readingPausedForPipeline = false
    /// After a parse error or `Connection: close` nothing more is read or answered.
    private var closingAfterQueue = false
    private var pendingError: HTTPResponse?
    private var dispatching = false
    private(set) var isClosed = false

    init(tcp: TCPConnection, server: HTTPServer, limits: HTTPLimits, now: UInt64) {
        self.tcp = tcp
        self.server = server
        self.parser = HTTPRequestParser(limits: limits)
        self.lastActivity = now
        tcp.onRead = { [weak self] bytes in self?.received(bytes) }
        tcp.onClose = { [weak self] _ in self?.closed() }
    }

    func isIdle(now: UInt64, timeout: UInt64) -> Bool {
        queue.isEmpty && now &- lastActivity >= timeout
    }

    private func received(_ bytes: [UInt8]) {
        guard !closingAfterQueue, let server else { return }
        lastActivity = server.now
        let result = parser.feed(bytes)
        for request in result.requests {
            let responder = HTTPResponder(connection: self, request: request)
            queue.append(responder)
            if !request.keepAlive { closingAfterQueue = true }
        }
        if let error = result.error {
            closingAfterQueue = true
            pendingError = HTTPResponse.text(status: error.status, error.message)
        }
        if closingAfterQueue || queue.count >= server.maxPipelined {
            tcp.stopReading()
            readingPausedForPipeline = !closingAfterQueue
        }
        dispatchWithinLimit()
    }

    /// Hands requests to the handler while fewer than `maxPipelined` are being worked on.
    /// Requests parsed beyond that wait here (bounded by one read, since reading is paused),
    /// so one client cannot make the agent work on an unbounded number of requests at once.
    private func dispatchWithinLimit() {
        guard !dispatching, let server else { return }
        dispatching = true
        while !isClosed {
            let working = queue.reduce(0) { $0 + ($1.dispatched && $1.response == nil ? 1 : 0) }
            guard working < server.maxPipelined, let next = queue.first(where: { !$0.dispatched }) else { break }
            next.dispatched = true
            server.dispatch(next)   // may answer synchronously, and even close us
        }
        dispatching = false
        writeAnswered()
    }

    /// Called when a handler answers: write what is now in order, then start more work.
    func flushReadyResponses() {
        writeAnswered()
        if !isClosed && !dispatching { dispatchWithinLimit() }
    }

    /// Writes every answer at the head of the queue (answers behind an unanswered request
    /// wait: HTTP/1.1 answers pipelined requests in order), closes when the exchange is
    /// over, and resumes reading once the queue has drained enough.
    private func writeAnswered() {
        guard !isClosed else { return }
        var out: [UInt8] = []
        var mustClose = false
        while let head = queue.first, let response = head.response {
            queue.removeFirst()
            if head.request.method == "HEAD" {
                var headResponse = response
                headResponse.body = []
                headResponse.serialize(keepAlive: head.keepAlive, into: &out)
            } else {
                response.serialize(keepAlive: head.keepAlive, into: &out)
            }
            if !head.keepAlive { mustClose = true; break }
        }
        if queue.isEmpty, let error = pendingError {
            pendingError = nil
            error.serialize(keepAlive: false, into: &out)
            mustClose = true
        }
        if !out.isEmpty {
            tcp.write(out)
            if let server { lastActivity = server.now }
        }
        if mustClose || (closingAfterQueue && queue.isEmpty) {
            close()
            return
        }
        if readingPausedForPipeline, let server, queue.count < server.maxPipelined / 2 {
            readingPausedForPipeline = false
            tcp.startReading()
        }
    }

    /// Closes after the queued bytes are written.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        tcp.close()
        server?.connectionClosed(self)
    }

    func closeNow() {
        guard !isClosed else { return }
        isClosed = true
        tcp.closeNow()
        server?.connectionClosed(self)
    }

    private func closed() {
        isClosed = true
        let abandoned = queue
        queue.removeAll()
        server?.connectionClosed(self)
        // Requests still being worked on (parked blocking queries) can stop now.
        for responder in abandoned where responder.dispatched { responder.cancel() }
    }
}
