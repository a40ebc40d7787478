// One gossip pool (Consul's LAN or WAN serf) on the event loop: runs a GossipCore
// `Memberlist`, carries its packets over UDP and its streams (push-pull, fallback ping) over
// TCP on the same port number, drives its timers from the loop clock and hands membership
// events to the owner. Loop-confined.
import EventLoop
import GossipCore
import Logging

public struct GossipTransportConfig: Sendable {
    /// Largest stream frame accepted or sent; a peer announcing more is disconnected. The core
    /// bounds a stream message at `WireLimits.maxStreamBytes`; sealing adds a few bytes.
    public var maxFrameBytes = WireLimits.maxStreamBytes + GossipKeyring.overheadBytes
    /// An outbound stream (connect, write, read the reply) must finish within this
    /// (memberlist's TCPTimeout: 10 s LAN).
    public var streamTimeoutMs: UInt64 = 10_000
    /// Inbound streams open at once; more are refused (closed) until some finish.
    public var maxInboundStreams = 128
    /// Binding port 0 picks a UDP port first and then listens for TCP on the same number;
    /// another process may hold that TCP port, so try this many UDP ports.
    public var bindAttempts = 8
    /// Packets that fail to decrypt are logged at most once per this interval per sender.
    public var decryptFailureLogIntervalMs: UInt64 = 1_000
    public init() {}

    /// Rejects nonsense, naming the field.
    public func validate() throws(GossipPoolError) {
        if maxFrameBytes < 64 { throw .config("maxFrameBytes must be >= 64") }
        if streamTimeoutMs == 0 { throw .config("streamTimeoutMs must be > 0") }
        if maxInboundStreams < 1 { throw .config("maxInboundStreams must be >= 1") }
        if bindAttempts < 1 { throw .config("bindAttempts must be >= 1") }
    }
}

public enum GossipPoolError: Error, CustomStringConvertible {
    case bind(String)
    case config(String)
    public var description: String {
        switch self { case .bind(let m), .config(let m): m }
    }
}

/// A member as the agent reports it (Consul/serf vocabulary).
public struct GossipMemberStatus: Sendable, Equatable {
    public var member: Member
    /// serf MemberStatus: 1 alive, 2 leaving, 3 left, 4 failed.
    public var serfStatus: Int
    public var statusName: String {
        switch serfStatus { case 1: "alive"; case 2: "leaving"; case 3: "left"; case 4: "failed"; default: "none" }
    }
    public init(member: Member, serfStatus: Int) {
        self.member = member
        self.serfStatus = serfStatus
    }
}

