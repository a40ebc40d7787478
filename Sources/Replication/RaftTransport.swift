// The TCP transport between Raft servers: one listener for inbound streams, one outbound
// connection per peer (connected on demand, re-connected with bounded exponential back-off),
// and an address book NodeID → "host:port". Messages travel one way per connection: a server
// sends only on its outbound connections and receives only on inbound ones (like etcd's
// rafthttp streams), so no handshake is needed; a message names its sender.
import EventLoop
#if canImport(Glibc)
import Glibc
#endif
import Logging
import RaftCore

public struct RaftTransportConfig: Sendable, Equatable {
    /// Largest frame accepted or sent. An AppendEntries carries at most
    /// RaftConfig.maxAppendBytes (1 MiB) of payload plus 21 bytes per entry; 8 MiB leaves room.
    public var maxFrameBytes: Int = 8 << 20
    /// First reconnect delay after a failed connect or a lost connection.
    public var reconnectInitialDelayMilliseconds: UInt64 = 20
    /// The back-off doubles per failure up to this (hashicorp/raft caps its back-off similarly).
    public var reconnectMaxDelayMilliseconds: UInt64 = 1_000
    /// Messages held for a peer while its connection is being made; more are dropped.
    public var maxQueuedMessagesWhileConnecting: Int = 256
    /// Bytes written to a peer but not yet taken by its socket; beyond this, messages to that
    /// peer are dropped (a slow or stuck peer must not make us buffer without bound).
    public var maxPendingWriteBytesPerPeer: Int = 16 << 20
    /// An outbound connection to a peer we keep sending to but have heard nothing from for
    /// this long is closed and made again: a half-open connection (peer host gone, no RST)
    /// would otherwise swallow messages until the kernel gives up (~15 min of retransmits).
    /// Every Raft message a server sends draws an answer or is a leader's heartbeat, so a
    /// live peer is never silent for 10 election timeouts.
    public var silentPeerTimeoutMilliseconds: UInt64 = 10_000
    /// Inbound connections held at once: one from each peer (re-made after failures) plus those
    /// that have not sent their first frame yet. Client-agent RPC and snapshot streams leave the
    /// count once their first frame hands them over, but a burst of client agents connecting at
    /// once (all of them reconnecting after a server restart) arrives before any first frame is
    /// read. 64 refused part of a burst of 100 in tests; 1024 still bounds what a misbehaving
    /// client can hold open.
    public var maxInboundConnections: Int = 1024

    public init() {}

    public func validate() throws(ReplicationConfigError) {
        guard maxFrameBytes >= 1 << 10 else { throw .invalid("maxFrameBytes must be at least 1024") }
        guard reconnectInitialDelayMilliseconds > 0 else {
            throw .invalid("reconnectInitialDelayMilliseconds must be > 0")
        }
        guard reconnectMaxDelayMilliseconds >= reconnectInitialDelayMilliseconds else {
            throw .invalid("reconnectMaxDelayMilliseconds must be >= reconnectInitialDelayMilliseconds")
        }
        guard maxQueuedMessagesWhileConnecting >= 0 else {
            throw .invalid("maxQueuedMessagesWhileConnecting must be >= 0")
        }
        guard maxInboundConnections > 0 else { throw .invalid("maxInboundConnections must be > 0") }
        guard silentPeerTimeoutMilliseconds > 0 else { throw .invalid("silentPeerTimeoutMilliseconds must be > 0") }
        guard maxPendingWriteBytesPerPeer >= maxFrameBytes else {
            throw .invalid("maxPendingWriteBytesPerPeer must be >= maxFrameBytes")
        }
    }
}

/// Loop-confined: every method runs on `loop`'s thread.
public final class RaftTransport {
    public let loop: Loop
    public let config: RaftTransportConfig
    private let logger: Logger
    private var listener: TCPListener?
    private var peers: [NodeID: PeerLink] = [:]
    private var inbound: [ObjectIdentifier: TCPConnection] = [:]
    private var closed = false

    /// Each Raft message received, on the loop thread.
    public var onMessage: ((Message) -> Void)?
    /// Each non-Raft frame payload received (first byte >= 0x80), on the loop thread.
    public var onControlFrame: (([UInt8]) -> Void)?
    /// Inbound connections whose first frame starts with a byte in 0xE0...0xEF are not Raft
    /// streams: they are handed, with that frame and the decoder holding whatever arrived after
    /// it, to the handler registered for that byte (and forgotten by the transport). One
    /// server port thus carries Raft, snapshot streams and client RPC, as Consul's does.
    /// A first byte in the range with no handler closes the connection.
    public var streamHandlers: [UInt8: (_ connection: TCPConnection, _ firstFrame: [UInt8], _ decoder: FrameDecoder) -> Void] = [:]
    /// A frame payload written first on every new outbound connection (the replicator's hello:
    /// who we are and where we listen, so a server that does not know us yet can answer).
    public var connectionPreamble: [UInt8]?

