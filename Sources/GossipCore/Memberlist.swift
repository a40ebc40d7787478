// The SWIM + Lifeguard membership state machine. It owns the member table, the probe
// cycle, suspicion timers, the broadcast queue and push-pull; it never reads a clock,
// touches a socket or draws randomness other than from the seed in its config. Inputs:
// receive / receiveStream / streamResult / tick / join / leave / updateTags, each with the
// caller's current time in ms. Outputs: `takeEffects()`.

public final class Memberlist {
    public let config: GossipConfig
    public internal(set) var stats = GossipStats()

    // Member table: an array for deterministic iteration/random picks, an index by name.
    var memberList: [Member] = []
    var indexByName: [String: Int] = [:]
    var probeOrder: [String] = []
    var probeCursor = 0

    var rng: GossipRandom
    var awareness: Awareness
    var broadcasts: BroadcastQueue
    var suspicions: [String: Suspicion] = [:]
    var effects: [GossipEffect] = []

    struct Probe {
        var seq: UInt32
        var target: String
        var timeoutAtMs: Int64
        var endAtMs: Int64
        var indirectSent = false
        var expectedNacks = 0
        var nacks = 0
    }
    var probe: Probe?
    var nextProbeMs: Int64 = 0
    var nextGossipMs: Int64 = 0
    var nextPushPullMs: Int64 = 0

    struct Relay { var originAddress: String; var originSeq: UInt32; var deadlineMs: Int64; var wantNack: Bool }
    var relays: [UInt32: Relay] = [:]
    var seq: UInt32 = 0

    enum PendingStream { case pushPull, fallbackPing(probeSeq: UInt32) }
    var streams: [UInt64: PendingStream] = [:]
    var nextStreamID: UInt64 = 0

    var leaving = false
    var nowMs: Int64
    /// Earliest time a failed or left member is due to be reaped.
    var nextReapMs: Int64 = .max

    // Serf layer (Serf.swift): Lamport clocks, de-duplication buffers, its own broadcast queues
    // (drained after member updates, so those are never starved), and open queries.
    var eventClock = LamportClock()
    var queryClock = LamportClock()
    var eventBuffer: [LamportSlot<EventKey>?]
    var queryBuffer: [LamportSlot<UInt32>?]
    var eventBroadcasts: BroadcastQueue
    var queryBroadcasts: BroadcastQueue
    var serfBroadcastSeq: UInt64 = 0
    var outgoingQueries: [QueryID: OutgoingQuery] = [:]
    var incomingQueries: [QueryID: IncomingQuery] = [:]

    /// `knownMembers` restores a membership (e.g. from a snapshot) without events or gossip.
    public init(config: GossipConfig, nowMs: Int64 = 0, knownMembers: [Member] = []) throws(GossipConfigError) {
        try config.validate()
        self.config = config
        self.nowMs = nowMs
        rng = GossipRandom(state: config.randomSeed)
        awareness = Awareness(max: config.awarenessMaxMultiplier)
        broadcasts = BroadcastQueue(maxLength: config.maxBroadcastQueueLength)
        eventBroadcasts = BroadcastQueue(maxLength: config.maxBroadcastQueueLength)
        queryBroadcasts = BroadcastQueue(maxLength: config.maxBroadcastQueueLength)
        eventBuffer = Array(repeating: nil, count: config.eventBufferSize)
        queryBuffer = Array(repeating: nil, count: config.queryBufferSize)
        insert(Member(name: config.name, address: config.address, incarnation: 0, state: .alive, stateChangeMs: nowMs))
        for m in knownMembers where m.name != config.name && indexByName[m.name] == nil { insert(m) }
        probeOrder.shuffle(using: &rng)
        nextProbeMs = nowMs + Int64.random(in: 0..<config.probeIntervalMs, using: &rng)
        nextGossipMs = nowMs + Int64.random(in: 0..<config.gossipIntervalMs, using: &rng)
        nextPushPullMs = nowMs + currentPushPullIntervalMs()
        for m in memberList { if let at = reapAtMs(m) { nextReapMs = Swift.min(nextReapMs, at) } }
    }

