// A server's side of client-agent RPC (frame format in RPCWire.swift): connections handed over
// by the server port, each carrying many requests at once, every one run through the same
// HTTPAPI.handle as a local HTTP request, with an in-process HTTPResponder whose answer goes
// back as a response frame. A closed connection or a cancel frame cancels what is in flight,
// so parked blocking queries release their watchers at once.
import EventLoop
import HTTP
import Logging
import Replication

struct RPCServerConfig {
    /// Client-agent connections held at once (each client agent keeps one to one server,
    /// plus one draining for up to a blocking query's wait after a rebalance).
    var maxConnections = 8_192
    /// Requests being worked on per connection; more are answered 429 at once. A client
    /// agent multiplexes all its callers' blocking queries over its one connection.
    var maxInFlightPerConnection = 4_096
    /// Largest request frame run (see RPCWire.maxRequestFrameBytes).
    var maxRequestFrameBytes = RPCWire.maxRequestFrameBytes(bodyLimit: 512 << 10)
    /// Answers written but not yet taken by the socket; past this the client is not reading
    /// and the connection is closed (its requests are cancelled).
    var maxPendingWriteBytes = 2 * RPCWire.maxResponseFrameBytes
}

/// Loop-confined.
final class RPCServer {
    private let loop: Loop
    private let config: RPCServerConfig
    private let handler: (HTTPResponder) -> Void
    private let logger = Logger(label: "agent.server.rpc")
    private var connections: [ObjectIdentifier: Connection] = [:]
    private var closed = false

    /// Requests answered and connections taken, for tests and metrics.
    private(set) var requestsServed = 0
    private(set) var acceptedConnections = 0

    init(loop: Loop, config: RPCServerConfig, handler: @escaping (HTTPResponder) -> Void) {
        self.loop = loop
        self.config = config
        self.handler = handler
    }

    var connectionCount: Int { connections.count }
    /// Requests in flight on all connections (parked blocking queries included).
    var inFlightCount: Int { connections.values.reduce(0) { $0 + $1.inFlight.count } }

    /// RaftTransport.streamHandlers[StreamKind.clientRPC]: the first frame is the hello.
    func accept(_ tcp: TCPConnection, firstFrame: [UInt8], decoder: FrameDecoder) {
        guard !closed, connections.count < config.maxConnections else {
            logger.warning("rpc: too many client connections, closing the new one",
                           metadata: ["remote": "\(tcp.remoteAddress)", "limit": "\(config.maxConnections)"])
            tcp.closeNow()
            return
        }
        guard case .hello(let version)? = try? RPCWire.decode(firstFrame), version == RPCWire.version else {
            logger.warning("rpc: bad hello, closing", metadata: ["remote": "\(tcp.remoteAddress)"])
            tcp.closeNow()
            return
        }
        tcp.setNoDelay(true)
        acceptedConnections += 1
        let connection = Connection(tcp: tcp, decoder: decoder, server: self)
        connections[ObjectIdentifier(connection)] = connection
        tcp.onRead = { [weak connection] bytes in connection?.received(bytes) }
        tcp.onClose = { [weak self, weak connection] _ in
            guard let self, let connection else { return }
            self.connectionClosed(connection)
        }
        connection.drain()  // frames that came in the same read as the hello
        tcp.startReading()
    }

    private func connectionClosed(_ connection: Connection) {
        connections.removeValue(forKey: ObjectIdentifier(connection))
        connection.cancelAll()
    }

    func close() {
        closed = true
        for connection in Array(connections.values) {
            connection.tcp.closeNow()
            connectionClosed(connection)
        }
    }