    /// Fault injection for tests: while true, every frame sent or received is dropped, as if
    /// this server were cut off by a network partition.
    var partitioned = false

    /// Counters (a metrics backend would export these).
    public private(set) var sentMessages = 0
    public private(set) var droppedMessages = 0
    public private(set) var receivedMessages = 0
    public private(set) var rejectedConnections = 0
    /// Outbound connections closed because the peer stayed silent.
    public private(set) var silentPeerResets = 0

    /// Test/benchmark only, off unless the environment sets it: every frame written to a peer's
    /// connection waits this many milliseconds first, to imitate a one-way network latency between
    /// servers on one machine without `tc netem` (which needs root and slows all loopback traffic).
    /// Read once per process; Benchmarks' pipeline sweep uses it. Not a user setting.
    static let testDelayMilliseconds: UInt64 = {
        guard let text = getenv("CONCLAVE_TEST_RAFT_DELAY_MS"), let value = UInt64(String(cString: text)),
              value > 0, value <= 10_000 else { return 0 }
        return value
    }()
    /// Frames held back by `testDelayMilliseconds`, oldest first (one constant delay keeps the
    /// due times in order, so frames to a peer stay in order), with the connection they are for.
    private var delayedFrames: [(due: UInt64, connection: TCPConnection, frame: [UInt8])] = []
    private var delayedHead = 0
    private var delayTimer: LoopTimer?

    private final class PeerLink {
        let id: NodeID
        var address: String
        var connection: TCPConnection?
        var connecting = false
        /// Frames waiting for the connection being made.
        var queued: [[UInt8]] = []
        var backoffMilliseconds: UInt64 = 0
        var retryAtMilliseconds: UInt64 = 0
        var consecutiveFailures = 0
        var connectedAtMilliseconds: UInt64 = 0
        var lastHeardMilliseconds: UInt64 = 0
        init(id: NodeID, address: String) { self.id = id; self.address = address }
    }

    /// Listens on `host:port` (port 0 picks a free one, see `port`). Runs on the loop thread.
    public init(loop: Loop, host: String, port: Int, config: RaftTransportConfig = RaftTransportConfig(),
                logger: Logger) throws {
        loop.assertInLoopThread()
        try config.validate()
        self.loop = loop
        self.config = config
        self.logger = logger
        listener = try TCPListener.listen(on: loop, host: host, port: port) { [weak self] connection in
            self?.accept(connection)
        }
    }

    /// The bound port; 0 once closed.
    public var port: Int { listener?.localPort ?? 0 }

    // MARK: Address book

    /// Sets (or changes) where `id` listens. A changed address drops the old connection.
    public func setAddress(_ address: String, for id: NodeID) {
        loop.assertInLoopThread()
        if let peer = peers[id] {
            guard peer.address != address else { return }
            peer.address = address
            peer.connection?.close()
            peer.connection = nil
            peer.backoffMilliseconds = 0
            peer.retryAtMilliseconds = 0
        } else {
            peers[id] = PeerLink(id: id, address: address)
        }
    }

    public func removeAddress(for id: NodeID) {
        loop.assertInLoopThread()
        guard let peer = peers.removeValue(forKey: id) else { return }
        peer.connection?.close()
        droppedMessages += peer.queued.count
    }

    public func address(of id: NodeID) -> String? { peers[id]?.address }

    public var addressBook: [NodeID: String] { peers.mapValues(\.address) }

    // MARK: Sending

    public func send(_ message: Message) {
        sendFrame(message.encoded(), to: message.to)
    }