    // MARK: Reading state

    public var name: String { config.name }
    public var members: [Member] { memberList }
    public func member(named name: String) -> Member? { indexByName[name].map { memberList[$0] } }
    public var aliveCount: Int { memberList.reduce(0) { $0 + ($1.state == .alive ? 1 : 0) } }
    /// Lifeguard local health score (0 = healthy).
    public var healthScore: Int { awareness.score }
    public var pendingBroadcasts: Int { broadcasts.count }
    /// Queued user events and queries (their own queues, bounded like `pendingBroadcasts`).
    public var pendingSerfBroadcasts: Int { eventBroadcasts.count + queryBroadcasts.count }
    public var incarnation: UInt32 { memberList[indexByName[config.name]!].incarnation }
    /// The suspicion deadline we hold for `name`, if we suspect it.
    public func suspicionDeadlineMs(of name: String) -> Int64? { suspicions[name]?.deadlineMs }
    /// The earliest time at which `tick` has work to do.
    public var nextTimerMs: Int64 {
        var t = Swift.min(nextGossipMs, leaving ? Int64.max : (probe.map { $0.indirectSent ? $0.endAtMs : $0.timeoutAtMs } ?? nextProbeMs))
        if config.pushPullIntervalMs > 0 && !leaving { t = Swift.min(t, nextPushPullMs) }
        for s in suspicions.values { t = Swift.min(t, s.deadlineMs) }
        for r in relays.values { t = Swift.min(t, r.deadlineMs) }
        t = Swift.min(t, nextReapMs)
        for q in outgoingQueries.values { t = Swift.min(t, q.deadlineMs) }
        return t
    }

    public func takeEffects() -> [GossipEffect] {
        defer { effects.removeAll(keepingCapacity: true) }
        return effects
    }

    // MARK: Inputs

    /// Ask each address for a full state exchange (push-pull with the join flag).
    public func join(addresses: [String], nowMs: Int64) {
        advance(nowMs)
        for a in addresses where a != config.address { openStream(.pushPull, to: a, message: pushPullMessage(join: true)) }
    }

    /// Graceful leave: gossip `dead` about ourselves from ourselves; others report `leave`.
    public func leave(nowMs: Int64) throws(GossipError) {
        advance(nowMs)
        if leaving { throw .alreadyLeft }
        leaving = true
        probe = nil
        let me = memberList[indexByName[config.name]!]
        handleDead(incarnation: me.incarnation, node: me.name, from: me.name)
    }

    /// New tags for ourselves: a higher incarnation gossiped as `alive`.
    public func updateTags(_ tags: [String: String], nowMs: Int64) throws(GossipError) {
        advance(nowMs)
        let size = tagsBytes(tags)
        if size > config.maxTagsBytes || tags.count > WireLimits.maxTagPairs { throw .tagsTooLarge(size: size, limit: config.maxTagsBytes) }
        if leaving { throw .alreadyLeft }
        let i = indexByName[config.name]!
        memberList[i].tags = tags
        memberList[i].incarnation &+= 1
        memberList[i].stateChangeMs = nowMs
        queueAlive(memberList[i])
        effects.append(.event(.update(memberList[i])))
    }

    /// A UDP datagram from `address`.
    public func receive(_ bytes: [UInt8], from address: String, nowMs: Int64) {
        advance(nowMs)
        let messages: [GossipMessage]
        do { messages = try GossipWire.decodePacket(bytes) } catch { stats.decodeErrors += 1; return }
        for m in messages { handle(m, from: address) }
    }

    /// A stream opened by a peer carrying one message; returns the reply to write back.
    public func receiveStream(_ bytes: [UInt8], from address: String, nowMs: Int64) -> [UInt8]? {
        advance(nowMs)
        guard bytes.count <= WireLimits.maxStreamBytes else { stats.decodeErrors += 1; return nil }
        let message: GossipMessage
        do { message = try GossipWire.decodeMessage(bytes) } catch { stats.decodeErrors += 1; return nil }
        switch message {
        case let .ping(seq, target, _, _):
            if !target.isEmpty && target != config.name { return nil }
            return GossipWire.encode(.ack(seq: seq))
        case let .pushPull(_, remote):
            let reply = GossipWire.encode(pushPullMessage(join: false))
            merge(remote)
            return reply
        default:
            handle(message, from: address)
            return nil
        }
    }