public final class GossipPool {
    public let loop: Loop
    /// "lan" or "wan": for log lines.
    public let label: String
    public let advertiseAddress: String
    public let port: Int
    private let memberlist: Memberlist
    private let transport: GossipTransportConfig
    /// Replaced during key rotation; nil when gossip is not encrypted.
    public private(set) var keyring: GossipKeyring?
    private let logger: Logger
    private var udp: UDPSocket?
    private var listener: TCPListener?
    private let timer: LoopTimer
    private var outbound: [UInt64: OutboundStream] = [:]
    private var inbound: [ObjectIdentifier: TCPConnection] = [:]
    private var closed = false
    /// Members hidden by `force-leave -prune` until they rejoin or the core reaps them (the
    /// core has no input to forget a member before its reap timeout).
    private var pruned: Set<String> = []
    private var suppressEventsFor: String?
    private var lastDecryptLogMs: [String: UInt64] = [:]
    /// Packets and frames dropped because no key opened them.
    public private(set) var decryptFailures = 0
    struct BindFailure: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }

    /// Binds UDP, then TCP on the UDP socket's port number. With `requestedPort` 0 the kernel
    /// picks a UDP port that may be taken for TCP by another process: the pair is tried again
    /// with a fresh kernel-chosen port, `attempts` times in all. A fixed port is tried once,
    /// so a taken port fails at once with the side that failed in the reason.
    static func bindSamePort<UDP, TCP>(requestedPort: Int, attempts: Int,
                                       bindUDP: (Int) throws(BindFailure) -> UDP, udpPort: (UDP) -> Int,
                                       closeUDP: (UDP) -> Void,
                                       bindTCP: (Int) throws(BindFailure) -> TCP) throws(BindFailure) -> (UDP, TCP) {
        var lastError = BindFailure("no attempt made")
        for _ in 0 ..< (requestedPort == 0 ? max(attempts, 1) : 1) {
            let udp: UDP
            do { udp = try bindUDP(requestedPort) } catch { lastError = error; continue }
            do { return (udp, try bindTCP(udpPort(udp))) } catch {
                lastError = error
                closeUDP(udp)
            }
        }
        throw lastError
    }

    /// Membership events (not about ourselves), on the loop thread.
    public var onEvent: ((MembershipEvent) -> Void)?

    /// Binds UDP on `bindHost:port` and TCP on the same port number, then creates the core with
    /// `makeConfig(advertised address)` and our tags. `advertiseHost` is what others reach us at.
    public init(loop: Loop, label: String, bindHost: String, advertiseHost: String, port requestedPort: Int,
                tags: [String: String], transport: GossipTransportConfig = GossipTransportConfig(), keyring: GossipKeyring? = nil,
                logger: Logger, makeConfig: (String) -> GossipConfig) throws(GossipPoolError) {
        loop.assertInLoopThread()
        try transport.validate()
        self.loop = loop
        self.label = label
        self.transport = transport
        self.keyring = keyring
        self.logger = logger
        timer = LoopTimer(loop: loop)
        let holder = LoopBound<GossipPool?>(emptyOn: loop)
        let socket: UDPSocket, tcp: TCPListener
        do throws(BindFailure) {
            (socket, tcp) = try GossipPool.bindSamePort(
                requestedPort: requestedPort, attempts: transport.bindAttempts,
                bindUDP: { (port: Int) throws(BindFailure) -> UDPSocket in
                    do {
                        return try UDPSocket.bind(on: loop, host: bindHost, port: port) { bytes, sender in
                            holder.value?.receivePacket(bytes, from: sender)
                        }
                    } catch { throw BindFailure("udp \(bindHost):\(port): \(error)") }
                },
                udpPort: { $0.localPort },
                closeUDP: { $0.close() },
                bindTCP: { (port: Int) throws(BindFailure) -> TCPListener in
                    do {
                        return try TCPListener.listen(on: loop, host: bindHost, port: port) { connection in
                            holder.value?.accept(connection)
                        }
                    } catch { throw BindFailure("tcp \(bindHost):\(port): \(error)") }
                })
        } catch {
            timer.close()
            throw .bind("cannot bind gossip (\(label)) port: \(error.reason)")
        }
        udp = socket
        listener = tcp
        port = socket.localPort
        advertiseAddress = SocketAddress(host: advertiseHost, port: port).description
        let config = makeConfig(advertiseAddress)
        do {
            memberlist = try Memberlist(config: config, nowMs: Int64(loop.nowMilliseconds))
            try memberlist.updateTags(tags, nowMs: Int64(loop.nowMilliseconds))
        } catch {
            socket.close(); tcp.close(); timer.close()
            throw .config("gossip (\(label)) configuration: \(error)")
        }
        _ = memberlist.takeEffects()  // our own tag update: nothing to send yet
        holder.value = self
        rearm()
    }

    // MARK: Reading state

    public var name: String { memberlist.name }
    public var isLeaving: Bool { leavingStarted }
    private var leavingStarted = false
    private var leaveFinished = false

    /// Every member we know, ourselves included, with serf's status (pruned ones hidden).
    public var members: [GossipMemberStatus] {
        memberlist.members.filter { !pruned.contains($0.name) }.map { m in
            var status: Int
            switch m.state {
            case .alive, .suspect: status = 1
            case .dead: status = 4
            case .left: status = 3
            }
            // serf: "leaving" while our leave broadcast goes out, "left" once it has.
            if m.name == name && leavingStarted { status = leaveFinished ? 3 : 2 }
            return GossipMemberStatus(member: m, serfStatus: status)
        }.sorted { $0.member.name < $1.member.name }
    }

    public var stats: GossipStats { memberlist.stats }
    /// Lifeguard local health score (0 = healthy).
    public var healthScore: Int { memberlist.healthScore }
    public var isEncrypted: Bool { keyring != nil }

    // MARK: Operations

    /// Starts a push-pull join with each address ("host:port"); `completion` gets how many
    /// answered. Always called, on the loop thread.
    public func join(_ addresses: [String], completion: @escaping (Int) -> Void) {
        loop.assertInLoopThread()
        var remaining = addresses.count
        var answered = 0
        if remaining == 0 { completion(0); return }
        for address in addresses {
            guard parseHostPort(address) != nil else {
                remaining -= 1
                if remaining == 0 { completion(answered) }
                continue
            }
            // Our own join request: a push-pull stream we open and watch ourselves, so the
            // caller learns which addresses answered. The reply goes to the core as a
            // received stream, which merges the remote state like a push-pull reply.
            let request = GossipWire.encode(.pushPull(join: true, members: memberlist.members.prefix(memberlist.config.maxPushPullMembers).map {
                MemberSnapshot(name: $0.name, address: $0.address, incarnation: $0.incarnation, state: $0.state, tags: $0.tags)
            }))
            openStream(to: address, payload: request) { [weak self] reply in
                guard let self else { return }
                if let reply {
                    answered += 1
                    _ = self.memberlist.receiveStream(reply, from: address, nowMs: self.now)
                    self.performEffects()
                }
                remaining -= 1
                if remaining == 0 { completion(answered) }
            }
        }
    }

    /// Graceful leave: broadcast it, then wait until the broadcast went out (or `timeoutMs`).
    public func leave(timeoutMs: UInt64, completion: @escaping () -> Void) {
        loop.assertInLoopThread()
        guard !closed, !leavingStarted else { completion(); return }
        leavingStarted = true
        do { try memberlist.leave(nowMs: now) } catch { completion(); return }
        performEffects()
        let deadline = loop.nowMilliseconds + timeoutMs
        let poll = LoopTimer(loop: loop)
        func check() {
            // Done once the queue drained, or nobody is left to tell (a lone member would
            // otherwise wait out the whole timeout), or at the deadline.
            let anyoneToTell = memberlist.members.contains { $0.name != name && ($0.state == .alive || $0.state == .suspect) }
            if memberlist.pendingBroadcasts == 0 || !anyoneToTell || loop.nowMilliseconds >= deadline || closed {
                poll.close()
                leaveFinished = true
                completion()
                return
            }
            poll.start(afterMilliseconds: 20) { check() }
        }
        check()
    }

    /// Consul's force-leave: a failed member becomes left (and with `prune`, disappears from
    /// our list). Returns false for an unknown member.
    ///
    /// The core treats dead → left as no transition and has no input for it, so we feed it, and
    /// send every live member, a packet with `alive` at a higher incarnation followed by the
    /// member's own `dead` (a leave): receivers report a join then a leave for it.
    public func forceLeave(_ node: String, prune: Bool) -> Bool {
        loop.assertInLoopThread()
        guard let m = memberlist.member(named: node), node != name else { return false }
        if m.state != .alive {
            let incarnation = m.incarnation &+ 1
            let packet = GossipWire.encodeCompound([
                GossipWire.encode(.alive(incarnation: incarnation, node: node, address: m.address, tags: m.tags)),
                GossipWire.encode(.dead(incarnation: incarnation, node: node, from: node)),
            ])
            suppressEventsFor = node
            memberlist.receive(packet, from: advertiseAddress, nowMs: now)
            performEffects()
            suppressEventsFor = nil
            for peer in memberlist.members where peer.name != name && peer.state == .alive {
                sendPacket(packet, to: peer.address)
            }
            logger.info("EventMemberLeave (forced): \(node) \(m.address)", metadata: ["pool": "\(label)"])
        }
        if prune { pruned.insert(node) }
        return true
    }

    /// Stops sockets and timers (no leave message: see `leave`).
    public func close() {
        loop.assertInLoopThread()
        guard !closed else { return }
        closed = true
        timer.close()
        udp?.close(); udp = nil
        listener?.close(); listener = nil
        for stream in outbound.values { stream.finish(nil) }
        outbound = [:]
        for connection in inbound.values { connection.closeNow() }
        inbound = [:]
    }

    /// Swaps the keyring (rotation). Encryption cannot be switched on or off this way.
    public func replaceKeyring(_ new: GossipKeyring) {
        loop.assertInLoopThread()
        guard keyring != nil else { return }
        keyring = new
    }

    // MARK: Serf: user events and queries

    /// Gossips a user event to the pool (we receive it too, as in Serf).
    public func fireUserEvent(name: String, payload: [UInt8], coalesce: Bool = true) throws(GossipError) {
        loop.assertInLoopThread()
        try memberlist.fireUserEvent(name: name, payload: payload, coalesce: coalesce, nowMs: now)
        performEffects()
    }

    /// Starts a query; responses arrive as `.queryResponse` events, then `.queryDone`.
    /// `started` gets the query's ID before any of its effects run: we answer our own
    /// query at once, so whoever collects the answers must know the ID by then.
    public func query(name: String, payload: [UInt8], timeoutMs: Int64? = nil, filterNodes: [String] = [],
                      requestAck: Bool = false, started: (QueryID) -> Void) throws(GossipError) {
        loop.assertInLoopThread()
        let id = try memberlist.query(name: name, payload: payload, timeoutMs: timeoutMs, filterNodes: filterNodes,
                                      requestAck: requestAck, nowMs: now)
        started(id)
        performEffects()
    }

    /// Answers a query this member received.
    public func respond(to query: QueryID, payload: [UInt8]) throws(GossipError) {
        loop.assertInLoopThread()
        try memberlist.respond(to: query, payload: payload, nowMs: now)
        performEffects()
    }

    // MARK: Driving the core

    private var now: Int64 { Int64(loop.nowMilliseconds) }

    /// After every input: carry out the effects, then re-arm the one timer at `nextTimerMs`.
    private func performEffects() {
        guard !closed else { return }
        for effect in memberlist.takeEffects() {
            switch effect {
            case let .sendPacket(to, bytes):
                sendPacket(bytes, to: to)
            case let .openStream(id, _, to, bytes):
                openStream(to: to, payload: bytes) { [weak self] reply in
                    guard let self, !self.closed else { return }
                    self.memberlist.streamResult(id: id, reply: reply, nowMs: self.now)
                    self.performEffects()
                }
            case let .event(event):
                deliver(event)
            }
        }
        rearm()
    }

    private func rearm() {
        guard !closed else { return }
        let delay = max(0, min(memberlist.nextTimerMs - now, 60_000))
        timer.start(afterMilliseconds: UInt64(delay)) { [weak self] in
            guard let self, !self.closed else { return }
            self.memberlist.tick(nowMs: self.now)
            self.performEffects()
        }
    }

    private func deliver(_ event: MembershipEvent) {
        switch event {
        case .join(let m):
            pruned.remove(m.name)
            if m.name == suppressEventsFor { return }
        case .leave(let m):
            if m.name == suppressEventsFor { return }
        case .reap(let m):
            pruned.remove(m.name)
        case .failed, .update, .conflict, .user, .query, .queryResponse, .queryAck, .queryDone:
            break
        }
        onEvent?(event)
    }

    // MARK: UDP

    private func sendPacket(_ bytes: [UInt8], to address: String) {
        guard let udp, let (host, port) = parseHostPort(address) else { return }
        udp.send(keyring.map { $0.seal(bytes) } ?? bytes, to: SocketAddress(host: host, port: port))
    }

    private func receivePacket(_ bytes: [UInt8], from sender: SocketAddress) {
        guard !closed else { return }
        var plain = bytes
        if let keyring {
            guard let opened = keyring.open(bytes) else {
                decryptFailed(from: sender.host)
                return
            }
            plain = opened
        }
        memberlist.receive(plain, from: sender.description, nowMs: now)
        performEffects()
    }

    private func decryptFailed(from sender: String) {
        decryptFailures += 1
        let nowMs = loop.nowMilliseconds
        if let last = lastDecryptLogMs[sender], nowMs - last < transport.decryptFailureLogIntervalMs { return }
        if lastDecryptLogMs.count > 1_024 { lastDecryptLogMs = [:] }  // bounded
        lastDecryptLogMs[sender] = nowMs
        logger.warning("memberlist: failed to decrypt gossip message, dropped (wrong or missing encryption key?)",
                       metadata: ["pool": "\(label)", "from": "\(sender)", "dropped_total": "\(decryptFailures)"])
    }

    // MARK: Streams

    /// Connect, write one frame, read one frame; `completion` runs exactly once (nil on any
    /// failure or after `streamTimeoutMs`).
    private func openStream(to address: String, payload: [UInt8], completion: @escaping ([UInt8]?) -> Void) {
        guard let (host, port) = parseHostPort(address), !closed else { completion(nil); return }
        nextOutboundID += 1
        let id = nextOutboundID
        let stream = OutboundStream(loop: loop, maxFrameBytes: transport.maxFrameBytes) { [weak self] reply in
            self?.outbound[id] = nil
            guard let reply else { completion(nil); return }
            if let keyring = self?.keyring {
                guard let opened = keyring.open(reply) else {
                    self?.decryptFailed(from: host)
                    completion(nil)
                    return
                }
                completion(opened)
            } else {
                completion(reply)
            }
        }
        outbound[id] = stream
        stream.start(host: host, port: port, request: keyring.map { $0.seal(payload) } ?? payload,
                     timeoutMs: transport.streamTimeoutMs)
    }
    private var nextOutboundID: UInt64 = 0

    private func accept(_ connection: TCPConnection) {
        guard !closed, inbound.count < transport.maxInboundStreams else {
            logger.debug("gossip stream refused: too many open", metadata: ["pool": "\(label)"])
            connection.closeNow()
            return
        }
        let key = ObjectIdentifier(connection)
        inbound[key] = connection
        var decoder = StreamFrameDecoder(maxFrameBytes: transport.maxFrameBytes)
        let deadline = LoopTimer(loop: loop)
        deadline.start(afterMilliseconds: transport.streamTimeoutMs) { connection.closeNow() }
        var answered = false
        connection.onClose = { [weak self] _ in
            deadline.close()
            self?.inbound[key] = nil
        }
        connection.onRead = { [weak self] bytes in
            guard let self, !answered else { return }
            let frame: [UInt8]
            do {
                guard let complete = try decoder.append(bytes) else { return }
                frame = complete
            } catch {
                self.logger.warning("gossip stream closed: \(error)", metadata: ["pool": "\(self.label)", "peer": "\(connection.remoteAddress)"])
                connection.reset()
                return
            }
            answered = true
            var plain = frame
            if let keyring = self.keyring {
                guard let opened = keyring.open(frame) else {
                    self.decryptFailed(from: parseHostPort(connection.remoteAddress)?.host ?? connection.remoteAddress)
                    connection.close()
                    return
                }
                plain = opened
            }
            let reply = self.memberlist.receiveStream(plain, from: connection.remoteAddress, nowMs: self.now)
            self.performEffects()
            if let reply {
                connection.write(StreamFrameDecoder.frame(self.keyring.map { $0.seal(reply) } ?? reply))
            }
            connection.close()
        }
        connection.startReading()
    }
}