    /// Sends one frame payload to `id`, or drops it (counted) when the peer is unknown,
    /// unreachable or too far behind. Raft retries what matters.
    public func sendFrame(_ payload: [UInt8], to id: NodeID) {
        loop.assertInLoopThread()
        guard !closed, !partitioned, let peer = peers[id] else { droppedMessages += 1; return }
        guard payload.count <= config.maxFrameBytes else {
            logger.warning("raft: message too large to send, dropped", metadata: [
                "peer": "\(id)", "bytes": "\(payload.count)", "limit": "\(config.maxFrameBytes)"])
            droppedMessages += 1
            return
        }
        if let connection = peer.connection, !connection.isClosed {
            let now = loop.nowMilliseconds
            let silentSince = max(peer.connectedAtMilliseconds, peer.lastHeardMilliseconds)
            if now > silentSince + config.silentPeerTimeoutMilliseconds {
                silentPeerResets += 1
                logger.warning("raft: no answer from peer, re-making the connection", metadata: [
                    "peer": "\(id)", "silent_ms": "\(now - silentSince)"])
                peer.connection = nil
                connection.closeNow()
                connect(peer)
                enqueueWhileConnecting(payload, peer)
                return
            }
            guard connection.pendingWriteBytes + payload.count <= config.maxPendingWriteBytesPerPeer else {
                droppedMessages += 1
                return
            }
            if Self.testDelayMilliseconds > 0 {
                delayWrite(Framing.frame(payload), on: connection)
            } else {
                connection.write(Framing.frame(payload))
            }
            sentMessages += 1
            return
        }
        if !peer.connecting {
            guard loop.nowMilliseconds >= peer.retryAtMilliseconds else { droppedMessages += 1; return }
            connect(peer)
        }
        enqueueWhileConnecting(payload, peer)
    }

    private func delayWrite(_ frame: [UInt8], on connection: TCPConnection) {
        delayedFrames.append((loop.nowMilliseconds + Self.testDelayMilliseconds, connection, frame))
        if delayedFrames.count - delayedHead == 1 { armDelayTimer() }
    }

    private func armDelayTimer() {
        guard delayedHead < delayedFrames.count, !closed else { return }
        let timer = delayTimer ?? LoopTimer(loop: loop)
        delayTimer = timer
        let now = loop.nowMilliseconds
        let due = delayedFrames[delayedHead].due
        timer.start(afterMilliseconds: due > now ? due - now : 0) { [weak self] in self?.flushDelayed() }
    }

    private func flushDelayed() {
        let now = loop.nowMilliseconds
        while delayedHead < delayedFrames.count, delayedFrames[delayedHead].due <= now {
            let item = delayedFrames[delayedHead]
            delayedHead += 1
            if !item.connection.isClosed { item.connection.write(item.frame) }  // else lost, as on a cut link
        }
        if delayedHead == delayedFrames.count {
            delayedFrames.removeAll(keepingCapacity: true)
            delayedHead = 0
        } else if delayedHead > 4096 {
            delayedFrames.removeFirst(delayedHead)
            delayedHead = 0
        }
        armDelayTimer()
    }

    private func enqueueWhileConnecting(_ payload: [UInt8], _ peer: PeerLink) {
        guard peer.connecting else { droppedMessages += 1; return }  // the connect failed at once
        if peer.queued.count < config.maxQueuedMessagesWhileConnecting {
            peer.queued.append(payload)
        } else {
            droppedMessages += 1
        }
    }

    private func connect(_ peer: PeerLink) {
        guard let (host, port) = Self.split(peer.address) else {
            logger.error("raft: bad peer address", metadata: ["peer": "\(peer.id)", "address": "\(peer.address)"])
            failConnect(peer, reason: "bad address \(peer.address)")
            return
        }
        peer.connecting = true
        let address = peer.address
        TCPConnection.connect(on: loop, host: host, port: port) { [weak self, weak peer] result in
            guard let self, let peer else {
                if case let .success(connection) = result { connection.close() }
                return
            }
            // The peer's address changed or the transport closed while connecting.
            guard !self.closed, self.peers[peer.id] === peer, peer.address == address else {
                if case let .success(connection) = result { connection.close() }
                return
            }
            peer.connecting = false
            switch result {
            case let .success(connection):
                self.connected(peer, connection)
            case let .failure(error):
                self.failConnect(peer, reason: "\(error)")
            }
        }
    }

    private func connected(_ peer: PeerLink, _ connection: TCPConnection) {
        if peer.consecutiveFailures > 0 {
            logger.info("raft: connection to peer restored", metadata: ["peer": "\(peer.id)", "address": "\(peer.address)"])
        } else {
            logger.debug("raft: connected to peer", metadata: ["peer": "\(peer.id)", "address": "\(peer.address)"])
        }
        peer.consecutiveFailures = 0
        peer.backoffMilliseconds = 0
        peer.connection = connection
        peer.connectedAtMilliseconds = loop.nowMilliseconds
        connection.setNoDelay(true)
        // Outbound connections carry nothing back; a read of EOF tells us the peer went away.
        connection.onRead = { _ in }
        connection.onClose = { [weak self, weak peer, weak connection] error in
            guard let self, let peer, peer.connection === connection else { return }
            peer.connection = nil
            self.scheduleRetry(peer)
            self.logger.debug("raft: connection to peer closed", metadata: [
                "peer": "\(peer.id)", "error": "\(error.map { "\($0)" } ?? "EOF")"])
        }
        connection.startReading()
        if let preamble = connectionPreamble { connection.write(Framing.frame(preamble)) }
        let queued = peer.queued
        peer.queued = []
        for payload in queued {
            connection.write(Framing.frame(payload))
            sentMessages += 1
        }
    }