    /// The reply to a stream we asked for with `openStream` (nil: failed or timed out).
    public func streamResult(id: UInt64, reply: [UInt8]?, nowMs: Int64) {
        advance(nowMs)
        guard let pending = streams.removeValue(forKey: id), let reply else { return }
        guard reply.count <= WireLimits.maxStreamBytes else { stats.decodeErrors += 1; return }
        let message: GossipMessage
        do { message = try GossipWire.decodeMessage(reply) } catch { stats.decodeErrors += 1; return }
        switch (pending, message) {
        case let (.pushPull, .pushPull(_, remote)):
            merge(remote)
        case let (.fallbackPing(probeSeq), .ack(seq)) where seq == probeSeq:
            probeAcked(seq: seq)
        default:
            break
        }
    }

    /// Fire every timer due at `nowMs`: probe steps, relay nacks, suspicion timeouts, gossip, push-pull.
    public func tick(nowMs: Int64) {
        advance(nowMs)
        if var p = probe {
            if !p.indirectSent && nowMs >= p.timeoutAtMs {
                sendIndirectProbes(&p)
                probe = p
            }
            if nowMs >= p.endAtMs { probeFailed(p) }
        }
        if probe == nil && !leaving && nowMs >= nextProbeMs { startProbe() }
        expireRelays()
        expireSuspicions()
        reapMembers()
        expireQueries()
        if nowMs >= nextGossipMs {
            nextGossipMs = Swift.max(nextGossipMs + config.gossipIntervalMs, nowMs)
            gossip()
        }
        if config.pushPullIntervalMs > 0 && !leaving && nowMs >= nextPushPullMs {
            nextPushPullMs = nowMs + currentPushPullIntervalMs()
            if let peer = randomMembers(1, where: { $0.state == .alive }).first {
                openStream(.pushPull, to: peer.address, message: pushPullMessage(join: false))
            }
        }
    }

    func advance(_ now: Int64) {
        precondition(now >= nowMs, "time went backwards: \(now) < \(nowMs)")
        nowMs = now
    }

    // MARK: Message dispatch

    func handle(_ m: GossipMessage, from address: String) {
        switch m {
        case let .ping(seq, target, _, _):
            if !target.isEmpty && target != config.name { return }
            send(.ack(seq: seq), to: address)
        case let .indirectPing(seq, target, targetAddress, _, _, wantNack):
            handleIndirectPing(seq: seq, target: target, targetAddress: targetAddress, wantNack: wantNack, from: address)
        case let .ack(seq):
            handleAck(seq: seq)
        case let .nack(seq):
            if probe?.seq == seq { probe!.nacks += 1 }
        case let .suspect(inc, node, from):
            handleSuspect(incarnation: inc, node: node, from: from)
        case let .alive(inc, node, addr, tags):
            handleAlive(incarnation: inc, node: node, address: addr, tags: tags)
        case let .dead(inc, node, from):
            handleDead(incarnation: inc, node: node, from: from)
        case .pushPull:
            break  // only over streams
        case let .userEvent(ltime, name, payload, coalesce):
            handleUserEvent(ltime: ltime, name: name, payload: payload, coalesce: coalesce)
        case let .query(ltime, id, from, fromAddress, filterNodes, requestAck, timeoutMs, name, payload):
            handleQuery(ltime: ltime, id: id, from: from, fromAddress: fromAddress, filterNodes: filterNodes,
                        requestAck: requestAck, timeoutMs: timeoutMs, name: name, payload: payload)
        case let .queryResponse(ltime, id, from, ack, payload):
            handleQueryResponse(QueryID(ltime: ltime, id: id), from: from, ack: ack, payload: payload)
        }
    }

}