    fileprivate func run(_ request: RPCRequest, on connection: Connection) {
        let id = request.id
        guard connection.inFlight[id] == nil else {
            connection.protocolError("request id \(id) reused while in flight")
            return
        }
        guard connection.inFlight.count < config.maxInFlightPerConnection else {
            connection.send(RPCResponse(id: id, status: 429, headers: ["Content-Type": "text/plain; charset=utf-8"],
                                        body: Array("Too many requests in flight on this RPC connection (limit \(config.maxInFlightPerConnection))".utf8)))
            return
        }
        let httpRequest: HTTPRequest
        switch HTTPRequest.make(method: request.method, target: request.target, headers: request.headers, body: request.body) {
        case .success(let made): httpRequest = made
        case .failure(let error):
            let response = HTTPResponse.text(status: error.status, error.message)
            connection.send(RPCResponse(id: id, status: response.status, headers: response.headers, body: response.body))
            return
        }
        // Only what client agents forward is served here: RPC must not reach the server
        // agent's own endpoints (/v1/agent/leave, join, the keyring…).
        guard ForwardedPaths.isForwarded(httpRequest.path) else {
            let response = HTTPResponse.text(status: 404, "rpc error: \(httpRequest.path) is not served over RPC")
            connection.send(RPCResponse(id: id, status: response.status, headers: response.headers, body: response.body))
            return
        }
        let responder = HTTPResponder(request: httpRequest) { [weak self, weak connection] response in
            guard let self, let connection, connection.inFlight.removeValue(forKey: id) != nil else { return }
            self.requestsServed += 1
            var headers = response.headers
            for name in RPCWire.droppedResponseHeaders { headers.remove(name) }
            connection.send(RPCResponse(id: id, status: response.status, headers: headers,
                                        body: httpRequest.method == "HEAD" ? [] : response.body))
        }
        connection.inFlight[id] = responder
        handler(responder)
    }

    fileprivate var maxRequestFrameBytes: Int { config.maxRequestFrameBytes }
    fileprivate var maxPendingWriteBytes: Int { config.maxPendingWriteBytes }

    fileprivate final class Connection {
        let tcp: TCPConnection
        var decoder: FrameDecoder
        unowned let server: RPCServer
        var inFlight: [UInt64: HTTPResponder] = [:]

        init(tcp: TCPConnection, decoder: FrameDecoder, server: RPCServer) {
            self.tcp = tcp
            self.decoder = decoder
            self.server = server
        }

        func received(_ bytes: [UInt8]) {
            decoder.feed(bytes)
            drain()
        }

        func drain() {
            while !tcp.isClosed {
                let payload: [UInt8]
                do throws(FrameError) {
                    guard let next = try decoder.next() else { return }
                    payload = next
                } catch {
                    protocolError("\(error)")
                    return
                }
                let message: RPCMessage
                do throws(RPCWireError) { message = try RPCWire.decode(payload) } catch {
                    protocolError("\(error)")
                    return
                }
                switch message {
                case .request(let request):
                    if payload.count > server.maxRequestFrameBytes {
                        send(RPCResponse(id: request.id, status: 413, headers: ["Content-Type": "text/plain; charset=utf-8"],
                                         body: Array("Request body too large for RPC (\(payload.count) bytes, limit \(server.maxRequestFrameBytes))".utf8)))
                    } else {
                        server.run(request, on: self)
                    }
                case .cancel(let id):
                    inFlight.removeValue(forKey: id)?.cancel()
                case .hello, .response:
                    protocolError("unexpected frame type \(payload[0])")
                }
            }
        }

        func send(_ response: RPCResponse) {
            guard !tcp.isClosed else { return }
            var payload: [UInt8]
            do throws(RPCWireError) { payload = try RPCWire.encode(response) } catch {
                payload = Self.errorPayload(id: response.id, "rpc error: cannot encode the response: \(error)")
            }
            if payload.count > RPCWire.maxResponseFrameBytes {
                payload = Self.errorPayload(id: response.id,
                    "rpc error: response of \(payload.count) bytes exceeds the RPC frame limit of \(RPCWire.maxResponseFrameBytes)")
            }
            if tcp.pendingWriteBytes + payload.count > server.maxPendingWriteBytes {
                protocolError("client is not reading its answers (\(tcp.pendingWriteBytes) bytes pending)")
                return
            }
            tcp.write(Framing.frame(payload))
        }

        static func errorPayload(id: UInt64, _ message: String) -> [UInt8] {
            let response = RPCResponse(id: id, status: 500, headers: ["Content-Type": "text/plain; charset=utf-8"],
                                       body: Array(message.utf8))
            return (try? RPCWire.encode(response)) ?? []
        }

        func protocolError(_ reason: String) {
            server.logger.warning("rpc: closing client connection", metadata: ["remote": "\(tcp.remoteAddress)", "reason": "\(reason)"])
            tcp.closeNow()
        }

        func cancelAll() {
            let abandoned = inFlight.values
            inFlight.removeAll()
            for responder in abandoned { responder.cancel() }
        }
    }
}