    private func failConnect(_ peer: PeerLink, reason: String) {
        peer.connecting = false
        droppedMessages += peer.queued.count
        peer.queued = []
        peer.consecutiveFailures += 1
        scheduleRetry(peer)
        // Once per outage at warning; the retries at debug, so a down peer cannot flood the log.
        if peer.consecutiveFailures == 1 {
            logger.warning("raft: failed to contact peer", metadata: ["peer": "\(peer.id)", "error": "\(reason)"])
        } else {
            logger.debug("raft: failed to contact peer", metadata: [
                "peer": "\(peer.id)", "error": "\(reason)", "attempt": "\(peer.consecutiveFailures)",
                "backoff_ms": "\(peer.backoffMilliseconds)"])
        }
    }

    private func scheduleRetry(_ peer: PeerLink) {
        let doubled = peer.backoffMilliseconds == 0 ? config.reconnectInitialDelayMilliseconds : peer.backoffMilliseconds * 2
        peer.backoffMilliseconds = min(doubled, config.reconnectMaxDelayMilliseconds)
        peer.retryAtMilliseconds = loop.nowMilliseconds + peer.backoffMilliseconds
    }

    /// "host:port" or "[v6]:port" → (host, port).
    static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              port > 0, port < 65_536 else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }

    // MARK: Receiving

    private func accept(_ connection: TCPConnection) {
        guard !closed else { connection.closeNow(); return }
        guard inbound.count < config.maxInboundConnections else {
            rejectedConnections += 1
            logger.warning("raft: too many inbound connections, closing the new one", metadata: [
                "remote": "\(connection.remoteAddress)", "limit": "\(config.maxInboundConnections)"])
            connection.closeNow()
            return
        }
        let key = ObjectIdentifier(connection)
        inbound[key] = connection
        var decoder = FrameDecoder(maxFrameBytes: config.maxFrameBytes)
        var firstFrame = true
        connection.onRead = { [weak self, weak connection] bytes in
            guard let self, let connection else { return }
            decoder.feed(bytes)
            while !connection.isClosed {
                let payload: [UInt8]
                do throws(FrameError) {
                    guard let next = try decoder.next() else { return }
                    payload = next
                } catch {
                    self.reject(connection, reason: "\(error)")
                    return
                }
                if firstFrame {
                    firstFrame = false
                    if StreamKind.range.contains(payload[0]) {
                        self.handOver(connection, key: key, firstFrame: payload, decoder: decoder)
                        return
                    }
                }
                self.deliver(payload, from: connection)
            }
        }
        connection.onClose = { [weak self] _ in self?.inbound[key] = nil }
        connection.startReading()
    }

    private func handOver(_ connection: TCPConnection, key: ObjectIdentifier, firstFrame: [UInt8], decoder: FrameDecoder) {
        inbound[key] = nil
        connection.onRead = nil
        connection.onClose = nil
        guard let handler = streamHandlers[firstFrame[0]] else {
            reject(connection, reason: "no handler for stream kind \(firstFrame[0])")
            return
        }
        handler(connection, firstFrame, decoder)
    }

    private func deliver(_ payload: [UInt8], from connection: TCPConnection) {
        guard !partitioned else { return }
        if payload[0] >= Framing.controlKindBase {
            onControlFrame?(payload)
            return
        }
        let message: Message
        do throws(MessageDecodingError) {
            message = try Message.decode(payload)
        } catch {
            reject(connection, reason: "undecodable message: \(error)")
            return
        }
        receivedMessages += 1
        peers[message.from]?.lastHeardMilliseconds = loop.nowMilliseconds
        onMessage?(message)
    }

    private func reject(_ connection: TCPConnection, reason: String) {
        rejectedConnections += 1
        logger.warning("raft: closing connection from peer that broke the protocol", metadata: [
            "remote": "\(connection.remoteAddress)", "reason": "\(reason)"])
        connection.closeNow()
    }

    // MARK: Closing

    /// Stops listening and closes every connection. Idempotent.
    public func close() {
        loop.assertInLoopThread()
        guard !closed else { return }
        closed = true
        delayTimer?.close()
        delayTimer = nil
        delayedFrames = []
        delayedHead = 0
        listener?.close()
        listener = nil
        for peer in peers.values {
            peer.connection?.closeNow()
            peer.connection = nil
            peer.queued = []
        }
        for connection in inbound.values { connection.closeNow() }
        inbound = [:]
    }
}
